"""What the token RM trains on (learner.rm_data, algo.rm_samples / rm_replay_steps / rm_epochs /
rm_minibatches), the weighted BCE, the wo_tokenrm selection and the config's checks."""
from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace as R

import pytest
import torch

from learner.batch import TrainSample, collate
from learner.config import AlgoConfig
from learner.rm_data import RMReplay, rm_minibatches, rm_samples_of, rm_step_data
from learner.selection import select


def _groups(correct):
    """One rollout per flag, distinct responses: query q, sample i -> response (10q + i + 1,)."""
    return [[R(prompt_ids=(100 + q,), response_ids=(10 * q + i + 1,), logprobs=[0.0]) for i in range(len(row))]
            for q, row in enumerate(correct)]


CORRECT = [[True, False, False, False], [True, True, True, True], [True, True, False, True], [False] * 4]


def test_pair_is_the_kept_pairs_with_weight_one():
    kept = [TrainSample((1,), (2,), 1.0, 0.5, behaviour_logprobs=(0.1,)), TrainSample((1,), (3,), -1.0, -0.5)]
    out = rm_samples_of([], [], kept, [], [], "pair")
    assert [(s.response_ids, s.reward, s.rm_weight, s.behaviour_logprobs) for s in out] == \
        [((2,), 1.0, 1.0, None), ((3,), -1.0, 1.0, None)]


def test_all_takes_every_sample_of_the_mixed_queries_each_class_weighing_one():
    rewards = [[1.0 if c else -1.0 for c in row] for row in CORRECT]
    adv = [[0.25 * i for i in range(4)] for _ in CORRECT]
    out = rm_samples_of(_groups(CORRECT), CORRECT, [], rewards, adv, "all")
    # queries 0 and 2 are mixed (8 samples); all-correct and all-wrong queries teach the RM nothing
    assert sorted(s.response_ids[0] for s in out) == [1, 2, 3, 4, 21, 22, 23, 24]
    for q in (0, 2):
        mine = [s for s in out if s.prompt_ids == (100 + q,)]
        assert sum(s.rm_weight for s in mine if s.positive) == pytest.approx(1.0)
        assert sum(s.rm_weight for s in mine if not s.positive) == pytest.approx(1.0)
    by_id = {s.response_ids[0]: s for s in out}
    assert by_id[1].rm_weight == 1.0 and by_id[2].rm_weight == pytest.approx(1 / 3)  # 1 right, 3 wrong
    assert by_id[23].rm_weight == 1.0 and by_id[21].rm_weight == pytest.approx(1 / 3)  # 3 right, 1 wrong
    assert by_id[22].advantage == 0.25 and by_id[22].reward == 1.0


def test_all_skips_empty_responses_in_the_class_counts():
    groups = _groups([[True, False, False]])
    groups[0][2] = R(prompt_ids=(100,), response_ids=(), logprobs=[])
    out = rm_samples_of(groups, [[True, False, False]], [], [[1, -1, -1]], [[0, 0, 0]], "all")
    assert [s.rm_weight for s in out] == [1.0, 1.0]


def test_an_unknown_rm_samples_value_is_refused_everywhere():
    with pytest.raises(ValueError, match="algo.rm_samples"):
        rm_samples_of([], [], [], [], [], "every")
    with pytest.raises(ValueError, match="algo.rm_samples"):
        AlgoConfig(rm_samples="every")


def test_the_anchor_keeps_the_first_steps_for_the_whole_run_and_round_trips_through_json():
    """algo.rm_replay_anchor_steps=2 with rm_replay_steps=2: steps 0-1 stay, then the last two."""
    replay = RMReplay(2, anchor_steps=2)
    steps = [[TrainSample((1,), (t, i), 1.0 - 2 * (i % 2), 0.1 * i) for i in range(2)] for t in range(6)]
    for s in steps[:3]:
        replay.add(s)
    assert replay.samples() == steps[0] + steps[1] + steps[2]
    for s in steps[3:]:
        replay.add(s)
    assert replay.samples() == steps[0] + steps[1] + steps[4] + steps[5]
    back = RMReplay.from_json(json.loads(json.dumps(replay.to_json())))
    assert back.anchor_steps == 2 and back.samples() == replay.samples()
    assert RMReplay.from_json({"steps": 1, "buffer": [[]]}).anchor == []  # a checkpoint from before anchors
    assert AlgoConfig(mode="oreal", rm_replay_anchor_steps=5).rm_own_data
    with pytest.raises(ValueError, match="rm_replay_anchor_steps"):
        AlgoConfig(rm_replay_anchor_steps=-1)


def test_replay_keeps_the_last_steps_and_round_trips_through_json():
    replay = RMReplay(2)
    steps = [[TrainSample((1,), (t, i), 1.0 - 2 * (i % 2), 0.1 * i, rm_weight=0.5 + i) for i in range(3)]
             for t in range(3)]
    for s in steps:
        replay.add(s)
    assert replay.samples() == steps[1] + steps[2]  # the oldest step fell out, oldest first
    back = RMReplay.from_json(json.loads(json.dumps(replay.to_json())))
    assert back.steps == 2 and back.samples() == replay.samples()
    back.add(steps[0])
    assert back.samples() == steps[2] + steps[0]
    assert RMReplay.from_json(replay.to_json(), steps=1).samples() == steps[2]  # a smaller buffer keeps the newest


def test_minibatches_cover_every_sample_once_per_pass_and_repeat_with_the_seed():
    samples = list(range(11))
    out = rm_minibatches(samples, epochs=3, minibatches=4, rng=random.Random(5))
    assert len(out) == 12 and [len(mb) for mb in out[:4]] == [3, 3, 3, 2]
    for e in range(3):
        assert sorted(x for mb in out[4 * e:4 * e + 4] for x in mb) == samples
    assert out[:4] != out[4:8]  # each pass is shuffled anew
    assert out == rm_minibatches(samples, 3, 4, random.Random(5))
    assert [len(mb) for mb in rm_minibatches(samples[:2], 1, 4, random.Random(0))] == [1, 1]  # no empty steps
    assert rm_minibatches([], 2, 2, random.Random(0)) == []


def test_step_data_is_none_in_the_papers_regime_and_fills_the_replay_otherwise():
    groups, rng = _groups(CORRECT), random.Random(0)
    paper = AlgoConfig(mode="oreal")
    sel = select(groups, CORRECT, paper, rng)
    assert rm_step_data(paper, RMReplay(1), groups, CORRECT, sel, 0, 0) == (None, [])
    algo = AlgoConfig(mode="oreal", rm_samples="all", rm_replay_steps=2, rm_epochs=2, rm_minibatches=2)
    assert algo.rm_own_data and algo.rm_updates_per_step == 4
    replay = RMReplay(2)
    batches, fresh = rm_step_data(algo, replay, groups, CORRECT, sel, 0, 0)
    assert len(fresh) == 8 and len(batches) == 4 and sum(len(b) for b in batches) == 16
    batches2, fresh2 = rm_step_data(algo, replay, groups, CORRECT, sel, 0, 1)
    assert sum(len(b) for b in batches2) == 32  # two steps in the buffer, two passes
    assert batches2 != rm_step_data(algo, RMReplay.from_json(replay.to_json()), groups, CORRECT, sel, 0, 2)[0]
    # the same step of a resumed run shuffles alike
    again = RMReplay.from_json({"steps": 2, "buffer": [[], []]})
    again.add(fresh)
    assert rm_step_data(algo, again, groups, CORRECT, sel, 0, 1)[0] == batches2
    assert rm_step_data(AlgoConfig(mode="bc", rm_samples="all"), RMReplay(1), groups, CORRECT, sel, 0, 0)[0] is None


def test_rm_only_epochs_apply_in_the_rm_only_steps_and_lengthen_the_schedule():
    groups, rng = _groups(CORRECT), random.Random(0)
    algo = AlgoConfig(mode="oreal", rm_replay_steps=2, rm_epochs=2, rm_minibatches=2, actor_freeze_steps=2,
                      rm_only_epochs=5)
    sel = select(groups, CORRECT, algo, rng)
    assert [algo.rm_epochs_at(s) for s in range(4)] == [5, 5, 2, 2]
    assert algo.rm_updates_total(4) == (5 + 5 + 2 + 2) * 2 and algo.rm_updates_per_step == 4
    replay = RMReplay(2)
    assert len(rm_step_data(algo, replay, groups, CORRECT, sel, 0, 1)[0]) == 10  # an RM-only step: 5 passes x 2
    assert len(rm_step_data(algo, replay, groups, CORRECT, sel, 0, 2)[0]) == 4   # after it: 2 x 2
    # without an RM there are no RM-only steps; unset, every step has rm_epochs
    assert AlgoConfig(mode="bc", actor_freeze_steps=2, rm_only_epochs=5).rm_epochs_at(0) == 1
    assert AlgoConfig(mode="oreal", rm_replay_steps=2).rm_updates_total(3) == 3
    with pytest.raises(ValueError, match="algo.rm_only_epochs needs the RM's own data"):
        AlgoConfig(mode="oreal", rm_only_epochs=3)  # the paper's path takes algo.rm_epochs
    for key in ("rm_only_epochs", "rm_only_prompts_per_step"):
        with pytest.raises(ValueError, match=f"algo.{key} must be >= 1"):
            AlgoConfig(mode="oreal", rm_replay_steps=2, **{key: 0})


def test_weighted_rm_loss_matches_a_hand_computed_value():
    from reward_model.loss import token_rm_loss

    scores = torch.tensor([[0.0, 2.0, 0.0], [0.0, -1.0, 1.0], [0.0, 0.5, 0.0]])
    mask = torch.tensor([[0, 1, 0], [0, 1, 1], [0, 1, 0]], dtype=torch.float)
    labels = torch.tensor([1.0, 0.0, 0.0])
    weights = torch.tensor([1.0, 0.5, 0.25])
    loss, _ = token_rm_loss(scores, mask, labels, n_seqs=1.75, weights=weights)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731  BCE(x, 1) = sp(-x), BCE(x, 0) = sp(x)
    want = (1.0 * sp(-2.0) + 0.5 * sp(0.0) + 0.25 * sp(0.5)) / 1.75
    assert float(loss) == pytest.approx(want, rel=1e-6)
    # weights of 1 and the default normaliser: the paper's loss exactly
    plain, _ = token_rm_loss(scores, mask, labels)
    ones, _ = token_rm_loss(scores, mask, labels, weights=torch.ones(3))
    assert float(ones) == pytest.approx(float(plain)) == pytest.approx((sp(-2.0) + sp(0.0) + sp(0.5)) / 3)


def test_collate_carries_the_rm_weights():
    b = collate([TrainSample((1, 2), (3,), 1.0, 0.0, rm_weight=0.25), TrainSample((1,), (4, 5), -1.0, 0.0)], 0)
    assert b.rm_weights.tolist() == [0.25, 1.0]


def test_keep_all_correct_keeps_every_correct_and_one_incorrect():
    groups = _groups(CORRECT)
    sel = select(groups, CORRECT, AlgoConfig(mode="bc", keep_all_correct=True), random.Random(0))
    q2 = [s for s in sel.samples if s.prompt_ids == (102,)]
    assert sorted(s.response_ids[0] for s in q2 if s.positive) == [21, 22, 24]
    assert sum(not s.positive for s in q2) == 1
    assert sel.why[2].count("kept") == 4 and sel.why[1] == ["all_correct"] * 4
    one = select(groups, CORRECT, AlgoConfig(mode="bc"), random.Random(0))
    assert sum(s.positive for s in one.samples if s.prompt_ids == (102,)) == 1


def test_rm_only_steps_sets_the_freeze_and_bad_values_are_refused():
    assert AlgoConfig(rm_only_steps=7).actor_freeze_steps == 7
    assert AlgoConfig(actor_freeze_steps=3).actor_freeze_steps == 3  # null keeps actor_freeze_steps
    for key, bad in (("rm_only_steps", -1), ("rm_replay_steps", 0), ("rm_minibatches", 0), ("rm_eval_every", -1),
                     ("rm_eval_pairs", 0)):
        with pytest.raises(ValueError, match=f"algo.{key}"):
            AlgoConfig(**{key: bad})
