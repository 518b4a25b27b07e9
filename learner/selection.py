"""From K judged samples per query to the learner's TrainSamples (docs/algorithm.md steps 2-4).

Advantages use ALL K samples of a query; filtering happens after, so a kept sample carries
the advantage of its full group (A+ = 2K(1-p)/(K-1), A- = -2Kp/(K-1) for +-1 rewards).
Truncated responses follow `algo.overlong` (`learner.overlong`): with `filter` "all" means the
query's finished samples, with `penalty` the rewards carry DAPO's length penalty.
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
from learner.overlong import group_advantages, overlong_penalty


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
    # algo.overlong=penalty: the mean length penalty over all B x K samples (else None).
    overlong_penalty_mean: float | None = None

    @property
    def usable(self) -> list[list[bool]]:
        """[B][K]: the sample counts for its query (all but the truncated ones under
        algo.overlong=filter)."""
        return [[w != "truncated" for w in row] for row in self.why]

    def metrics(self) -> dict[str, float]:
        out = {"learner/kept_query_frac": self.kept_query_frac}
        if self.overlong_penalty_mean is not None:
            out["rollout/overlong_penalty_mean"] = self.overlong_penalty_mean
        return out


# "kept": trained on; "all_correct" / "all_wrong": its query had no signal under filtering;
# "not_picked": a mixed query's other samples (filtering keeps one correct + one incorrect);
# "empty_response": no response tokens, nothing to train on; "truncated": no stop token, left
# out under algo.overlong=filter (its query's other samples are judged without it);
# "surplus": a mixed query past the first `max_queries` (algo.dynamic_sampling drew more than
# the batch needed).
WHY = ("kept", "all_correct", "all_wrong", "not_picked", "empty_response", "truncated", "surplus")


def rewards_of(correct: Sequence[Sequence[bool]], algo: AlgoConfig,
               scores: Sequence[Sequence[float | None]] | None = None) -> torch.Tensor:
    """r = reward_correct for a correct sample, reward_incorrect for anything else, or the
    sample's score where `scores` has one (a `verifier.reward_fn` float): [B, K]."""
    scores = scores or [[None] * len(row) for row in correct]
    return torch.tensor([[s if s is not None else algo.reward_correct if c else algo.reward_incorrect
                          for c, s in zip(row, srow)] for row, srow in zip(correct, scores)], dtype=torch.float32)


def select(groups: Sequence[Sequence[Rollout]], correct: Sequence[Sequence[bool]], algo: AlgoConfig,
           rng: random.Random, max_new_tokens: int | None = None,
           scores: Sequence[Sequence[float | None]] | None = None, max_queries: int | None = None) -> Selection:
    """Rewards, advantages and the kept samples of one step. `max_new_tokens`
    (rollout.max_new_tokens) is the cap of `algo.overlong=penalty`'s ramp. `scores`: per sample,
    a float reward replacing the outcome's (`rewards_of`). `max_queries`: under filtering, mixed
    queries past the first `max_queries` are left out ("surplus"), so a batch refilled by
    algo.dynamic_sampling trains on exactly that many, the first drawn. A kept sample carries
    the engine's log-probs of its tokens when the engine returned them (the learner's mismatch
    metric, TIS, and the off-policy ratio)."""
    rewards = rewards_of(correct, algo, scores)
    penalty_mean = None
    if algo.overlong == "penalty":
        if max_new_tokens is None:
            raise ValueError("algo.overlong=penalty needs rollout.max_new_tokens (select's max_new_tokens)")
        penalty = torch.tensor([[overlong_penalty(len(r.response_ids), max_new_tokens, algo.overlong_buffer)
                                 for r in g] for g in groups], dtype=rewards.dtype)
        rewards, penalty_mean = rewards + penalty, penalty.mean().item()
    # algo.overlong=filter: a truncated sample is as if not drawn (learner.overlong)
    usable = [[algo.overlong != "filter" or r.finished for r in g] for g in groups]
    advantages = group_advantages(rewards, usable, ADVANTAGE_ESTIMATORS[algo.advantage])
    if algo.neg_weight == "paper":
        # The paper's prose: a negative sample weighs (1 - p) * r instead of RLOO's A-.
        p = torch.tensor([[_pass_rate(c, u)] for c, u in zip(correct, usable)])
        negative = ~torch.tensor([list(map(bool, row)) for row in correct])
        advantages = torch.where(negative, (1 - p) * rewards, advantages)
    samples: list[TrainSample] = []
    kept = 0
    why: list[list[str]] = []
    for group, r, a, c, u in zip(groups, rewards.tolist(), advantages.tolist(), correct, usable):
        idx = [i for i in range(len(group)) if u[i]]
        if algo.filters:
            pos = [i for i in idx if c[i]]
            neg = [i for i in idx if not c[i]]
            if not pos or not neg:
                why.append([("all_wrong" if not pos else "all_correct") if ok else "truncated" for ok in u])
                continue  # all correct or all wrong: no signal under RLOO
            if max_queries is not None and kept >= max_queries:
                why.append(["surplus"] * len(group))
                continue
            # one correct (every correct with algo.keep_all_correct: wo_tokenrm) + one incorrect
            idx = (pos if algo.keep_all_correct else [rng.choice(pos)]) + [rng.choice(neg)]
        why.append(["not_picked" if ok else "truncated" for ok in u])
        for i in idx:
            why[-1][i] = "kept" if group[i].response_ids else "empty_response"
        if not any(group[i].response_ids for i in idx):
            continue
        kept += 1
        samples += [
            TrainSample(group[i].prompt_ids, group[i].response_ids, reward=r[i], advantage=a[i],
                        behaviour_logprobs=tuple(group[i].logprobs) if group[i].logprobs else None,
                        correct=bool(c[i]))
            for i in idx if group[i].response_ids
        ]
    zeroed = [[a if ok else 0.0 for a, ok in zip(row, u)] for row, u in zip(advantages.tolist(), usable)]
    return Selection(samples=samples, kept_query_frac=kept / max(1, len(groups)),
                     pass_rates=[_pass_rate(c, u) for c, u in zip(correct, usable)],
                     rewards=rewards.tolist(), advantages=zeroed, why=why, overlong_penalty_mean=penalty_mean)


def _pass_rate(correct: Sequence[bool], usable: Sequence[bool]) -> float:
    """p over the samples that count (algo.overlong=filter: the finished ones); 0 if none."""
    n = sum(usable)
    return sum(bool(c) for c, u in zip(correct, usable) if u) / n if n else 0.0
