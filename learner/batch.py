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
    """One kept response with its outcome reward r and advantage A (oreal.md steps 2-4)."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    # r: +1 correct, -1 otherwise (released configs).
    reward: float
    # A: RLOO (or GRPO) advantage over all K samples of the query, computed before filtering.
    advantage: float

    def __post_init__(self) -> None:
        if not self.prompt_ids or not self.response_ids:
            raise ValueError("TrainSample needs a non-empty prompt and response")

    @property
    def positive(self) -> bool:
        return self.reward > 0


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
class Batch:
    input_ids: torch.Tensor  # [S, L] long
    attention_mask: torch.Tensor  # [S, L] long
    mask: torch.Tensor  # [S, L-1] float, 1 on response tokens
    rewards: torch.Tensor  # [S]
    advantages: torch.Tensor  # [S]
    # True for a placeholder micro-batch that only keeps the ZeRO-3 collectives in step.
    dummy: bool = False


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
    for i, s in enumerate(samples):
        P, T = len(s.prompt_ids), len(s.response_ids)
        input_ids[i, : P + T] = torch.tensor(s.prompt_ids + s.response_ids)
        attention_mask[i, : P + T] = 1
        mask[i, P - 1 : P + T - 1] = 1.0
    return Batch(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        mask=mask.to(device),
        rewards=torch.tensor([s.reward for s in samples], device=device),
        advantages=torch.tensor([s.advantage for s in samples], device=device),
    )


def shard(samples: Sequence[TrainSample], world_size: int, micro_batch_size: int) -> list[list[list[TrainSample]]]:
    """Split samples over ranks, balancing tokens (longest first, to the lightest rank), then
    into micro-batches. Every rank gets the same number of micro-batches (some may be
    empty): ZeRO-3 gathers parameters collectively in every forward."""
    ranks: list[list[TrainSample]] = [[] for _ in range(world_size)]
    load = [0] * world_size
    for s in sorted(samples, key=lambda s: -(len(s.prompt_ids) + len(s.response_ids))):
        r = min(range(world_size), key=lambda i: (load[i], len(ranks[i])))
        ranks[r].append(s)
        load[r] += len(s.prompt_ids) + len(s.response_ids)
    n_mb = max(1, max(-(-len(r) // micro_batch_size) for r in ranks))
    return [[r[i * micro_batch_size : (i + 1) * micro_batch_size] for i in range(n_mb)] for r in ranks]
