"""The rollout record (`launch.records`): one line per sample, and the checker behind
`python -m launch.records RUN_DIR` that every sample is there exactly once."""
from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from actors.types import Rollout
from conftest import ROOT
from launch import records
from launch.data.problem import Problem
from learner.config import AlgoConfig
from learner.selection import select
from verifier.verdict import Verdict

B, K = 3, 4


def _step(step: int, outcomes: list[list[str]], mode: str = "oreal"):
    """Records of one synthetic step: B queries x K samples with the given verdict outcomes."""
    queries = [Problem(f"q{i}", f"Compute {i} + 1.", str(i + 1)) for i in range(len(outcomes))]
    prompt = {q.id: f"<user>{q.question}<assistant>" for q in queries}
    groups = [[Rollout(q.id, (1, 2), (3, 4, 5), f"answer {k}", True, (), step - 1) for k in range(len(row))]
              for q, row in zip(queries, outcomes)]
    verdicts = [Verdict(o == "correct", o, "7" if o in ("correct", "incorrect") else None) for row in outcomes for o in row]
    correct = [[o == "correct" for o in row] for row in outcomes]
    selection = select(groups, correct, AlgoConfig(mode=mode), random.Random(0))
    return records.step_records(step, queries, prompt, groups, verdicts, selection)


MIXED = [["correct", "incorrect", "incorrect", "timeout"],   # mixed: one kept of each side
         ["correct"] * 4,                                    # all correct: dropped
         ["no_answer", "incorrect", "truncated", "error"]]   # all wrong: dropped


def _run(tmp_path, steps=(1, 2), log=True):
    for s in steps:
        records.write_step(tmp_path, s, _step(s, MIXED))
    if log:
        with (tmp_path / "metrics.jsonl").open("w") as f:
            f.write(json.dumps({"step": 0, "eval/pass1": 0.5}) + "\n")
            for s in steps:
                f.write(json.dumps({"step": s, "rollout/samples": float(B * K)}) + "\n")
    return tmp_path


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_one_record_per_sample_with_the_audit_fields(tmp_path):
    path = records.write_step(tmp_path, 3, _step(3, MIXED))
    assert path == tmp_path / "rollouts" / "step_00003.jsonl"
    rows = _lines(path)
    assert len(rows) == B * K
    assert [(r["query_index"], r["sample"]) for r in rows] == [(i, k) for i in range(B) for k in range(K)]
    first = rows[0]
    for key in ("step", "query_id", "prompt", "response", "outcome", "answer", "reward", "advantage", "kept", "why",
                "policy_version", "gold", "n_samples"):
        assert key in first, key
    assert first["prompt"] == "<user>Compute 0 + 1.<assistant>" and first["response"] == "answer 0"
    assert first["policy_version"] == 2 and first["step"] == 3 and first["gold"] == "1"
    # r and A over all K before filtering: p = 1/4 -> A+ = 2, A- = -2/3 (docs/algorithm.md step 3)
    assert [r["reward"] for r in rows[:K]] == [1.0, -1.0, -1.0, -1.0]
    assert rows[0]["advantage"] == pytest.approx(2.0) and rows[1]["advantage"] == pytest.approx(-2 / 3)
    # filtering: query 0 keeps one correct (the only one) and one incorrect; the others say why not
    q0 = rows[:K]
    assert q0[0]["kept"] and sum(r["kept"] for r in q0) == 2
    assert {r["why"] for r in q0 if not r["kept"]} == {"not_picked"}
    assert {r["why"] for r in rows[K:2 * K]} == {"all_correct"} and {r["why"] for r in rows[2 * K:]} == {"all_wrong"}
    assert [r["outcome"] for r in rows[2 * K:]] == MIXED[2] and rows[2 * K]["answer"] is None


def test_unfiltered_mode_keeps_all_and_a_rewritten_step_replaces_its_file(tmp_path):
    records.write_step(tmp_path, 1, _step(1, MIXED, mode="reinforce"))
    records.write_step(tmp_path, 1, _step(1, MIXED, mode="reinforce"))  # the step run again (a resume)
    rows = _lines(records.step_file(tmp_path, 1))
    assert len(rows) == B * K and all(r["kept"] and r["why"] == "kept" for r in rows)
    assert not list((tmp_path / "rollouts").glob(".*"))  # no temp file left behind


def test_check_passes_and_summarises_counts_per_outcome(tmp_path):
    rows, problems = records.check_run(_run(tmp_path))
    assert problems == []
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["samples"] == 12 and rows[0]["queries"] == 3 and rows[0]["kept"] == 2
    assert (rows[0]["correct"], rows[0]["incorrect"], rows[0]["timeout"], rows[0]["error"]) == (5, 3, 1, 1)
    text = records.table(rows)
    assert text.splitlines()[0].split()[:4] == ["step", "queries", "samples", "correct"]
    assert text.splitlines()[-1].split()[:3] == ["total", "6", "24"]


def _rewrite(path, edit):
    rows = _lines(path)
    rows = edit(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_duplicate_sample_fails_naming_step_and_query(tmp_path):
    run = _run(tmp_path)
    _rewrite(records.step_file(run, 2), lambda rows: rows + [rows[5]])
    _, problems = records.check_run(run)
    assert "step 2: query q1 sample 1 appears 2 times" in problems
    assert "step 2: 13 records, but metrics.jsonl logged rollout/samples=12" in problems
    assert not any(p.startswith("step 1") for p in problems)


def test_a_missing_sample_fails_naming_step_and_query(tmp_path):
    run = _run(tmp_path)
    _rewrite(records.step_file(run, 1), lambda rows: [r for r in rows if (r["query_id"], r["sample"]) != ("q2", 3)])
    _, problems = records.check_run(run)
    assert "step 1: query q2 is missing samples [3] of 4" in problems
    assert "step 1: 11 records, but metrics.jsonl logged rollout/samples=12" in problems


def test_a_missing_step_file_and_a_count_mismatch_fail(tmp_path):
    run = _run(tmp_path)
    records.step_file(run, 2).unlink()
    _, problems = records.check_run(run)
    assert problems == ["step 2: no records file, but metrics.jsonl logged rollout/samples=12"]
    # a whole query lost from a step: every remaining query is complete, only the count says so
    run = _run(tmp_path)
    _rewrite(records.step_file(run, 1), lambda rows: [r for r in rows if r["query_id"] != "q1"])
    _, problems = records.check_run(run)
    assert problems == ["step 1: 8 records, but metrics.jsonl logged rollout/samples=12"]


def test_a_step_without_metrics_row_is_checked_on_its_own(tmp_path):
    """The step the verifier alarm stopped was never logged: its file is still checked for
    duplicates and missing samples, and shows '-' as the logged count."""
    run = _run(tmp_path)
    records.write_step(run, 3, _step(3, MIXED))
    rows, problems = records.check_run(run)
    assert problems == [] and rows[-1]["step"] == 3 and rows[-1]["logged"] == "-"
    _rewrite(records.step_file(run, 3), lambda rows: rows[1:])
    _, problems = records.check_run(run)
    assert problems == ["step 3: query q0 is missing samples [0] of 4"]


def test_no_records_at_all_fails(tmp_path):
    _, problems = records.check_run(tmp_path)
    assert len(problems) == 1 and "no rollout records" in problems[0]


def test_cli_exit_status_and_output(tmp_path):
    run = _run(tmp_path)
    cmd = [sys.executable, "-m", "launch.records", str(run)]
    ok = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "records check ok: 24 samples in 2 steps, each exactly once" in ok.stdout
    assert "timeout" in ok.stdout.splitlines()[0]
    _rewrite(records.step_file(run, 2), lambda rows: rows + [rows[0]])
    bad = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert "step 2: query q0 sample 0 appears 2 times" in bad.stderr and "FAILED" in bad.stderr
    assert records.main([str(run)]) == 1


def test_the_judges_answer_is_in_the_record():
    queries = [Problem("q0", "Compute.", "1/2")]
    groups = [[Rollout("q0", (1,), (2,), f"r{k}", True, (), 0) for k in range(2)]]
    verdicts = [Verdict(True, "correct", "0.5", judge="yes"), Verdict(False, "incorrect", "3")]
    selection = select(groups, [[True, False]], AlgoConfig(), random.Random(0))
    rows = records.step_records(1, queries, {"q0": "p"}, groups, verdicts, selection)
    assert [r["judge"] for r in rows] == ["yes", None]
