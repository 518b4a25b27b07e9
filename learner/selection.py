"""From K judged samples per query to the learner's TrainSamples (docs/algorithm.md steps 2-4).

Advantages use ALL K samples of a query; filtering happens after, so a kept sample carries
the advantage of its full group (A+ = 2K(1-p)/(K-1), A- = -2Kp/(K-1) for +-1 rewards).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

import torch

from actors.types import Rollout
from learner.batch import TrainSample
from learner.config import AlgoConfig
from learner.loss import ADVANTAGE_ESTIMATORS


@dataclass(frozen=True)
class Selection:
    samples: list[TrainSample]
    # Fraction of queries that contributed samples (mixed queries when filtering).
    kept_query_frac: float
    # p: pass rate of each query among its K samples, [B].
    pass_rates: list[float]
    # r and A of every sample (all K, kept or not), [B][K].
    rewards: list[list[float]] = field(default_factory=list)
    advantages: list[list[float]] = field(default_factory=list)
    # Why each sample was kept or dropped, [B][K]: one of WHY (the audit record's "why").
    why: list[list[str]] = field(default_factory=list)


# "kept": trained on; "all_correct" / "all_wrong": its query had no signal under filtering;
# "not_picked": a mixed query's other samples (filtering keeps one correct + one incorrect);
# "empty_response": no response tokens, nothing to train on; "surplus": a mixed query past
# the first `max_queries` (algo.dynamic_sampling drew more than the batch needed).
WHY = ("kept", "all_correct", "all_wrong", "not_picked", "empty_response", "surplus")


def rewards_of(correct: Sequence[Sequence[bool]], algo: AlgoConfig,
               scores: Sequence[Sequence[float | None]] | None = None) -> torch.Tensor:
    """r = reward_correct for a correct sample, reward_incorrect for anything else, or the
    sample's score where `scores` has one (a `verifier.reward_fn` float): [B, K]."""
    scores = scores or [[None] * len(row) for row in correct]
    return torch.tensor([[s if s is not None else algo.reward_correct if c else algo.reward_incorrect
                          for c, s in zip(row, srow)] for row, srow in zip(correct, scores)], dtype=torch.float32)


def select(groups: Sequence[Sequence[Rollout]], correct: Sequence[Sequence[bool]], algo: AlgoConfig,
           rng: random.Random, scores: Sequence[Sequence[float | None]] | None = None,
           max_queries: int | None = None) -> Selection:
    """`scores`: per sample, a float reward replacing the outcome's (`rewards_of`). `max_queries`:
    under filtering, mixed queries past the first `max_queries` are left out ("surplus"), so a
    batch refilled by algo.dynamic_sampling trains on exactly that many, the first drawn."""
    rewards = rewards_of(correct, algo, scores)
    advantages = ADVANTAGE_ESTIMATORS[algo.advantage](rewards)
    if algo.neg_weight == "paper":
        # The paper's prose: a negative sample weighs (1 - p) * r instead of RLOO's A-.
        p = torch.tensor([[sum(row) / len(row)] for row in correct])
        negative = ~torch.tensor([list(map(bool, row)) for row in correct])
        advantages = torch.where(negative, (1 - p) * rewards, advantages)
    samples: list[TrainSample] = []
    kept = 0
    why: list[list[str]] = []
    for group, r, a, c in zip(groups, rewards.tolist(), advantages.tolist(), correct):
        idx = range(len(group))
        if algo.filters:
            pos = [i for i in idx if c[i]]
            neg = [i for i in idx if not c[i]]
            if not pos or not neg:
                why.append(["all_wrong" if not pos else "all_correct"] * len(group))
                continue  # all correct or all wrong: no signal under RLOO
            if max_queries is not None and kept >= max_queries:
                why.append(["surplus"] * len(group))
                continue
            # one correct (every correct with algo.keep_all_correct: wo_tokenrm) + one incorrect
            idx = (pos if algo.keep_all_correct else [rng.choice(pos)]) + [rng.choice(neg)]
        why.append(["not_picked"] * len(group))
        for i in idx:
            why[-1][i] = "kept" if group[i].response_ids else "empty_response"
        if not any(group[i].response_ids for i in idx):
            continue
        kept += 1
        samples += [
            TrainSample(group[i].prompt_ids, group[i].response_ids, reward=r[i], advantage=a[i],
                        behaviour_logprobs=tuple(group[i].logprobs) if algo.max_staleness else None)
            for i in idx if group[i].response_ids
        ]
    pass_rates = [sum(c) / len(c) for c in correct]
    return Selection(samples=samples, kept_query_frac=kept / max(1, len(groups)), pass_rates=pass_rates,
                     rewards=rewards.tolist(), advantages=advantages.tolist(), why=why)
