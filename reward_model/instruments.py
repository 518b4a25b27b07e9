"""What tells whether the token RM is learning, in the loop (logged as ``reward_model/...``).

From the RM's scores BEFORE a step's update, over the whole batch: ``RMStats.of`` sums one
micro-batch (per sequence: its query key, label and ``wbar_n``; per class: the token weights
of the other class and the prefix scores by position bucket), ``+`` merges micro-batches and
ranks, ``RMStats.metrics`` divides. A quantity with nothing to average (no pair, no token in a
quarter) is left out, so metrics.jsonl stays plain JSON. Torch only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from reward_model.loss import pair_accuracy, prefix_score_buckets, sequence_score, WeightRule

# Position buckets of reward_model/prefix_score/<class>/q<k>: quarters of each response.
N_BUCKETS = 4
CLASSES = ("neg", "pos")


def metric_names(n_buckets: int = N_BUCKETS) -> list[str]:
    """Every name ``RMStats.metrics`` can return (as documented in docs/metrics.md)."""
    return ["reward_model/pair_accuracy", "reward_model/score_abs_mean", "reward_model/w_pos_on_neg_mean",
            "reward_model/w_neg_on_pos_mean"] + [f"reward_model/prefix_score/{c}/q{k + 1}"
                                                  for c in ("pos", "neg") for k in range(n_buckets)]


@dataclass
class RMStats:
    # (query key, label 1/0, wbar_n) per sequence
    rows: list[tuple[int, float, float]] = field(default_factory=list)
    # [w+ summed over negative tokens, w- summed over positive tokens]
    w_sums: Tensor = field(default_factory=lambda: torch.zeros(2, dtype=torch.float64))
    # [sum | count, neg | pos, bucket] of the prefix score wbar_t
    buckets: Tensor = field(default_factory=lambda: torch.zeros(2, 2, N_BUCKETS, dtype=torch.float64))

    @classmethod
    def of(cls, rm_scores: Tensor, mask: Tensor, labels: Tensor, keys: Sequence[int],
           rule: WeightRule = WeightRule()) -> "RMStats":
        """One micro-batch: ``rm_scores`` ``[S, T]`` in the loss layout (the columns of
        ``algo.rm_score``), ``labels`` ``[S]`` (positive: > 0), ``keys`` one int per sequence,
        equal for the samples of one query (e.g. ``hash(prompt_ids)``); ``rule`` makes the
        token weights (the loss's)."""
        m, is_pos = mask.bool(), labels > 0
        seq = sequence_score(rm_scores.detach(), m).tolist()
        rows = [(int(k), float(p), x) for k, p, x in zip(keys, is_pos.tolist(), seq)]
        w_pos, w_neg = rule(rm_scores, m)
        w_sums = torch.stack([w_pos[~is_pos].sum(), w_neg[is_pos].sum()]).double().cpu()
        sums, counts = prefix_score_buckets(rm_scores, m, N_BUCKETS)
        buckets = torch.zeros(2, 2, N_BUCKETS, dtype=torch.float64)
        for c, sel in enumerate((~is_pos, is_pos)):
            buckets[0, c] = sums[sel].sum(0).double().cpu()
            buckets[1, c] = counts[sel].sum(0).double().cpu()
        return cls(rows, w_sums, buckets)

    def __add__(self, other: "RMStats") -> "RMStats":
        return RMStats(self.rows + other.rows, self.w_sums + other.w_sums, self.buckets + other.buckets)

    def metrics(self, n_pos_tokens: int, n_neg_tokens: int) -> dict[str, float]:
        """The logged values; ``n_pos_tokens``/``n_neg_tokens`` are the batch's N+ / N-."""
        key = torch.tensor([r[0] for r in self.rows], dtype=torch.long)
        label, seq = (torch.tensor([r[i] for r in self.rows], dtype=torch.float64) for i in (1, 2))
        nan = float("nan")
        out = {
            "reward_model/pair_accuracy": float(pair_accuracy(seq, label, key)),
            "reward_model/score_abs_mean": float(seq.abs().mean()) if self.rows else nan,
            "reward_model/w_pos_on_neg_mean": float(self.w_sums[0]) / n_neg_tokens if n_neg_tokens else nan,
            "reward_model/w_neg_on_pos_mean": float(self.w_sums[1]) / n_pos_tokens if n_pos_tokens else nan,
        }
        for c, cls in enumerate(CLASSES):
            for k in range(N_BUCKETS):
                n = float(self.buckets[1, c, k])
                out[f"reward_model/prefix_score/{cls}/q{k + 1}"] = float(self.buckets[0, c, k]) / n if n else nan
        return {k: v for k, v in out.items() if not math.isnan(v)}


def first_error_hit(scores: Tensor, k: int) -> tuple[bool, float]:
    """Whether the RM's biggest score drop lands at a response's first wrong token (the arith
    task's ground truth, `launch.data.first_error`), and how often a random guess would.

    ``scores`` is 1-D of length n + 1 for a response of n tokens: ``scores[0]`` is the RM's raw
    score at the last prompt position, ``scores[i]`` (i = 1..n) the score at response token
    i - 1's own position (which has seen response tokens 0..i-1). The first wrong token is
    response index ``k``, so the first score that has seen it is ``scores[k + 1]``.
    Drops ``d_i = scores[i - 1] - scores[i]`` for i = 1..n; ``i* = argmax d_i`` (the first on
    ties). hit = ``|i* - (k + 1)| <= 1``; chance = #{i in 1..n : |i - (k + 1)| <= 1} / n, the hit
    rate of a uniformly random i*. ValueError for n < 1 or k outside [0, n - 1].
    """
    if scores.dim() != 1 or scores.numel() < 2:
        raise ValueError(f"first_error_hit: need 1-D scores of length n + 1 >= 2, got shape {tuple(scores.shape)}")
    n = scores.numel() - 1
    if not 0 <= k <= n - 1:
        raise ValueError(f"first_error_hit: k={k} is outside [0, {n - 1}] for a response of {n} tokens")
    drops = scores[:-1].detach().double() - scores[1:].detach().double()
    i_star = int(torch.argmax(drops)) + 1  # torch.argmax returns the first maximal index
    chance = (min(n, k + 2) - max(1, k) + 1) / n
    return abs(i_star - (k + 1)) <= 1, chance


def first_error_rates(results: Sequence[tuple[bool, float]]) -> dict[str, float]:
    """Mean hit and chance of `first_error_hit` over responses with a known first error ({} if none)."""
    if not results:
        return {}
    n = len(results)
    return {"reward_model/first_error_hit": sum(float(h) for h, _ in results) / n,
            "reward_model/first_error_chance": sum(c for _, c in results) / n,
            "reward_model/first_error_n": float(n)}
