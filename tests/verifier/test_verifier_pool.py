"""VerifierPool on a real (small) Ray instance: order, totality, restarts, judge."""
import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from verifier import Verdict, VerifierConfig, VerifierPool  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(ROOT / ".cache" / "ray_vf"),
             logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(ray_session):
    p = VerifierPool(VerifierConfig(num_workers=2, chunk_size=8))
    yield p
    p.shutdown()


def test_grade_keeps_order_and_counts(pool):
    comps = [f"so \\boxed{{{i}}}" for i in range(50)]
    golds = [str(i if i % 5 else i + 1) for i in range(50)]
    verdicts = pool.grade(comps, golds, [i != 7 for i in range(50)])
    assert len(verdicts) == 50 and all(isinstance(v, Verdict) for v in verdicts)
    for i, v in enumerate(verdicts):
        expected = "truncated" if i == 7 else ("incorrect" if i % 5 == 0 else "correct")
        assert v.outcome == expected, (i, v)
        assert v.answer == str(i)
    m = pool.metrics(verdicts)
    assert m["verifier/outcome/truncated"] == 1 and m["verifier/outcome/incorrect"] == 10
    assert 0 <= m["verifier/latency_p50_s"] <= m["verifier/latency_p99_s"]


def test_empty_batch(pool):
    assert pool.grade([], [], []) == []


def test_self_check_passes_and_refuses(pool):
    pool.self_check(["\\frac{1}{2}", "3", "(1,2)", "x^2+1"])
    with pytest.raises(ValueError, match="self-check failed.*1/2"):
        pool.self_check(["3", "\\frac{1}{2"])  # unbalanced gold cannot grade itself
