"""`rollout.partial` through the driver step (launch.state.carried, launch.streaming, launch.loop.rl_step)
with a stand-in rollout of known response lengths, no Ray: which samples are cut and carried,
that each sample is graded and trained exactly once, with the behaviour log-probs of the
versions that sampled its segments, that a query carried too long is dropped and counted, and
that a run resumed in the middle of a carried sample writes the records the uninterrupted run did."""
from __future__ import annotations

import dataclasses
import json

import pytest

from actors.config import RolloutConfig
from actors.partial import extend, must_end, segments_of
from actors.types import Rollout
from conftest import RecordingLearner
from launch import records
from launch.config import TrainConfig
from launch.data.problem import Problem
from launch.loop import rl_step
from launch.state.carried import Carried, CarriedQuery, StepPlan
from launch.state.checkpoint import DriverState
from launch.streaming import Prefetcher
from learner.config import AlgoConfig
from verifier.verdict import Verdict

pytestmark = pytest.mark.usefixtures("versioned_sync")  # tests/conftest.py: the engines take each new version

K = 4
# Response lengths in tokens per query and sample; every sample answers right but the last,
# so each query is mixed and its last sample is the kept negative (mode bc keeps one of each).
LENGTHS = {"q0": [2, 2, 2, 2], "q1": [2, 2, 2, 10]}
SHORT = [2, 2, 2, 2]
PROBLEMS = {q: Problem(q, f"Question {q}?", "7") for q in ["q0", "q1"] + [f"f{n}" for n in range(20)]}
PROMPT = {q: f"<{q}>" for q in PROBLEMS}


class _Rollout:
    """Every sample of a call decodes one token per tick; the call is cut once `must_end` of its
    samples have ended. Sample j of a query is `LENGTHS[q][j]` tokens long (its slot travels in
    its prompt ids); each token's id is its position and its log-prob -(1 + the version that
    sampled it); the text is the answer, written by the last token."""

    def __init__(self):
        self.version, self.calls = 0, []

    def stream(self, ids, prompts, seed_key=None, prefixes=None, partial_budget=None, **options):
        self.calls.append((list(ids), [len(p) if p else 0 for p in (prefixes or [None] * len(ids))]))
        work = []  # (query position, slot, prefix or None, tokens left)
        for i, q in enumerate(ids):
            for j, pre in (enumerate(prefixes[i]) if prefixes and prefixes[i] else enumerate([None] * K)):
                slot = pre.prompt_ids[1] if pre else j
                total = LENGTHS.get(q, SHORT)[slot]
                work.append((i, slot, pre, total - (len(pre.response_ids) if pre else 0)))
        need = must_end(len(work), partial_budget)
        tick = sorted(left for *_, left in work)[need - 1] if need else 0
        for i, q in enumerate(ids):
            group = []
            for _, slot, pre, left in (w for w in work if w[0] == i):
                n = min(left, tick)
                done = len(pre.response_ids) if pre else 0
                ended = n == left
                text = ("\\boxed{7}" if slot < K - 1 else "\\boxed{0}") if ended else ""
                group.append(extend(pre, query_id=q, prompt_ids=(1, slot), new_ids=range(done, done + n),
                                    new_text=text, new_logprobs=[-(1.0 + self.version)] * n, finished=ended,
                                    cut=not ended, version=self.version))
            yield i, group


class _Verifier:
    def grade(self, texts, golds, finished, questions=None):
        assert all(finished)  # a cut sample is never graded
        return [Verdict(t == "\\boxed{" + g + "}", "correct" if t == "\\boxed{" + g + "}" else "incorrect")
                for t, g in zip(texts, golds)]


class _Roles:
    def __init__(self, version=0):
        self.rollout, self.verifier, self.learner = _Rollout(), _Verifier(), RecordingLearner()
        self.rollout.version = version
        self.ahead = Prefetcher(self)

    def take_faults(self):
        return {}


def _cfg(budget=0.75, max_age=4, staleness=0):
    return dataclasses.replace(
        TrainConfig(), prompts_per_step=2, seed=3,
        rollout=RolloutConfig(n_samples=K, partial=True, partial_budget=budget, partial_max_age=max_age),
        algo=AlgoConfig(mode="bc", max_staleness=staleness))


def _batches(steps):
    """The queries of each step: q0 and q1 first, then fresh short ones."""
    return [[PROBLEMS["q0"], PROBLEMS["q1"]]] + [[PROBLEMS[f"f{2 * s}"], PROBLEMS[f"f{2 * s + 1}"]]
                                                  for s in range(steps - 1)]


def _run(cfg, roles, state, batches, run_dir):
    out = []
    for step in range(state.step, len(batches)):
        nxt = batches[step + 1] if step + 1 < len(batches) else None
        metrics, groups, _ = rl_step(cfg, roles, batches[step], PROMPT, [1], step, state.rng, run_dir=run_dir,
                                     next_queries=nxt, carried=state.carried)
        state.step_done(synced=True)
        out.append((metrics, [g[0].query_id for g in groups]))
    roles.ahead.wait()
    return out


# ------------------------------------------------------------------ the pieces

def test_extend_appends_a_segment_with_its_versions_log_probs():
    first = extend(None, query_id="q", prompt_ids=(1, 2), new_ids=[5, 6], new_text="ab", new_logprobs=[-1, -1],
                   finished=False, cut=True, version=3)
    assert first.cut and segments_of(first) == ((3, 2),) and first.segments == () and first.policy_version == 3
    done = extend(first, query_id="q", prompt_ids=(), new_ids=[7], new_text="c", new_logprobs=[-2],
                  finished=True, cut=False, version=5)
    assert done.response_ids == (5, 6, 7) and done.logprobs == (-1, -1, -2) and done.response_text == "abc"
    assert done.segments == ((3, 2), (5, 1)) and done.policy_version == 3 and done.prompt_ids == (1, 2)
    assert not done.cut and done.finished
    # a sample cut before its first token starts its segments at the version that gives it one
    empty = extend(None, query_id="q", prompt_ids=(1,), new_ids=[], new_text="", new_logprobs=[],
                   finished=False, cut=True, version=1)
    assert segments_of(extend(empty, query_id="q", prompt_ids=(), new_ids=[4], new_text="", new_logprobs=[-1],
                              finished=False, cut=True, version=2)) == ((2, 1),)
    with pytest.raises(ValueError, match="segments"):
        Rollout("q", (1,), (2, 3), "", True, (), 0, segments=((0, 1), (1, 5)))


def test_must_end_rounds_up_and_never_exceeds_the_call():
    assert [must_end(8, b) for b in (0.5, 0.75, 0.9, 1.0)] == [4, 6, 8, 8]
    assert must_end(9, 0.75) == 7 and must_end(5, None) == 5


def test_the_plan_drops_queries_carried_past_the_max_age_and_counts_their_samples():
    cut = Rollout("q1", (1, 3), (0,), "", False, (-1.0,), 0, cut=True)
    ended = Rollout("q1", (1, 0), (0, 1), "x", True, (-1.0, -1.0), 0)
    young = CarriedQuery(PROBLEMS["q1"], 3, (ended, cut))
    old = CarriedQuery(PROBLEMS["q0"], 1, (ended, ended, cut))
    plan = StepPlan(5, [PROBLEMS["f0"]], [old, young], max_age=2)
    assert plan.dropped == 3 and [p.id for p in plan.problems] == ["f0", "q1"] and plan.prefixes == [None, [cut]]
    back = Carried.from_json(json.loads(json.dumps(Carried([young]).to_json())))
    assert back.queries == [young]


# ------------------------------------------------------------------ through rl_step

def test_cut_samples_are_carried_and_each_sample_trains_once_with_its_segments_log_probs(tmp_path):
    cfg, roles, state = _cfg(), _Roles(), DriverState.start(3)
    out = _run(cfg, roles, state, _batches(6), tmp_path)
    # step 1: 8 samples, 6 must end: q1's 10-token sample is cut at 2 tokens; q0 trains alone
    assert out[0][1] == ["q0"] and out[0][0]["rollout/partial_carried"] == 1
    # it continues 2 tokens a step (every call's fresh samples end at 2) and ends in step 5
    assert [m["rollout/partial_carried"] for m, _ in out] == [1, 1, 1, 1, 0, 0]
    assert [calls[1][-1] for calls in roles.rollout.calls] == [0, 1, 1, 1, 1, 0]  # one prefix continued a step
    assert out[4][1] == ["f6", "f7", "q1"] and out[4][0]["rollout/segments_max"] == 5
    rows, problems = records.check_run(tmp_path)
    assert problems == []
    seen = [(r["query_id"], r["sample"]) for s in range(1, 7)
            for r in records.read_step(records.step_file(tmp_path, s))[0]]
    assert len(seen) == len(set(seen)) == 4 * 12  # every sample of the 12 queries recorded once
    long = next(r for r in records.read_step(records.step_file(tmp_path, 5))[0] if r["query_id"] == "q1"
                and r["sample"] == 3)
    assert long["segments"] == [[0, 2], [1, 2], [2, 2], [3, 2], [4, 2]] and long["response_tokens"] == 10
    assert long["policy_version"] == 0 and long["kept"]
    trained = [(s, x) for s, xs in roles.learner.trained for x in xs]
    negatives = [(s, x) for s, x in trained if not x.positive]
    # q1's negative is the long sample, trained once, in step 5, each token with its sampler's log-prob
    (step, neg), = [(s, x) for s, x in negatives if len(x.response_ids) == 10]
    assert step == 4 and neg.behaviour_logprobs == (-1.0, -1.0, -2.0, -2.0, -3.0, -3.0, -4.0, -4.0, -5.0, -5.0)
    assert len(negatives) == 12  # one per query, each once


def test_a_query_carried_past_partial_max_age_is_dropped_and_counted(tmp_path):
    cfg, roles, state = _cfg(max_age=2), _Roles(), DriverState.start(3)
    out = _run(cfg, roles, state, _batches(5), tmp_path)
    assert [m["rollout/partial_dropped"] for m, _ in out] == [0, 0, 0, 4, 0]  # q1's 4 samples, at step 4
    assert [m["rollout/partial_carried"] for m, _ in out] == [1, 1, 1, 0, 0]
    assert all("q1" not in ids for _, ids in out)
    assert not any(r["query_id"] == "q1" for s in range(1, 6)
                   for r in records.read_step(records.step_file(tmp_path, s))[0])


@pytest.mark.parametrize("staleness", [0, 1])
def test_a_run_resumed_mid_carry_writes_the_records_of_the_uninterrupted_run(tmp_path, staleness):
    """6 steps in one go vs 2 steps, the driver state through JSON (a checkpoint, q1's long
    sample cut twice), 4 more with fresh roles at the saved version: the same records (one step
    off-policy, the same but for the versions of the first step after the resume)."""
    cfg, batches = _cfg(staleness=staleness), _batches(6)
    whole = _run(cfg, _Roles(), DriverState.start(3), batches, tmp_path / "whole")
    state = DriverState.start(3)
    _run(cfg, _Roles(), state, batches[:2], tmp_path / "split")
    saved = json.loads(json.dumps(state.to_json()))
    assert len(saved["carried"]) == 1 and saved["carried"][0]["samples"][3]["cut"]
    resumed = DriverState.from_json(saved)
    split = _run(cfg, _Roles(version=resumed.policy_version), resumed, batches, tmp_path / "split")
    assert [m["rollout/partial_carried"] for m, _ in split] == [m["rollout/partial_carried"] for m, _ in whole[2:]]
    assert all(m["rollout/stale_dropped"] == 0 for m, _ in whole)  # old segments are partial_max_age's to bound
    for s in range(1, 7):
        a, b = (records.read_step(records.step_file(tmp_path / run, s))[0] for run in ("whole", "split"))
        if staleness:  # the resumed step generates now, on the saved weights, not ahead on the older ones
            a, b = ([{**r, "policy_version": None, "segments": [n for _, n in r["segments"]]} for r in x] for x in (a, b))
        assert a == b, f"step {s}"


def test_config_checks_and_what_partial_turns_on():
    with pytest.raises(ValueError, match="partial_budget"):
        RolloutConfig(partial_budget=0.0)
    with pytest.raises(ValueError, match="partial_max_age"):
        RolloutConfig(partial_max_age=0)
    with pytest.raises(ValueError, match="dynamic_sampling"):
        TrainConfig(rollout=RolloutConfig(partial=True), algo=AlgoConfig(dynamic_sampling=True))
    cfg = TrainConfig(rollout=RolloutConfig(partial=True, behaviour_logprobs=False))
    assert cfg.rollout.behaviour_logprobs and cfg.algo.off_policy  # the ratio to each token's sampler
    with pytest.raises(ValueError, match="carried"):
        rl_step(_cfg(), _Roles(), _batches(1)[0], PROMPT, [1], 0, DriverState.start(3).rng)
