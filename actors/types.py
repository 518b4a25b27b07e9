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
    # Version of the weights that produced this sample (0 = initial policy); with partial
    # rollouts, the version of its first segment.
    policy_version: int
    # Stopped by the step's partial budget (rollout.partial): neither finished nor truncated;
    # it continues from its tokens in a later step (actors.partial), and is never graded so.
    cut: bool = False
    # (policy version, tokens) of each stretch of the response generated in one call, in order
    # (rollout.partial: a cut sample continued on later weights); () = one segment, all
    # `policy_version`'s (`actors.partial.segments_of`).
    segments: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.logprobs and len(self.logprobs) != len(self.response_ids):
            raise ValueError(
                f"rollout {self.query_id}: {len(self.logprobs)} logprobs for {len(self.response_ids)} tokens"
            )
        if self.segments and sum(n for _, n in self.segments) != len(self.response_ids):
            raise ValueError(f"rollout {self.query_id}: segments {self.segments} do not add up to "
                             f"{len(self.response_ids)} tokens")
