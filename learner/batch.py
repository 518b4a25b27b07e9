"""TrainSample: what the driver hands the learner, and how it becomes padded tensors.

Layout (shared with `learner.loss` and `reward_model`): a row is prompt + response, right
padded to L; every per-token tensor is [S, L-1] and column j belongs to token j+1, so the
response mask is 1 on columns prompt_len-1 .. total_len-2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class TrainSample:
    """One kept response with its outcome reward r and advantage A (docs/algorithm.md steps 2-4)."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    # r: +1 correct, -1 otherwise (released configs).
    reward: float
    # A: RLOO (or GRPO) advantage over all K samples of the query, computed before filtering.
    advantage: float
    # log pi_engine of each response token as the engine sampled it (rollout.behaviour_logprobs):
    # the learner's mismatch metric and TIS (algo.tis_cap), and pi_old of the off-policy ratio
    # (algo.max_staleness=1); None: the engine returned none.
    behaviour_logprobs: tuple[float, ...] | None = None
    # Weight of this sequence in the token RM's BCE (algo.rm_samples=all: 1 / its class's
    # count in the query); 1 for a kept pair (docs/algorithm.md step 5).
    rm_weight: float = 1.0
    # The verifier's verdict: a positive (cloned, RM label 1) or a negative sample. None: the
    # sign of the reward says (algo.overlong=penalty can push a correct sample's reward to 0).
    correct: bool | None = None

    def __post_init__(self) -> None:
        if not self.prompt_ids or not self.response_ids:
            raise ValueError("TrainSample needs a non-empty prompt and response")

    @property
    def positive(self) -> bool:
        return self.reward > 0 if self.correct is None else self.correct


@dataclass(frozen=True)
class GlobalCounts:
    """Normalisers over the WHOLE batch (all ranks), fixed by the driver before sharding."""

    # N+: response tokens of kept positive samples.
    n_pos_tokens: int
    # N-: response tokens of kept negative samples.
    n_neg_tokens: int
    # S: kept sequences.
    n_seqs: int

    @classmethod
    def of(cls, samples: Sequence[TrainSample]) -> "GlobalCounts":
        n_pos = sum(len(s.response_ids) for s in samples if s.positive)
        n_neg = sum(len(s.response_ids) for s in samples if not s.positive)
        return cls(n_pos_tokens=n_pos, n_neg_tokens=n_neg, n_seqs=len(samples))


@dataclass
class RMPlan:
    """One rank's part of the token RM's updates in a step (`algo.rm_own_data`)."""

    # Per mini-batch (one optimiser step each), this rank's micro-batches.
    minibatches: list[list[list[TrainSample]]]
    # Per mini-batch, the sum of its samples' rm_weight over all ranks (the BCE's normaliser).
    totals: list[float]
    # This rank's micro-batches of the step's own RM samples, and their global weight.
    fresh: list[list[TrainSample]]
    fresh_total: float


@dataclass
class Batch:
    input_ids: torch.Tensor  # [S, L] long
    attention_mask: torch.Tensor  # [S, L] long
    mask: torch.Tensor  # [S, L-1] float, 1 on response tokens
    rewards: torch.Tensor  # [S]
    advantages: torch.Tensor  # [S]
    # True for a placeholder micro-batch that only keeps the ZeRO-3 collectives in step.
    dummy: bool = False
    # [S, L-1] the engine's log-probs of the sampled tokens in the loss's layout (0 off the
    # response); None: the samples carry none.
    engine_logprobs: torch.Tensor | None = None
    # [S] each sequence's weight in the RM's BCE (TrainSample.rm_weight); None: all 1.
    rm_weights: torch.Tensor | None = None
    # [S] bool: positive samples (TrainSample.positive); None: rewards > 0.
    positive: torch.Tensor | None = None

    @property
    def labels(self) -> torch.Tensor:
        """[S] bool: the positives (the RM's label 1, the loss's cloned samples)."""
        return self.rewards > 0 if self.positive is None else self.positive


def collate(samples: Sequence[TrainSample], pad_id: int, device: torch.device | str = "cpu") -> Batch:
    if not samples:
        # Two pad tokens, nothing masked: every rank must run the same number of
        # forward/backward passes under ZeRO-3, even one with no data left.
        return Batch(
            input_ids=torch.full((1, 2), pad_id, dtype=torch.long, device=device),
            attention_mask=torch.ones((1, 2), dtype=torch.long, device=device),
            mask=torch.zeros((1, 1), device=device),
            rewards=torch.zeros(1, device=device),
            advantages=torch.zeros(1, device=device),
            dummy=True,
        )
    L = max(len(s.prompt_ids) + len(s.response_ids) for s in samples)
    S = len(samples)
    input_ids = torch.full((S, L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((S, L), dtype=torch.long)
    mask = torch.zeros((S, L - 1))
    with_engine = any(s.behaviour_logprobs is not None for s in samples)
    old = torch.zeros((S, L - 1)) if with_engine else None
    for i, s in enumerate(samples):
        P, T = len(s.prompt_ids), len(s.response_ids)
        input_ids[i, : P + T] = torch.tensor(s.prompt_ids + s.response_ids)
        attention_mask[i, : P + T] = 1
        mask[i, P - 1 : P + T - 1] = 1.0
        if old is not None:
            if s.behaviour_logprobs is None or len(s.behaviour_logprobs) != T:
                raise ValueError(f"sample {i}: engine log-probs for its {T} response tokens are needed (the other "
                                 f"samples have them), got {None if s.behaviour_logprobs is None else len(s.behaviour_logprobs)}")
            old[i, P - 1 : P + T - 1] = torch.tensor(s.behaviour_logprobs)
    return Batch(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        mask=mask.to(device),
        rewards=torch.tensor([s.reward for s in samples], device=device),
        advantages=torch.tensor([s.advantage for s in samples], device=device),
        engine_logprobs=None if old is None else old.to(device),
        rm_weights=torch.tensor([s.rm_weight for s in samples], device=device),
        positive=torch.tensor([s.positive for s in samples], dtype=torch.bool, device=device),
    )


def shard(samples: Sequence[TrainSample], world_size: int, micro_batch_size: int,
          max_tokens_per_micro_batch: int | None = None) -> list[list[list[TrainSample]]]:
    """Split samples over ranks, balancing tokens (longest first, to the lightest rank), then
    into micro-batches: `micro_batch_size` sequences each, or, with a token budget, packed by
    `pack`. Every rank gets the same number of micro-batches (the short ones padded with empty
    micro-batches, which `collate` turns into dummies): ZeRO-3 gathers parameters collectively
    in every forward."""
    ranks: list[list[TrainSample]] = [[] for _ in range(world_size)]
    load = [0] * world_size
    for s in sorted(samples, key=lambda s: -_n_tokens(s)):
        r = min(range(world_size), key=lambda i: (load[i], len(ranks[i])))
        ranks[r].append(s)
        load[r] += _n_tokens(s)
    if max_tokens_per_micro_batch is None:
        per_rank = [[r[i : i + micro_batch_size] for i in range(0, len(r), micro_batch_size)] for r in ranks]
    else:
        per_rank = [pack(r, max_tokens_per_micro_batch, micro_batch_size) for r in ranks]
    n_mb = max(1, max(len(mbs) for mbs in per_rank))
    return [mbs + [[] for _ in range(n_mb - len(mbs))] for mbs in per_rank]


def pack(samples: Sequence[TrainSample], max_tokens: int, max_rows: int) -> list[list[TrainSample]]:
    """Micro-batches of one rank whose PADDED size, rows x longest row (prompt + response,
    as `collate` pads them), is at most `max_tokens`, with at most `max_rows` rows.

    Padded tokens are what a right-padded forward costs (activations and the [rows, L, V]
    logits), so they are what the budget bounds. A sample longer than `max_tokens` cannot be
    split: it gets a micro-batch of its own (the only place the budget is exceeded; size the
    budget to the longest possible sample, prompt + `rollout.max_new_tokens`, for a hard bound).

    First-fit decreasing: samples sorted longest first, each placed in the first micro-batch
    it fits. Under this cost a micro-batch's capacity in rows, max_tokens // its first (and
    longest) sample, never changes once it is opened, so a full micro-batch stays full and
    first-fit fills them one after the other; this also gives the fewest micro-batches (the
    longest sample left must lead one, and the next-longest are the best company for it).

    Padding-free rows (samples concatenated, position ids restarting at 0 per sample) are a
    GPU follow-up, not built: transformers 5.19 keeps packed samples apart only with
    `attention_mask=None` AND `use_cache=False` (a cache silently turns its packed-sequence
    detection off, and samples then attend to each other), and on sdpa/eager it builds a
    T x T mask, so only flash-attention's varlen path saves memory.

    >>> samples = [TrainSample((1,), (2,) * (n - 1), 1.0, 0.0) for n in (9, 2, 5, 3, 4)]
    >>> [[len(s.prompt_ids) + len(s.response_ids) for s in mb] for mb in pack(samples, 12, 4)]
    [[9], [5, 4], [3, 2]]
    """
    out: list[list[TrainSample]] = []
    rows = 0
    for s in sorted(samples, key=lambda s: -_n_tokens(s)):
        if not out or len(out[-1]) >= rows:
            out.append([])
            rows = max(1, min(max_rows, max_tokens // _n_tokens(s)))
        out[-1].append(s)
    return out


def padded_tokens(micro_batch: Sequence[TrainSample]) -> int:
    """Rows x longest row: the size of the micro-batch once `collate` pads it."""
    return len(micro_batch) * max((_n_tokens(s) for s in micro_batch), default=0)


def _n_tokens(s: TrainSample) -> int:
    return len(s.prompt_ids) + len(s.response_ids)


# What both of a rank's trainers (the policy's in learner.worker, the RM's in
# reward_model.trainer) do with a collated micro-batch and their summed metrics.
def keep_graph(loss: torch.Tensor, per_token: torch.Tensor, b: Batch) -> torch.Tensor:
    """A placeholder micro-batch has an empty mask; keep every parameter in the graph (with
    zero gradient) so this rank's ZeRO-3 backward hooks match the others'."""
    return loss + 0.0 * per_token.sum() if b.dummy else loss


def batch_rows(b: Batch) -> float:
    """Sequences in `b` (0 for a placeholder)."""
    return 0.0 if b.dummy else float(b.input_ids.shape[0])


def add_sums(sums: dict[str, float], values: dict[str, torch.Tensor | float]) -> None:
    """Sum each value into `sums`; a `*_max` key keeps the largest (as `LearnerGroup` merges ranks)."""
    for k, v in values.items():
        x = float(v)
        sums[k] = max(sums.get(k, x), x) if k.endswith("_max") else sums.get(k, 0.0) + x
