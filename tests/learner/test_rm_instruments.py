"""Issue 16 in one in-process learner rank (gloo, ZeRO-3, no Ray): the policy's LR schedule
advances through the RM-only steps (first policy update at the peak LR; the old schedule as a
switch), and the RM's instruments are in every train_step's metrics under their documented
names (they reach metrics.jsonl through launch/loop.py's `metrics.update(train_step(...))`)."""
from __future__ import annotations

import dataclasses
import math
import os

import pytest

from conftest import separable_group

pytestmark = pytest.mark.slow

FREEZE, WARMUP, STEPS, LR = 2, 2, 6, 1e-3

# The names documented in docs/metrics.md (reward_model/...).
INSTRUMENTS = (
    "reward_model/pair_accuracy",
    "reward_model/score_abs_mean",
    "reward_model/w_pos_on_neg_mean",
    "reward_model/w_neg_on_pos_mean",
    *(f"reward_model/prefix_score/{c}/q{k}" for c in ("pos", "neg") for k in (1, 2, 3, 4)),
)


@pytest.fixture(scope="module")
def learners():
    import torch

    from launch.model.tiny_model import TinyModelConfig, ensure_tiny_model
    from learner.config import AlgoConfig, LearnerConfig, OptimConfig
    from learner.worker import LearnerWorker

    saved = dict(os.environ)
    path = ensure_tiny_model(TinyModelConfig())
    cfg = LearnerConfig(world_size=1, backend="gloo", micro_batch_size=4,
                        policy_optim=OptimConfig(lr=LR, min_lr=1e-4, warmup_steps=WARMUP),
                        rm_optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=0))
    out = {}
    for through in (True, False):
        algo = AlgoConfig(mode="oreal", actor_freeze_steps=FREEZE, schedule_through_freeze=through)
        w = LearnerWorker(0, cfg, algo, path, seed=0, total_steps=STEPS)
        w.setup(*w.master_address())  # the second finds the process group already up
        out[through] = w
    yield out
    if torch.distributed.is_initialized():
        import deepspeed.comm

        deepspeed.comm.destroy_process_group()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def rows(learners):
    from learner.batch import shard

    samples, counts = separable_group()
    mbs = shard(samples, 1, 4)[0]
    return {through: [w.train_step(mbs, counts, step) for step in range(FREEZE + 1)]
            for through, w in learners.items()}, counts


def test_first_policy_update_runs_at_the_peak_lr_after_the_freeze(rows):
    by_switch, _ = rows
    through = by_switch[True]
    assert [r["learner/policy_frozen"] for r in through] == [1.0, 1.0, 0.0]
    # warm-up (s+1)/(warmup+1) advances during the frozen steps: 1/3, 2/3, then the peak
    assert [r["learner/lr"] for r in through] == pytest.approx([LR / 3, 2 * LR / 3, LR])
    assert "learner/loss" in through[FREEZE] and "learner/loss" not in through[0]
    # the old behaviour (switch off): the warm-up only starts at the first policy update
    old = by_switch[False]
    assert [r["learner/lr"] for r in old] == pytest.approx([LR / 3, LR / 3, LR / 3])


def test_rm_instruments_have_their_documented_names_in_every_step(rows):
    from learner.group import _finalise

    by_switch, counts = rows
    through = by_switch[True]
    for r in through:
        assert set(INSTRUMENTS) <= set(r)
        logged = _finalise(dict(r), counts)  # LearnerGroup's reduction: what metrics.jsonl gets
        assert set(INSTRUMENTS) <= set(logged)
    first = through[0]
    # Step 0 scores with the zero head: every pair tied (counted wrong), every weight and score 0.
    assert first["reward_model/pair_accuracy"] == 0.0
    assert all(first[k] == 0.0 for k in INSTRUMENTS if k != "reward_model/pair_accuracy")
    # After two RM updates on a separable batch: 16 pairs (4 positives x 4 negatives of one
    # query), the positives ranked above, and the classes' prefix scores apart at every quarter.
    later = through[FREEZE]
    print({k: round(later[k], 4) for k in INSTRUMENTS})
    assert later["reward_model/pair_accuracy"] > 0.5
    assert later["reward_model/score_abs_mean"] > 0
    for k in (1, 2, 3, 4):
        assert later[f"reward_model/prefix_score/pos/q{k}"] > later[f"reward_model/prefix_score/neg/q{k}"]
    assert all(math.isfinite(later[k]) for k in INSTRUMENTS)


def test_rm_score_token_trains_and_reports(learners, rows):
    """The paper's w(s_<=t) reading runs end to end in the learner (own-position columns)."""
    from learner.batch import shard

    w = learners[True]
    algo = w.algo
    samples, counts = separable_group()
    try:
        w.set_algo(dataclasses.replace(algo, rm_score="token", topk_rescale=True, force_w_pos_one=True))
        out = w.train_step(shard(samples, 1, 4)[0], counts, FREEZE + 1)
    finally:
        w.set_algo(algo)
    from learner.group import _finalise

    out = _finalise(out, counts)
    assert math.isfinite(out["learner/loss"]) and math.isfinite(out["reward_model/loss"])
    assert out["learner/w_pos_mean"] == 1.0  # forced
    assert set(INSTRUMENTS) <= set(out)


def test_changing_the_schedule_switch_on_a_built_learner_is_refused(learners):
    with pytest.raises(ValueError, match="schedule_through_freeze"):
        learners[True].set_algo(dataclasses.replace(learners[True].algo, schedule_through_freeze=False))


def test_rm_head_lr_mult_gives_the_zero_head_its_own_lr(learners):
    """learner.rm_head_lr_mult: the head's parameter group at mult x the backbone's LR, both
    scaled by the schedule; and a step with shuffled token weights runs."""
    from learner.batch import shard
    from learner.config import AlgoConfig
    from learner.worker import LearnerWorker

    base = learners[True]
    cfg = dataclasses.replace(base.cfg, rm_head_lr_mult=10.0)
    w = LearnerWorker(0, cfg, AlgoConfig(mode="oreal", actor_freeze_steps=0, shuffle_token_weights=True),
                      base.model_path, seed=0, total_steps=STEPS)
    w.setup(*w.master_address())
    lrs = [g["lr"] for g in w.rm.optimizer.param_groups]
    assert lrs == pytest.approx([1e-3, 1e-2])
    samples, counts = separable_group()
    out = w.train_step(shard(samples, 1, 4)[0], counts, 0)
    assert math.isfinite(out["learner/loss"])
    after = [g["lr"] for g in w.rm.optimizer.param_groups]
    assert after[1] / after[0] == pytest.approx(10)


def test_bc_frozen_for_the_same_steps_with_freeze_without_rm(learners, rows):
    """`algo.freeze_without_rm`: bc waits the same actor_freeze_steps as oreal (the issue-16
    comparison with the same policy updates); without it bc trains from step 0."""
    from learner.batch import shard
    from learner.config import AlgoConfig

    assert not AlgoConfig(mode="bc").freezes_policy and AlgoConfig(mode="oreal").freezes_policy
    assert AlgoConfig(mode="bc", freeze_without_rm=True).freezes_policy
    w = learners[True]
    algo = w.algo
    samples, counts = separable_group()
    mbs = shard(samples, 1, 4)[0]
    try:
        w.set_algo(dataclasses.replace(algo, mode="bc", freeze_without_rm=True))
        frozen = w.train_step(mbs, counts, 0)
        w.set_algo(dataclasses.replace(algo, mode="bc"))
        moving = w.train_step(mbs, counts, 0)
    finally:
        w.set_algo(algo)
    assert frozen["learner/policy_frozen"] == 1.0 and "learner/loss" not in frozen
    assert moving["learner/policy_frozen"] == 0.0 and "learner/loss" in moving


def test_engine_logprobs_give_the_mismatch_and_tis_reaches_the_loss(learners):
    """Issue 31 in the learner: samples carrying the engine's log-probs (here the learner's own
    minus 1 on each response's first token and plus 0.1 elsewhere) give rollout/logprob_mismatch
    and its max; with algo.tis_cap=2 the first tokens' ratio e^1 is clipped to 2, the others'
    e^-0.1 kept, and in mode bc the logged terms equal the hand-weighted ones:
    pos = A+ sum tis * (-logp) / N+, neg = -eta A- sum tis / N- (on-policy value)."""
    import dataclasses as dc

    from learner.batch import shard
    from learner.group import _finalise

    w = learners[True]
    algo = w.algo
    samples, counts = separable_group()
    P = len(samples[0].prompt_ids)
    offsets = [-1.0] + [0.1] * (len(samples[0].response_ids) - 1)
    learner_lp, engine = [], []
    for s in samples:
        lp = w.probe_logprobs(s.prompt_ids + s.response_ids)[P - 1:]  # the response tokens' columns
        learner_lp.append(lp)
        engine.append(tuple(x + d for x, d in zip(lp, offsets)))
    with_engine = [dc.replace(s, behaviour_logprobs=e) for s, e in zip(samples, engine)]
    try:
        w.set_algo(dc.replace(algo, mode="bc", tis_cap=2.0, kl_type="k2"))
        out = _finalise(w.train_step(shard(with_engine, 1, 4)[0], counts, FREEZE + 1), counts)
    finally:
        w.set_algo(algo)
    n_tok = sum(len(s.response_ids) for s in samples)
    assert out["rollout/logprob_mismatch"] == pytest.approx((8 * 1.0 + (n_tok - 8) * 0.1) / n_tok, abs=1e-4)
    assert out["rollout/logprob_mismatch_max"] == pytest.approx(1.0, abs=1e-4)
    assert out["learner/tis_clipped_frac"] == pytest.approx(8 / n_tok)
    tis = [2.0] + [math.exp(-0.1)] * (len(offsets) - 1)
    A = 8 / 7
    pos = A * sum(t * -x for s, lp in zip(samples, learner_lp) if s.positive for t, x in zip(tis, lp)) / counts.n_pos_tokens
    neg = -0.5 * -A * 4 * sum(tis) / counts.n_neg_tokens
    assert out["learner/pos"] == pytest.approx(pos, rel=1e-4)
    assert out["learner/neg"] == pytest.approx(neg, rel=1e-6)
    assert out["learner/tis_weight_mean"] == pytest.approx(sum(tis) / len(tis), rel=1e-6)
