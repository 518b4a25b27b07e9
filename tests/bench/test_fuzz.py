"""A slice of `python -m bench.fuzz` (the full run is in `make bench`): hostile answers, mutated
golds, broken rows and hostile eval responses through the real grading subprocess, the loaders
and the eval report, with no crash, hang or false positive; and the harness counts each of
those when they happen."""
from __future__ import annotations

import json
import random
import time

import pytest

from bench import fuzz
from bench.fuzz_inputs import WRONG, GradeInput, mutate, numeric_value, wrong_answers
from verifier import grade

FIXTURE_GOLDS = [("Compute.", "1018"), ("Find x.", "\\frac{3}{4}"), ("Solve.", "(1, 2)"), ("Which?", "(C)"),
                 ("Simplify.", "x^2+1"), ("Evaluate.", "0.25"), ("How many?", "-7"), ("Root?", "2\\sqrt{3}")]


@pytest.mark.slow
def test_a_slice_has_no_crash_hang_or_false_positive(tmp_path):
    out = tmp_path / "fuzz.json"
    fuzz.main(["--inputs", "400", "--seed", "7", "--out", str(out)])  # exits non-zero on any count
    result = json.loads(out.read_text())
    assert result["inputs"] >= 390
    assert (result["crashes"], result["hangs"], result["false_positives"], result["wrong_loads"]) == (0, 0, 0, 0)
    assert set(result["parts"]) == {"grading", "loaders", "eval_report"}
    assert result["slowest_grade_s"] < result["deadline_s"]


def test_mutations_differ_in_value_and_grade_incorrect():
    rng = random.Random(0)
    for _, gold in FIXTURE_GOLDS:
        for _ in range(5):
            wrong = mutate(gold, rng)
            assert wrong is not None and wrong != gold
            assert grade(f"\\boxed{{{wrong}}}", gold).outcome == "incorrect", (gold, wrong)
        assert grade(f"\\boxed{{{gold}}}", gold).correct  # the unmutated gold is right: the mutation is what fails
    assert numeric_value("1,018") == 1018 and numeric_value("\\frac{-3}{4}") == numeric_value("-0.75")
    assert mutate("(-\\infty, 3]", rng) is None and mutate("x=3", rng) is None


def test_every_wrong_input_is_built_to_fail():
    for x in wrong_answers(FIXTURE_GOLDS, random.Random(1), 200):
        assert x.expect == WRONG
        assert not grade(x.completion, x.gold, question=x.question).correct, x


def test_the_harness_counts_a_false_positive_a_crash_and_a_hang():
    class FakeWorker:
        def grade_many(self, jobs):
            from verifier import Verdict

            outcomes = {"accept": Verdict(True, "correct"), "boom": Verdict.failed("error", "ValueError: x"),
                        "slow": Verdict.failed("timeout", "no verdict within 3.0s")}
            return [outcomes[c] for c, *_ in jobs]

    inputs = [GradeInput("t", "accept", "1", WRONG), GradeInput("t", "boom", "1", "any"),
              GradeInput("t", "slow", "1", "any"), GradeInput("t", "accept", "1", "any")]
    got = fuzz.fuzz_grading(inputs, FakeWorker())
    assert (got["inputs"], got["false_positives"], got["crashes"], got["hangs"]) == (4, 1, 1, 1)


def _hang(x):
    if x == "hang":
        time.sleep(60)
    if x == "die":
        import os

        os._exit(3)
    if x == "raise":
        raise RecursionError("deep")
    return x * 2


def test_bounded_map_counts_hangs_and_deaths_and_goes_on():
    t = time.perf_counter()
    got = fuzz.bounded_map(_hang, ["a", "hang", "b", "die", "raise", "c"], limit_s=1.0)
    assert [s for s, *_ in got] == ["ok", "hang", "ok", "crash", "crash", "ok"]
    assert [r for s, _, r in got if s == "ok"] == ["aa", "bb", "cc"]
    assert "exit code 3" in got[3][2] and got[4][2] == "RecursionError: deep"
    assert time.perf_counter() - t < 20
