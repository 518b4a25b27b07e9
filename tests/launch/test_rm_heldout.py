"""The token RM's held-out instruments (launch.evaluation.rm_heldout): the pairs, their file, the metrics;
and the RM replay buffer in the driver's checkpointed state."""
from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest

from launch.evaluation.rm_heldout import PAIRS_FILE, HeldoutPair, RMHeldout, heldout_metrics, load_or_sample, pairs_of
from learner.batch import TrainSample


def _pair(pos, neg, k=None):
    return HeldoutPair("p", TrainSample((9,), tuple(pos), 1.0, 0.0), TrainSample((9,), tuple(neg), -1.0, 0.0), k)


def test_pairs_are_disjoint_and_as_many_as_the_smaller_class():
    problem = SimpleNamespace(id="q1")
    responses = [(1,), (2,), (3,), (4,), (5,), ()]
    correct = [True, False, True, False, False, True]  # the empty correct one is not usable
    pairs = pairs_of(problem, [7, 8], responses, correct, random.Random(0), first_error=lambda ids: ids[0] - 1)
    assert len(pairs) == 2
    assert {p.pos.response_ids for p in pairs} == {(1,), (3,)}
    assert len({p.neg.response_ids for p in pairs}) == 2 and all(p.neg.response_ids in [(2,), (4,), (5,)] for p in pairs)
    assert all(p.first_error == p.neg.response_ids[0] - 1 and p.pos.prompt_ids == (7, 8) for p in pairs)
    assert pairs_of(problem, [7], [(1,), (2,)], [True, True], random.Random(0)) == []


def test_metrics_by_hand():
    # position scores: n + 1 values for n response tokens; prefix_mean reads the first n
    pairs = [_pair([1, 2], [3, 4], k=1), _pair([1], [2]), _pair([1], [2])]
    scores = [[1.0, 3.0, 99.0], [0.0, 0.0, -4.0],   # pos mean 2 > neg mean 0: right; neg drop at i=2 (k + 1): hit
              [0.0, 0.0], [0.0, 5.0],               # tie 0 = 0: half
              [-1.0, 0.0], [1.0, 0.0]]              # wrong
    m = heldout_metrics(pairs, scores)
    assert m["reward_model/heldout_pair_accuracy"] == pytest.approx(0.5)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    want = (sp(-2.0) + sp(0.0) + sp(0.0) + sp(0.0) + sp(1.0) + sp(1.0)) / 6  # labels 1, 0, 1, 0, 1, 0
    assert m["reward_model/heldout_bce"] == pytest.approx(want)
    assert m["reward_model/first_error_hit"] == 1.0 and m["reward_model/first_error_chance"] == pytest.approx(1.0)
    assert m["reward_model/heldout_pairs"] == 3.0
    # "token" reads the last n: pair 1 is then pos 51 vs neg -2
    tok = heldout_metrics(pairs[:1], scores[:2], rm_score="token")
    assert tok["reward_model/heldout_pair_accuracy"] == 1.0
    # no known first error: the first-error metrics are left out
    assert "reward_model/first_error_hit" not in heldout_metrics(pairs[1:], scores[2:])
    assert heldout_metrics([], []) == {}


def test_pairs_are_sampled_once_and_read_back(tmp_path):
    calls = []

    def sample():
        calls.append(1)
        return [_pair([1, 2], [3], k=0), _pair([4], [5, 6])]

    first = load_or_sample(tmp_path, sample)
    again = load_or_sample(tmp_path, sample)  # a resumed run: the file, not a new sample
    assert calls == [1] and again == first and (tmp_path / PAIRS_FILE).is_file()
    assert again[0].first_error == 0 and again[1].first_error is None


def test_scored_at_step_zero_every_n_and_at_the_last():
    h = RMHeldout([_pair([1], [2])], every=5, rm_score="prefix_mean")
    assert [s for s in range(0, 13) if h.due(s, last=12)] == [0, 5, 10, 12]
    assert h.samples[0].positive and not h.samples[1].positive


def test_the_driver_state_carries_the_rm_replay_through_a_checkpoint():
    from launch.state.checkpoint import DriverState

    state = DriverState.start(3, rm_replay_steps=2)
    state.rm_replay.add([TrainSample((1,), (2, 3), 1.0, 0.5, rm_weight=0.25)])
    back = DriverState.from_json(state.to_json())
    assert back.rm_replay.steps == 2 and back.rm_replay.samples() == state.rm_replay.samples()
    old = state.to_json()
    del old["rm_replay"]  # a checkpoint written before the replay existed
    assert DriverState.from_json(old).rm_replay.samples() == []
