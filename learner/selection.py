"""From K judged samples per query to the learner's TrainSamples (oreal.md steps 2-4).

Advantages use ALL K samples of a query; filtering happens after, so a kept sample carries
the advantage of its full group (A+ = 2K(1-p)/(K-1), A- = -2Kp/(K-1) for +-1 rewards).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
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


def rewards_of(correct: Sequence[Sequence[bool]], algo: AlgoConfig) -> torch.Tensor:
    """r = reward_correct for a correct sample, reward_incorrect for anything else: [B, K]."""
    return torch.tensor([[algo.reward_correct if c else algo.reward_incorrect for c in row] for row in correct])


def select(groups: Sequence[Sequence[Rollout]], correct: Sequence[Sequence[bool]], algo: AlgoConfig,
           rng: random.Random) -> Selection:
    rewards = rewards_of(correct, algo)
    advantages = ADVANTAGE_ESTIMATORS[algo.advantage](rewards)
    if algo.neg_weight == "paper":
        # The paper's prose: a negative sample weighs (1 - p) * r instead of RLOO's A-.
        p = torch.tensor([[sum(row) / len(row)] for row in correct])
        negative = ~torch.tensor([list(map(bool, row)) for row in correct])
        advantages = torch.where(negative, (1 - p) * rewards, advantages)
    samples: list[TrainSample] = []
    kept = 0
    for group, r, a, c in zip(groups, rewards.tolist(), advantages.tolist(), correct):
        idx = range(len(group))
        if algo.filters:
            pos = [i for i in idx if c[i]]
            neg = [i for i in idx if not c[i]]
            if not pos or not neg:
                continue  # all correct or all wrong: no signal under RLOO
            idx = [rng.choice(pos), rng.choice(neg)]
        if not any(group[i].response_ids for i in idx):
            continue
        kept += 1
        samples += [
            TrainSample(group[i].prompt_ids, group[i].response_ids, reward=r[i], advantage=a[i])
            for i in idx if group[i].response_ids
        ]
    pass_rates = [sum(c) / len(c) for c in correct]
    return Selection(samples=samples, kept_query_frac=kept / max(1, len(groups)), pass_rates=pass_rates)
