"""Messages that leave a rollout actor."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rollout:
    """One sampled response y ~ pi_old(. | d) for one query d (docs/algorithm.md step 1)."""

    query_id: str
    # [P] prompt token ids, chat template applied.
    prompt_ids: tuple[int, ...]
    # [T] response token ids y_1..y_n, the stop token included when the response finished.
    response_ids: tuple[int, ...]
    response_text: str
    # True when the response ended with the stop token; False means truncated (reward -1).
    finished: bool
    # [T] log pi_old(y_t | d, y_<t) as the engine sampled it; () unless the engine was asked
    # for them (rollout.behaviour_logprobs; greedy decoding never is).
    logprobs: tuple[float, ...]
    # Version of the weights that produced this sample (0 = initial policy).
    policy_version: int

    def __post_init__(self) -> None:
        if self.logprobs and len(self.logprobs) != len(self.response_ids):
            raise ValueError(
                f"rollout {self.query_id}: {len(self.logprobs)} logprobs for {len(self.response_ids)} tokens"
            )
