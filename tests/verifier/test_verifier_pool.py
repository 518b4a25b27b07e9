"""VerifierPool on a real (small) Ray instance: order, totality, restarts, judge."""
import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from verifier import Verdict, VerifierConfig, VerifierPool  # noqa: E402

from fake_judge import FakeJudge  # noqa: E402  (tests/verifier is on sys.path)
from verifier_targets import ADVERSARIAL, MISBEHAVE  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 1.0
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def judge_server():
    with FakeJudge() as server:
        yield server


@pytest.fixture(scope="module")
def pool(judge_server, ray_cluster):
    cfg = VerifierConfig(num_workers=2, chunk_size=4, timeout_s=TIMEOUT_S,
                         judge_url=judge_server.url, judge_model="fake-model", judge_timeout_s=1.0)
    p = VerifierPool(cfg, target=MISBEHAVE)  # grades normally unless asked to misbehave
    yield p
    p.shutdown()


def test_grade_keeps_order_and_counts(pool):
    comps = [f"so \\boxed{{{i}}}" for i in range(50)]
    golds = [str(i if i % 5 else i + 1) for i in range(50)]
    verdicts = pool.grade(comps, golds, [i != 7 for i in range(50)])
    assert len(verdicts) == 50 and all(isinstance(v, Verdict) for v in verdicts)
    for i, v in enumerate(verdicts):
        # the fake judge says YES to "7", but 7 is truncated: the judge is never asked
        expected = "truncated" if i == 7 else ("incorrect" if i % 5 == 0 else "correct")
        assert v.outcome == expected, (i, v)
        assert v.answer == str(i)
    m = pool.metrics(verdicts)
    assert m["verifier/outcome/truncated"] == 1 and m["verifier/outcome/incorrect"] == 10
    assert 0 <= m["verifier/latency_p50_s"] <= m["verifier/latency_p99_s"]


def test_benchmark_gold_formats(pool):
    golds = ["#### 1,018", "$\\frac{1}{3},-2,5$", "27.0", "The answer is $\\boxed{2}$."]
    comps = ["\\boxed{1018}", "\\boxed{5, -2, 1/3}", "The answer is 27.", "\\boxed{2}"]
    assert all(v.correct for v in pool.grade(comps, golds))


def test_empty_batch_and_length_mismatch(pool):
    assert pool.grade([], [], []) == []
    with pytest.raises(ValueError, match="lengths differ"):
        pool.grade(["a"], ["1", "2"])


def test_timeouts_in_a_batch(pool):
    comps = ["hang", "\\boxed{1}", "hang", "\\boxed{2}", "sleep:0.2", "\\boxed{3}"] * 2
    golds = ["1", "1", "1", "2", "1", "3"] * 2
    t0 = time.monotonic()
    verdicts = pool.grade(comps, golds)
    assert time.monotonic() - t0 < 4 * (TIMEOUT_S + 1.0)
    outcomes = [v.outcome for v in verdicts]
    assert outcomes == ["timeout", "correct", "timeout", "correct", "no_answer", "correct"] * 2


def test_adversarial_batch_is_bounded(pool):
    comps = [c for _, c in ADVERSARIAL] + ["\\boxed{3}"]
    t0 = time.monotonic()
    verdicts = pool.grade(comps, ["3"] * len(comps))
    assert time.monotonic() - t0 < len(comps) * (TIMEOUT_S + 1.0)
    assert all(v.latency_s < TIMEOUT_S + 1.0 for v in verdicts), verdicts
    assert verdicts[-1].correct and verdicts[4].correct  # the 100,000-char one is fine too


def test_grader_killed_mid_batch_loses_no_sample(pool):
    pool.take_faults()
    grader = pool.pids()[0]["grader"]
    killer = threading.Timer(0.3, os.kill, (grader, signal.SIGKILL))
    killer.start()
    comps = ["sleep:0.05"] * 24 + [f"\\boxed{{{i}}}" for i in range(24)]
    verdicts = pool.grade(comps, ["1"] * 24 + [str(i) for i in range(24)])
    killer.join()
    assert [v.outcome for v in verdicts] == ["no_answer"] * 24 + ["correct"] * 24
    assert pool.pids()[0]["grader"] != grader
    faults = pool.take_faults()
    assert faults["faults/verifier_worker_restarts"] == 1 and faults["faults/verifier_actor_restarts"] == 0
    assert pool.take_faults()["faults/verifier_worker_restarts"] == 0  # counted once


def test_actor_killed_mid_batch_loses_no_sample(pool):
    pool.take_faults()
    actor = pool.pids()[1]["actor"]
    killer = threading.Timer(0.3, os.kill, (actor, signal.SIGKILL))
    killer.start()
    comps = ["sleep:0.05"] * 24 + [f"\\boxed{{{i}}}" for i in range(24)]
    verdicts = pool.grade(comps, ["1"] * 24 + [str(i) for i in range(24)])
    killer.join()
    assert [v.outcome for v in verdicts] == ["no_answer"] * 24 + ["correct"] * 24
    assert pool.pids()[1]["actor"] != actor
    faults = pool.take_faults()
    assert faults["faults/verifier_actor_restarts"] == 1
    assert 0 < faults["faults/regraded_samples"] <= 2 * 4  # its queued chunks (chunk_size 4), graded again


def test_actor_deaths_past_the_limit_stop_the_pool(ray_cluster):
    """verifier.max_actor_restarts=0: the first dead actor stops grading with a clear error."""
    from verifier import VerifierFailure

    limited = VerifierPool(VerifierConfig(num_workers=1, chunk_size=4, max_actor_restarts=0), target=MISBEHAVE)
    try:
        actor = limited.pids()[0]["actor"]
        killer = threading.Timer(0.3, os.kill, (actor, signal.SIGKILL))
        killer.start()
        with pytest.raises(VerifierFailure, match="verifier.max_actor_restarts=0"):
            limited.grade(["sleep:0.05"] * 40, ["1"] * 40)
        killer.join()
    finally:
        limited.shutdown()


def test_judge_rescues_through_the_pool(ray_cluster, judge_server):
    # Own pool with generous deadlines: this checks the judge's verdict logic, and the shared
    # pool's 1 s deadline can expire on a loaded 2-core machine (then the outcome is timeout).
    cfg = VerifierConfig(num_workers=1, chunk_size=4, timeout_s=10.0, judge_url=judge_server.url,
                         judge_model="fake-model", judge_timeout_s=10.0)
    judge_pool = VerifierPool(cfg)
    try:
        verdicts = judge_pool.grade(["\\boxed{one half}", "\\boxed{two halves}", "\\boxed{0.5}"],
                                    ["\\frac12"] * 3)
    finally:
        judge_pool.shutdown()
    assert [v.outcome for v in verdicts] == ["correct", "incorrect", "correct"]
    assert verdicts[0].detail == "rescued by LLM judge" and verdicts[2].detail is None


def test_self_check_passes_and_refuses(pool):
    pool.self_check(["\\frac{1}{2}", "3", "(1,2)", "x^2+1", "#### 18"])
    with pytest.raises(ValueError, match="self-check failed for 1/2 gold answers") as err:
        pool.self_check(["3", "\\frac{1}{2"])  # an unbalanced gold cannot grade itself
    assert "frac{1}{2" in str(err.value) and "vs itself" in str(err.value)
