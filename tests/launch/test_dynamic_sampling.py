"""`algo.dynamic_sampling` (launch.streaming.refill, launch.loop.rl_step) with stand-in roles, no
Ray: refill rounds fill the batch with mixed queries from the data order, stop at
`algo.max_refill_rounds`, train on exactly prompts_per_step queries, log what they drew, and a
run resumed from its driver state draws what the uninterrupted run drew."""
from __future__ import annotations

import dataclasses
import json
from functools import partial

import pytest

from actors.types import Rollout
from conftest import RecordingLearner
from launch import records
from launch.config import TrainConfig
from launch.data.problem import Problem
from launch.loop import rl_step
from launch.state.checkpoint import CheckpointError, Checkpointer, DriverState, find_resume
from launch.streaming import Prefetcher, Streamed, refill, refill_size
from learner.config import AlgoConfig
from verifier.verdict import Verdict

pytestmark = pytest.mark.usefixtures("versioned_sync")  # tests/conftest.py: the engines take each new version

K = 4
# p<n>: n % 3 == 0 all right, 1 all wrong, 2 mixed (even samples right): a third are mixed
TRAIN = [Problem(f"p{n}", f"Question {n}?", str(n)) for n in range(21)]
PROMPT = {p.id: f"<{p.id}>" for p in TRAIN}


def _right(qid: str, k: int) -> bool:
    n = int(qid[1:])
    return n % 3 == 0 or (n % 3 == 2 and k % 2 == 0)


class _Rollout:
    """Answers by `_right`; records every call: (query ids, seed key, thread name)."""

    def __init__(self):
        self.version, self.calls = 0, []

    def stream(self, ids, prompts, seed_key=None, **options):
        import threading

        self.calls.append((list(ids), tuple(seed_key), threading.current_thread().name))
        for i, qid in enumerate(ids):
            n = qid[1:]
            yield i, [Rollout(qid, (1,), (2, 3), "\\boxed{" + (n if _right(qid, k) else "x") + "}", True, (-1.0, -1.0),
                              self.version) for k in range(K)]


class _Verifier:
    def grade(self, texts, golds, finished, questions=None):
        return [Verdict(t == "\\boxed{" + g + "}", "correct" if t == "\\boxed{" + g + "}" else "incorrect")
                for t, g in zip(texts, golds)]


class _AllRight(_Verifier):
    def grade(self, texts, golds, finished, questions=None):
        return [Verdict(True, "correct") for _ in texts]


class _Roles:
    def __init__(self, verifier=None):
        self.rollout, self.verifier, self.learner = _Rollout(), verifier or _Verifier(), RecordingLearner()
        self.ahead = Prefetcher(self)

    def take_faults(self):
        return {}


def _cfg(B=6, rounds=4, staleness=0, on=True):
    return dataclasses.replace(TrainConfig(), prompts_per_step=B, seed=5, algo=AlgoConfig(
        mode="bc", dynamic_sampling=on, max_refill_rounds=rounds, max_staleness=staleness))


def _steps(cfg, roles, state, steps, tmp_path=None):
    """train()'s loop around rl_step: draws, refills and the look ahead from `state`."""
    out = []
    for step in range(state.step, state.step + steps):
        queries = state.next_queries(TRAIN, cfg.prompts_per_step)
        metrics, groups, _ = rl_step(
            cfg, roles, queries, PROMPT, [1], step, state.rng, run_dir=tmp_path,
            draw=partial(state.next_queries, TRAIN),
            next_queries=lambda: state.copy().next_queries(TRAIN, cfg.prompts_per_step))
        state.step_done(synced=True)
        out.append((metrics, [g[0].query_id for g in groups]))
    return out


# ------------------------------------------------------------------ the refill rounds alone

def _streamed(queries) -> Streamed:
    groups = [[Rollout(q.id, (1,), (2,), "", True, (), 0) for _ in range(K)] for q in queries]
    verdicts = [Verdict(ok, "correct" if ok else "incorrect") for q in queries for ok in
                (_right(q.id, k) for k in range(K))]
    return Streamed(groups, verdicts, queries=list(queries))


def test_refill_size_fills_in_one_round_at_the_observed_share():
    assert refill_size(32, 24, 32) == 11  # 8 missing at a 3/4 share
    assert refill_size(32, 8, 32) == 32  # 24 missing at 1/4 would be 96: at most a batch
    assert refill_size(32, 0, 32) == 32  # nothing mixed yet: a fresh batch
    assert refill_size(6, 5, 6) == 2


def test_refill_draws_until_the_batch_is_mixed_enough():
    order = iter(TRAIN)
    runs = []

    def run(queries, r):
        runs.append(([q.id for q in queries], r))
        return _streamed(queries)

    draw = lambda n: [next(order) for _ in range(n)]  # noqa: E731
    first = _streamed(draw(6))  # p0..p5: p2, p5 mixed
    assert first.mixed == 2
    out = refill(first, 6, 4, draw, run)
    # round 1: 4 missing at 2/6 -> 12 (capped at 6): p6..p11 (p8, p11); round 2: 2 missing at 4/12 -> 6
    assert runs == [([f"p{n}" for n in range(6, 12)], 1), ([f"p{n}" for n in range(12, 18)], 2)]
    assert out.refill_rounds == 2 and out.mixed == 6 and len(out.groups) == len(out.queries) == 18
    assert [q.id for q in out.queries] == [f"p{n}" for n in range(18)]
    assert out.correct[2] == [True, False, True, False] and len(out.verdicts) == 18 * K


def test_refill_stops_at_max_rounds_and_not_before_it_needs():
    order = iter(TRAIN * 3)
    draw = lambda n: [next(order) for _ in range(n)]  # noqa: E731
    capped = refill(_streamed(draw(6)), 6, 1, draw, lambda qs, r: _streamed(qs))
    assert capped.refill_rounds == 1 and len(capped.groups) == 12 and capped.mixed == 4
    full = _streamed([TRAIN[2], TRAIN[5]])
    assert refill(full, 2, 4, draw, lambda qs, r: pytest.fail("drew for a full batch")).refill_rounds == 0
    none = refill(_streamed(draw(0)), 2, 0, draw, lambda qs, r: pytest.fail("max_refill_rounds=0"))
    assert none.refill_rounds == 0


# ------------------------------------------------------------------ through rl_step

def test_a_refilled_step_trains_exactly_prompts_per_step_queries(tmp_path):
    cfg, roles, state = _cfg(), _Roles(), DriverState.start(5)
    (metrics, drawn), = _steps(cfg, roles, state, 1, tmp_path)
    mixed = [q for q in drawn if int(q[1:]) % 3 == 2]
    assert len(mixed) >= 6 > len([q for q in drawn[:6] if int(q[1:]) % 3 == 2])  # the first 6 were not enough
    (step, samples), = roles.learner.trained
    assert len(samples) == 2 * 6  # one correct + one incorrect from each of the first 6 mixed queries
    assert metrics["rollout/queries_drawn"] == len(drawn) == state.drawn > 6
    assert metrics["rollout/refill_rounds"] == len(roles.rollout.calls) - 1 >= 1
    assert metrics["learner/kept_query_frac"] == pytest.approx(6 / len(drawn))
    assert metrics["rollout/samples"] == K * len(drawn) and "timing_s/refill" in metrics
    # each round samples with its own seeds: (seed, step) for the first, (seed, step, r) for round r
    assert [key for _, key, _ in roles.rollout.calls] == [(5, 0)] + [(5, 0, r) for r in
                                                                     range(1, len(roles.rollout.calls))]
    # every sample in the record; the mixed queries past the batch are "surplus", never kept
    rows, problems = records.check_run(tmp_path)
    assert problems == [] and rows[0]["samples"] == K * len(drawn) and rows[0]["kept"] == 12
    step_rows = records.read_step(records.step_file(tmp_path, 1))[0]
    kept_queries = sorted({r["query_index"] for r in step_rows if r["kept"]})
    assert [drawn[i] for i in kept_queries] == mixed[:6]
    assert {r["why"] for r in step_rows if r["query_id"] in mixed[6:]} <= {"surplus"}


def test_rounds_stop_at_max_refill_rounds_when_nothing_is_mixed(tmp_path):
    cfg, roles, state = _cfg(B=4, rounds=3), _Roles(_AllRight()), DriverState.start(5)
    (metrics, drawn), = _steps(cfg, roles, state, 1, tmp_path)
    assert metrics["rollout/refill_rounds"] == 3 and metrics["rollout/queries_drawn"] == 4 * 4 == len(drawn)
    assert metrics["learner/skipped"] == 1.0 and roles.learner.trained == []


def test_off_draws_prompts_per_step_and_logs_it():
    cfg, roles, state = _cfg(on=False), _Roles(), DriverState.start(5)
    (metrics, drawn), = _steps(cfg, roles, state, 1)
    assert metrics["rollout/queries_drawn"] == 6 == len(drawn) and metrics["rollout/refill_rounds"] == 0
    assert len(roles.rollout.calls) == 1 and "timing_s/refill" not in metrics


@pytest.mark.parametrize("staleness", [0, 1])
def test_a_resumed_run_draws_what_the_uninterrupted_run_drew(staleness):
    """6 steps in one go vs 3 steps, the driver state through JSON (a checkpoint), 3 more
    with fresh roles: the same queries every step (the order crosses passes of the 21 problems,
    whose shuffles share the RNG with the filter's picks) and the same state at the end."""
    cfg = _cfg(staleness=staleness)
    whole_state = DriverState.start(5)
    whole = _steps(cfg, _Roles(), whole_state, 6)
    first_state = DriverState.start(5)
    first = _steps(cfg, _Roles(), first_state, 3)
    saved = json.loads(json.dumps(first_state.to_json()))
    assert saved["drawn"] == saved["drawn_done"] > 3 * 6  # refills drew more than 3 x prompts_per_step
    resumed_state = DriverState.from_json(saved)
    rest = _steps(cfg, _Roles(), resumed_state, 3)
    assert [d for _, d in first + rest] == [d for _, d in whole]
    assert resumed_state.to_json() == whole_state.to_json()
    assert sum(m["rollout/refill_rounds"] for m, _ in whole) >= 3


def test_off_policy_generates_the_next_steps_queries_after_the_refills():
    """max_staleness=1: step t+1's queries are generated while step t trains, looked up in the
    order after step t's refills drew from it, so the prefetched batch is the one drawn."""
    cfg, roles = _cfg(staleness=1), _Roles()
    out = _steps(cfg, roles, DriverState.start(5), 4)
    ahead = [ids for ids, key, thread in roles.rollout.calls if thread.startswith("oreal-ahead")]
    assert len(ahead) == 4  # steps 2-5 were generated ahead (step 5 never ran) ...
    assert [d[:6] for _, d in out[1:]] == ahead[:3]  # ... and they are what those steps drew first
    assert all("timing_s/generate_ahead" in m and m["rollout/stale_dropped"] == 0 for m, _ in out[1:])


# ------------------------------------------------------------------ config and resume checks

def test_dynamic_sampling_needs_the_filter():
    with pytest.raises(ValueError, match=r"^algo.dynamic_sampling=true .* mode=shaped"):
        AlgoConfig(mode="shaped", dynamic_sampling=True)
    with pytest.raises(ValueError, match=r"^algo.dynamic_sampling=true .* filter_groups=false"):
        AlgoConfig(mode="oreal", filter_groups=False, dynamic_sampling=True)
    with pytest.raises(ValueError, match=r"^algo.max_refill_rounds must be >= 0"):
        AlgoConfig(max_refill_rounds=-1)
    assert not AlgoConfig().dynamic_sampling  # off by default: the paper's


def _checkpoint(run_dir, cfg, state):
    """A checkpoint of `state` as the learner group writes it, and the run's metrics up to it."""
    class Learner:
        def save_checkpoint(self, folder, step):
            (run_dir / folder / "policy" / "state").mkdir(parents=True)
            for rank in range(cfg.learner.world_size):
                (run_dir / folder / f"rng_rank{rank}.pt").touch()

        def save_pretrained(self, out):
            (run_dir / out).mkdir(parents=True)
            for f in ("config.json", "model.safetensors"):
                (run_dir / out / f).touch()

    roles = type("Roles", (), {"learner": Learner()})()
    Checkpointer(cfg.ckpt, run_dir, cfg.steps).save(state, roles, dataclasses.asdict(cfg), None, [])
    rows = [json.dumps({"step": s, "rollout/samples": 1.0}) + "\n" for s in range(1, state.step + 1)]
    (run_dir / "metrics.jsonl").write_text("".join(rows))


def test_a_checkpoint_with_refills_resumes_and_one_mid_step_does_not(tmp_path):
    from conftest import compose
    from launch.config import to_train_config

    cfg = to_train_config(compose([f"output_dir={tmp_path}", "steps=10", "prompts_per_step=6",
                                   "algo.dynamic_sampling=true", "ckpt.resume=auto"]))
    state = DriverState.start(cfg.seed)
    for _ in range(2):  # two steps that drew 6 + 5 refills each
        state.next_queries(TRAIN, 11)
        state.step_done(synced=True)
    _checkpoint(tmp_path / "a", dataclasses.replace(cfg, output_dir=str(tmp_path / "a")), state)
    assert find_resume(dataclasses.replace(cfg, output_dir=str(tmp_path / "a")), tmp_path / "a").step == 2
    state.next_queries(TRAIN, 6)  # step 3 drew its queries, then was saved: resuming would skip them
    _checkpoint(tmp_path / "b", dataclasses.replace(cfg, output_dir=str(tmp_path / "b")), state)
    with pytest.raises(CheckpointError, match=r"28 queries drawn, 22 by its 2 finished steps .*middle of a step"):
        find_resume(dataclasses.replace(cfg, output_dir=str(tmp_path / "b")), tmp_path / "b")


def test_the_run_summary_counts_the_queries_trained_and_drawn_per_step():
    from launch.state import report

    rows = [{"step": s, "rollout/samples": 8.0, "rollout/pass_rate": 0.5, "learner/kept_query_frac": frac,
             "rollout/queries_drawn": drawn} for s, (frac, drawn) in enumerate([(0.5, 8.0)] * 10 + [(0.5, 16.0)], 1)]
    s = report.summary(rows, [], "oreal", wall_s=1.0)
    assert s["kept_queries_per_step"] == pytest.approx(48 / 11)
    assert s["queries_drawn_per_step"] == pytest.approx(96 / 11)
    assert s["kept_queries_per_step_last10"] == pytest.approx(4.4)
    assert "queries trained / drawn per step" in report.table(s)
    before = [{"rollout/samples": 1.0, "rollout/pass_rate": 0.5}]  # a history from before these metrics
    assert "kept_queries_per_step" not in report.summary(before, [], "oreal", wall_s=1.0)
