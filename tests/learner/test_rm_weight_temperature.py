"""algo.rm_weight_temperature in the learner (one in-process rank: gloo, ZeRO-3, no Ray): two
learners trained alike hold the same RM, and the one at T = 1/2 weighs the policy's tokens by
q = sigmoid(wbar / T) of those same scores (larger w+ and w-, in the same order)."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import in_process_learners, separable_group

pytestmark = pytest.mark.slow

FREEZE = 3  # RM-only steps; the policy's first update (step FREEZE) reads the RM they trained


def test_temperature_sharpens_the_policys_token_weights():
    from learner.batch import shard
    from learner.config import AlgoConfig

    algos = {t: AlgoConfig(mode="oreal", actor_freeze_steps=FREEZE, rm_epochs=10, rm_weight_temperature=t)
             for t in (1.0, 0.5)}
    samples, counts = separable_group()
    mbs = shard(samples, 1, 4)[0]
    with in_process_learners(algos, FREEZE + 1) as learners:
        for step in range(FREEZE):
            for w in learners.values():
                w.train_step(mbs, counts, step)
        weights = {t: w.token_weights(samples) for t, w in learners.items()}
        metrics = {t: w.train_step(mbs, counts, FREEZE) for t, w in learners.items()}
    checked = 0
    for (p1, n1), (p2, n2) in zip(weights[1.0], weights[0.5]):
        for a, b, sign in [(x, y, 1) for x, y in zip(p1, p2)] + [(x, y, -1) for x, y in zip(n1, n2)]:
            if a > 1e-6:  # w = 2q - 1 (w+) or 1 - 2q (w-) at T = 1 -> sign * wbar = logit((1 + w) / 2)
                wbar = math.log((1 + a) / (1 - a))
                assert b == pytest.approx(2 / (1 + math.exp(-wbar / 0.5)) - 1, rel=1e-4, abs=1e-6)
                checked += 1
            else:
                assert b < 1e-6
    assert checked > 10
    w1, w2 = metrics[1.0]["learner/w_pos_sum"], metrics[0.5]["learner/w_pos_sum"]  # over the same tokens
    assert w2 > w1 > 0, (w1, w2)


def test_temperature_must_be_positive():
    from learner.config import AlgoConfig

    for bad in (0.0, -0.5):
        with pytest.raises(ValueError, match="algo.rm_weight_temperature"):
            AlgoConfig(rm_weight_temperature=bad)


def test_weight_rule_carries_the_three_keys_and_is_the_loss_rule():
    """AlgoConfig.weight_rule: algo.rm_score, topk_rescale's ratios and the temperature in one
    piece; called, it gives token_weights' values under those keys."""
    from learner.config import AlgoConfig
    from reward_model.loss import WeightRule, token_weights

    assert AlgoConfig().weight_rule == WeightRule()  # the paper's
    algo = AlgoConfig(rm_score="token", topk_rescale=True, topk_ratio_neg=0.5, rm_weight_temperature=0.5)
    rule = algo.weight_rule
    assert rule == WeightRule("token", (0.25, 0.5), 0.5)
    w, mask = torch.randn(3, 9, generator=torch.Generator().manual_seed(0)), torch.ones(3, 9, dtype=torch.bool)
    for got, want in zip(rule(w, mask), token_weights(w, mask, score="token", topk_ratios=(0.25, 0.5), temperature=0.5)):
        torch.testing.assert_close(got, want)


def test_a_learner_refuses_an_rm_schedule_it_was_not_built_for():
    """set_algo may switch the token weights' temperature, not the RM's updates per step
    (algo.rm_only_epochs): the RM's LR schedule was built for them."""
    import dataclasses

    from learner.config import AlgoConfig

    algo = AlgoConfig(mode="oreal", actor_freeze_steps=2, rm_replay_steps=2)
    with in_process_learners({0: algo}, 4) as learners:
        learners[0].set_algo(dataclasses.replace(algo, rm_weight_temperature=0.25))
        with pytest.raises(ValueError, match="RM LR schedule"):
            learners[0].set_algo(dataclasses.replace(algo, rm_only_epochs=3))
