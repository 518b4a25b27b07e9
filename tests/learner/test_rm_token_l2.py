"""algo.rm_token_l2 in the learner's RM update (one in-process rank: gloo, ZeRO-3, no Ray): on
the same data, the penalised RM's token scores stay smaller than the plain RM's, while its
mean scores still separate the classes."""
from __future__ import annotations

import pytest

from conftest import in_process_learners, separable_group

pytestmark = pytest.mark.slow

STEPS = 6


def test_token_l2_keeps_the_rms_token_scores_small():
    import statistics

    from learner.batch import shard
    from learner.config import AlgoConfig

    algos = {l2: AlgoConfig(mode="oreal", actor_freeze_steps=STEPS, rm_epochs=20, rm_token_l2=l2) for l2 in (0.0, 1.0)}
    samples, counts = separable_group()
    mbs = shard(samples, 1, 4)[0]
    with in_process_learners(algos, STEPS) as learners:
        for step in range(STEPS):
            for w in learners.values():
                w.train_step(mbs, counts, step)
        scores = {l2: w.rm_position_scores(samples) for l2, w in learners.items()}
    square = {l2: statistics.mean(x * x for s in rows for x in s[:-1]) for l2, rows in scores.items()}
    mean = {l2: [statistics.mean(s[:-1]) for s in rows] for l2, rows in scores.items()}
    assert square[1.0] < 0.1 * square[0.0], square
    for l2 in algos:  # both still rank every correct response (the first 4) above every wrong one
        assert min(mean[l2][:4]) > max(mean[l2][4:]), (l2, mean[l2])


def test_negative_token_l2_is_a_config_error():
    from learner.config import AlgoConfig

    with pytest.raises(ValueError, match="algo.rm_token_l2"):
        AlgoConfig(rm_token_l2=-0.1)
