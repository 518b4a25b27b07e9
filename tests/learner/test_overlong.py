"""algo.overlong (learner/overlong.py, learner/selection.py): keep = the paper's grading,
filter = a truncated sample as if not drawn, penalty = DAPO's soft overlong punishment."""
from __future__ import annotations

import random

import pytest
import torch

from actors.config import RolloutConfig
from actors.types import Rollout
from launch.config import TrainConfig
from learner.config import AlgoConfig
from learner.overlong import group_advantages, overlong_penalty
from learner.rm_data import rm_samples_of
from learner.selection import select
from learner.loss import rloo_advantages


def _rollout(n_tokens: int, finished: bool = True, qid: str = "q") -> Rollout:
    return Rollout(query_id=qid, prompt_ids=(5, 6), response_ids=tuple(range(10, 10 + n_tokens)), response_text="x",
                   finished=finished, logprobs=(-0.5,) * n_tokens, policy_version=0)


def test_dapo_penalty_by_hand():
    # L_max = 16, buffer 4: 0 up to 12 tokens, then (12 - L) / 4 down to -1 at 16
    assert [overlong_penalty(n, 16, 4) for n in (1, 12, 13, 14, 15, 16)] == [0.0, 0.0, -0.25, -0.5, -0.75, -1.0]
    assert overlong_penalty(17, 16, 4) == -1.0  # DAPO's third branch (the engines never get there)


def test_keep_is_the_papers_grading():
    groups = [[_rollout(3), _rollout(16, finished=False), _rollout(4), _rollout(5)]]
    correct = [[True, False, False, True]]
    sel = select(groups, correct, AlgoConfig(mode="bc"), random.Random(0), max_new_tokens=16)
    assert AlgoConfig().overlong == "keep" and sel.overlong_penalty_mean is None
    assert sel.rewards == [[1.0, -1.0, -1.0, 1.0]]
    torch.testing.assert_close(torch.tensor(sel.advantages), rloo_advantages(torch.tensor(sel.rewards)))
    assert "truncated" not in sel.why[0] and sel.pass_rates == [0.5]
    assert sel.metrics() == {"learner/kept_query_frac": 1.0}


def test_filter_leaves_truncated_samples_out_of_the_query():
    """K = 4, sample 2 truncated: RLOO over the three finished samples (r = 1, -1, 1):
    A0 = 1 - (-1 + 1)/2 = 1, A1 = -1 - (1 + 1)/2 = -2, A3 = 1; p = 2/3; the kept negative can
    only be sample 1."""
    groups = [[_rollout(3), _rollout(4), _rollout(16, finished=False), _rollout(5)]]
    correct = [[True, False, False, True]]
    algo = AlgoConfig(mode="oreal", overlong="filter")
    for seed in range(5):
        sel = select(groups, correct, algo, random.Random(seed), max_new_tokens=16)
        assert sel.advantages == [[1.0, -2.0, 0.0, 1.0]]
        assert sel.pass_rates == [pytest.approx(2 / 3)]
        assert sel.why[0][2] == "truncated" and sel.usable == [[True, True, False, True]]
        neg = [s for s in sel.samples if not s.positive]
        assert len(neg) == 1 and len(neg[0].response_ids) == 4 and neg[0].advantage == -2.0
    assert sel.rewards == [[1.0, -1.0, -1.0, 1.0]]  # graded as they were (the record keeps the verdict)


def test_filter_drops_a_query_whose_only_failures_were_truncated():
    groups = [[_rollout(3), _rollout(16, finished=False), _rollout(4)],
              [_rollout(16, finished=False), _rollout(4), _rollout(16, finished=False)]]
    correct = [[True, False, True], [False, True, False]]
    sel = select(groups, correct, AlgoConfig(mode="bc", overlong="filter"), random.Random(0), max_new_tokens=16)
    assert sel.samples == [] and sel.kept_query_frac == 0.0
    assert sel.why == [["all_correct", "truncated", "all_correct"], ["truncated", "all_correct", "truncated"]]
    # one finished sample: no baseline, advantage 0
    assert sel.advantages[1] == [0.0, 0.0, 0.0]


def test_filter_in_the_modes_that_train_every_sample():
    groups = [[_rollout(3), _rollout(16, finished=False), _rollout(4), _rollout(5)]]
    correct = [[True, False, False, False]]
    sel = select(groups, correct, AlgoConfig(mode="reinforce", overlong="filter"), random.Random(0), 16)
    assert sorted(len(s.response_ids) for s in sel.samples) == [3, 4, 5]  # the truncated one is not trained


def test_group_advantages_equal_the_estimator_on_the_usable_samples():
    r = torch.tensor([[1.0, -1.0, -1.0, 1.0, -1.0], [1.0, -1.0, 1.0, 1.0, -1.0]])
    usable = [[True, True, False, True, True], [True] * 5]
    out = group_advantages(r, usable, rloo_advantages)
    torch.testing.assert_close(out[0, [0, 1, 3, 4]], rloo_advantages(r[0, [0, 1, 3, 4]][None])[0])
    assert out[0, 2] == 0
    torch.testing.assert_close(out[1], rloo_advantages(r[1:])[0])
    assert group_advantages(r, None, rloo_advantages).equal(rloo_advantages(r))


def test_penalty_shapes_every_reward_before_the_advantages():
    """max_new_tokens 16, buffer 4: lengths 5, 14, 16 get 0, -0.5, -1; a correct response of
    16 tokens (it ended with the stop token) keeps its verdict at reward 0."""
    groups = [[_rollout(5), _rollout(14), _rollout(16), _rollout(16, finished=False)]]
    correct = [[True, True, True, False]]
    algo = AlgoConfig(mode="bc", overlong="penalty", overlong_buffer=4)
    sel = select(groups, correct, algo, random.Random(0), max_new_tokens=16)
    assert sel.rewards == [[1.0, 0.5, 0.0, -2.0]]
    # RLOO on the shaped rewards: A_i = r_i - (sum - r_i) / 3, sum = -0.5
    want = [r - (-0.5 - r) / 3 for r in (1.0, 0.5, 0.0, -2.0)]
    assert sel.advantages[0] == pytest.approx(want)
    assert sel.overlong_penalty_mean == pytest.approx(-2.5 / 4)
    assert sel.metrics()["rollout/overlong_penalty_mean"] == pytest.approx(-0.625)
    # every kept correct sample is a positive whatever its reward (the 16-token one has r = 0)
    assert all(s.positive == (s.reward > -1) for s in sel.samples)
    everyone = select(groups, correct, AlgoConfig(mode="shaped", overlong="penalty", overlong_buffer=4),
                      random.Random(0), max_new_tokens=16).samples
    zero = [s for s in everyone if s.reward == 0.0]
    assert len(zero) == 1 and zero[0].positive and zero[0].correct


def test_penalty_needs_the_cap():
    algo = AlgoConfig(mode="bc", overlong="penalty", overlong_buffer=4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        select([[_rollout(3), _rollout(4)]], [[True, False]], algo, random.Random(0))


def test_the_rms_samples_leave_truncated_ones_out_under_filter():
    groups = [[_rollout(3), _rollout(4), _rollout(16, finished=False), _rollout(5)]]
    correct = [[True, False, False, True]]
    sel = select(groups, correct, AlgoConfig(mode="oreal", overlong="filter"), random.Random(0), 16)
    out = rm_samples_of(groups, correct, sel.samples, sel.rewards, sel.advantages, "all", usable=sel.usable)
    assert sorted(len(s.response_ids) for s in out) == [3, 4, 5]
    assert [s.rm_weight for s in out if not s.correct] == [1.0]  # the one finished negative weighs 1


def test_overlong_keys_are_validated_by_name():
    with pytest.raises(ValueError, match="algo.overlong must be"):
        AlgoConfig(overlong="truncate")
    with pytest.raises(ValueError, match="algo.overlong=penalty needs algo.overlong_buffer"):
        AlgoConfig(overlong="penalty")
    with pytest.raises(ValueError, match="algo.overlong_buffer must be >= 1"):
        AlgoConfig(overlong="penalty", overlong_buffer=0)
    with pytest.raises(ValueError, match="algo.overlong_buffer=48 must be below rollout.max_new_tokens=48"):
        TrainConfig(rollout=RolloutConfig(max_new_tokens=48), algo=AlgoConfig(overlong="penalty", overlong_buffer=48))
    cfg = TrainConfig(rollout=RolloutConfig(max_new_tokens=48), algo=AlgoConfig(overlong="penalty", overlong_buffer=16))
    assert cfg.algo.overlong_buffer == 16
    AlgoConfig(overlong="filter")  # no buffer needed
