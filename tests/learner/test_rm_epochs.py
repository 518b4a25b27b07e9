"""algo.rm_epochs: more RM passes per step, in one in-process learner rank (gloo, ZeRO-3,
no Ray). The token weights and logged RM metrics stay those of the RM before the step; the
RM's LR schedule stretches so that a run ends at the same point of the cosine."""
from __future__ import annotations


import pytest

from conftest import in_process_learners, separable_group

pytestmark = pytest.mark.slow

STEPS = 4


@pytest.fixture(scope="module")
def learners():
    from learner.config import AlgoConfig

    algos = {e: AlgoConfig(mode="oreal", actor_freeze_steps=STEPS, rm_epochs=e) for e in (1, 3)}
    with in_process_learners(algos, STEPS) as out:
        yield out


def test_more_rm_epochs_lower_the_next_steps_rm_loss_on_the_same_schedule(learners):
    from learner.batch import shard

    samples, counts = separable_group()
    mbs = shard(samples, 1, 4)[0]
    first = {e: w.train_step(mbs, counts, 0) for e, w in learners.items()}
    # Step 0 reports the RM before any update: a zero head, loss ln 2, whatever the epochs.
    assert first[1]["reward_model/loss"] == pytest.approx(first[3]["reward_model/loss"]) == pytest.approx(0.6931, abs=1e-3)
    # 3 optimiser steps of a 3x longer cosine sit where 1 step of the plain one does.
    assert first[3]["reward_model/lr"] == pytest.approx(first[1]["reward_model/lr"])
    second = {e: w.train_step(mbs, counts, 1) for e, w in learners.items()}
    assert second[3]["reward_model/loss"] < second[1]["reward_model/loss"] < first[1]["reward_model/loss"]
    # reward_model/lr is the LR of the step's first RM update: after 3 passes of a 3x longer
    # cosine it has come down as far as after 1 pass of the plain one
    assert second[3]["reward_model/lr"] == pytest.approx(second[1]["reward_model/lr"])
    assert second[1]["reward_model/lr"] < first[1]["reward_model/lr"]


def test_switching_rm_epochs_on_a_built_learner_is_refused(learners):
    from learner.config import AlgoConfig

    with pytest.raises(ValueError, match="rm_epochs"):
        learners[1].set_algo(AlgoConfig(mode="oreal", rm_epochs=2))
    learners[1].set_algo(AlgoConfig(mode="shaped", rm_epochs=2))  # no RM in use: nothing to refuse


def test_rm_epochs_below_one_is_a_config_error():
    from learner.config import AlgoConfig

    with pytest.raises(ValueError, match="algo.rm_epochs"):
        AlgoConfig(rm_epochs=0)
