"""The token RM on data of its own (algo.rm_own_data: all samples, a replay buffer, mini-batches):
the driver's plan split over ranks, and its updates in one in-process learner rank (gloo,
ZeRO-3, no Ray): one optimiser step per mini-batch, the weights still from the RM before the
step, `reward_model/fit_bce` after it, and the RM's raw position scores for the held-out set."""
from __future__ import annotations

import dataclasses
import math
import random
from types import SimpleNamespace

import pytest

from conftest import in_process_learners, separable_group

STEPS = 3


def test_the_plan_gives_every_rank_equal_micro_batches_and_the_global_weights():
    from learner.batch import TrainSample
    from learner.config import LearnerConfig
    from learner.group import LearnerGroup

    cfg = LearnerConfig(world_size=2, micro_batch_size=2)
    rng = random.Random(0)
    samples = [TrainSample((1,), tuple(range(rng.randint(1, 9))), 1.0 - 2 * (i % 2), 0.0, rm_weight=0.5 + i % 3)
               for i in range(11)]
    batches = [samples[:7], samples[7:]]
    plans = LearnerGroup._rm_plans(SimpleNamespace(cfg=cfg), batches, samples[:3])
    assert len(plans) == 2
    for k, mb in enumerate(batches):
        assert plans[0].totals[k] == plans[1].totals[k] == pytest.approx(sum(s.rm_weight for s in mb))
        assert len(plans[0].minibatches[k]) == len(plans[1].minibatches[k])  # ZeRO-3: equal forwards
        got = [s for p in plans for m in p.minibatches[k] for s in m]
        assert sorted(map(id, got)) == sorted(map(id, mb))  # each sample on exactly one rank
    assert plans[0].fresh_total == pytest.approx(sum(s.rm_weight for s in samples[:3]))
    assert len(plans[0].fresh) == len(plans[1].fresh)


@pytest.fixture(scope="module")
def learner():
    from learner.config import AlgoConfig

    algo = AlgoConfig(mode="oreal", actor_freeze_steps=STEPS, rm_epochs=2, rm_minibatches=2, rm_replay_steps=2,
                      rm_eval_every=1)
    with in_process_learners({0: algo}, STEPS) as out:
        yield out[0]


@pytest.mark.slow
def test_one_rm_step_per_minibatch_weights_from_before_and_fit_bce_after(learner):
    from learner.batch import GlobalCounts, shard
    from learner.group import LearnerGroup
    from learner.rm_data import rm_minibatches

    samples, counts = separable_group()
    mbs = shard(samples, 1, 4)[0]

    def plan(step):
        batches = rm_minibatches(samples, 2, 2, random.Random(step))
        return LearnerGroup._rm_plans(SimpleNamespace(cfg=learner.cfg), batches, samples)[0]

    first = learner.train_step(mbs, counts, 0, plan(0))
    assert first["reward_model/updates"] == 4  # 2 passes x 2 mini-batches
    # the instruments and weights are the RM's before the step: a zero head ties every pair
    assert first["reward_model/pair_accuracy"] == 0.0 and first["reward_model/score_abs_mean"] == 0.0
    # the loss is the mean over the 4 updates: the first at ln 2, the later ones below
    assert first["reward_model/loss"] < math.log(2)
    assert first["reward_model/fit_bce"] < first["reward_model/loss"]  # after all 4 updates
    second = learner.train_step(mbs, counts, 1, plan(1))
    assert second["reward_model/pair_accuracy"] == 1.0  # separable: learned in one step's 4 updates
    assert second["reward_model/fit_bce"] < first["reward_model/fit_bce"]
    assert GlobalCounts.of(samples) == counts


@pytest.mark.slow
def test_position_scores_line_up_with_the_loss_layout(learner):
    import torch

    from learner.batch import collate
    from reward_model.loss import score_columns

    samples, _ = separable_group()
    samples = samples[:3] + [dataclasses.replace(samples[4], response_ids=samples[4].response_ids[:5])]
    rows = learner.rm_position_scores(samples)
    b = collate(samples, learner.pad_id)
    with torch.no_grad():
        full = learner.rm(b.input_ids, b.attention_mask)
    for i, s in enumerate(samples):
        assert len(rows[i]) == len(s.response_ids) + 1
        pm = score_columns(full, "prefix_mean")[i][b.mask[i].bool()]
        tok = score_columns(full, "token")[i][b.mask[i].bool()]
        assert torch.allclose(torch.tensor(rows[i][:-1]), pm, atol=1e-5)
        assert torch.allclose(torch.tensor(rows[i][1:]), tok, atol=1e-5)
    assert learner.rm_position_scores([]) == []  # a placeholder forward, nothing returned
