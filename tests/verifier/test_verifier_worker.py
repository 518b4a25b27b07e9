"""GradingWorker: hard deadlines, restarts and adversarial inputs (no Ray needed)."""
import os
import signal
import threading
import time

import pytest

from verifier import VerifierConfig
from verifier.worker import GradingWorker

from verifier_targets import ADVERSARIAL, MISBEHAVE  # noqa: E402  (tests/verifier is on sys.path)

TIMEOUT_S = 1.5
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def worker():
    w = GradingWorker(VerifierConfig(timeout_s=TIMEOUT_S), target=MISBEHAVE)
    w.start()
    yield w
    w.shutdown()


def test_plain_batch(worker):
    jobs = [(f"\\boxed{{{i}}}", str(i % 7), True) for i in range(40)]
    verdicts = worker.grade_many(jobs)
    assert [v.correct for v in verdicts] == [i == i % 7 for i in range(40)]


def test_hang_times_out_and_the_rest_survive(worker):
    before = worker.restarts
    t0 = time.monotonic()
    verdicts = worker.grade_many([("\\boxed{1}", "1", True), ("hang", "1", True),
                                  ("\\boxed{2}", "2", True)])
    assert time.monotonic() - t0 < TIMEOUT_S + 1.0
    assert [v.outcome for v in verdicts] == ["correct", "timeout", "correct"]
    assert verdicts[1].latency_s >= TIMEOUT_S and "1.5" in verdicts[1].detail
    assert worker.restarts == before + 1


def test_each_sample_gets_its_own_deadline(worker):
    # three 0.6 s samples: 1.8 s in all, more than one deadline, yet none times out
    verdicts = worker.grade_many([("sleep:0.6", "1", True)] * 3)
    assert [v.outcome for v in verdicts] == ["no_answer"] * 3


def test_crash_is_retried_then_error(worker):
    verdicts = worker.grade_many([("crash", "1", True), ("\\boxed{3}", "3", True)])
    assert verdicts[0].outcome == "error" and "died twice" in verdicts[0].detail
    assert verdicts[1].outcome == "correct"


def test_memory_is_capped(worker):
    (v,) = worker.grade_many([("alloc", "1", True)])
    assert v.outcome == "error" and v.detail == "MemoryError"


def test_worker_killed_mid_batch_loses_no_sample(worker):
    jobs = [("sleep:0.05", "1", True)] * 10 + [(f"\\boxed{{{i}}}", str(i), True) for i in range(20)]
    pid = worker.pid
    killer = threading.Timer(0.2, os.kill, (pid, signal.SIGKILL))
    killer.start()
    verdicts = worker.grade_many(jobs)
    killer.join()
    assert worker.pid != pid
    assert len(verdicts) == 30
    assert [v.outcome for v in verdicts] == ["no_answer"] * 10 + ["correct"] * 20




@pytest.mark.parametrize("name,completion", ADVERSARIAL, ids=[a[0] for a in ADVERSARIAL])
def test_adversarial_inputs_are_bounded(worker, name, completion):
    cfg_big = worker.cfg
    t0 = time.monotonic()
    (v,) = worker.grade_many([(completion, "3", True)])
    assert time.monotonic() - t0 < cfg_big.timeout_s + 1.0, v
    assert v.outcome in ("timeout", "incorrect", "no_answer", "correct"), v


def test_adversarial_nesting_with_room_to_parse():
    """With the completion cap lifted, 20,000 nested parentheses reach the answer guard."""
    cfg = VerifierConfig(timeout_s=TIMEOUT_S, max_completion_chars=100_000, max_answer_chars=50_000)
    w = GradingWorker(cfg, spare=False)
    w.start()
    try:
        t0 = time.monotonic()
        (v,) = w.grade_many([("\\boxed{" + "(" * 20_000 + "1" + ")" * 20_000 + "}", "1", True)])
        assert time.monotonic() - t0 < TIMEOUT_S + 1.0
        assert v.outcome == "incorrect" and "nests" in v.detail
    finally:
        w.shutdown()
