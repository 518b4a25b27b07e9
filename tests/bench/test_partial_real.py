"""bench.partial_real's summary of a run folder (lengths from the rollout record, step and
generation medians over the steps that trained) and its page in docs/benchmarks.md."""
from __future__ import annotations

import json

import pytest

from bench.partial_real import lengths, summarise
from bench.report import partial_rollouts


def _run(tmp_path, tokens: list[int]):
    (tmp_path / "rollouts").mkdir()
    with (tmp_path / "rollouts" / "step_00001.jsonl").open("w") as f:
        for t in tokens:
            f.write(json.dumps({"response_tokens": t, "segments": [[0, t - 1], [2, 1]]}) + "\n")
    rows = [{"step": 0, "eval/pass1": 0.25}]
    for s, (step_s, gen) in enumerate([(9.0, 8.0), (4.0, 2.0), (5.0, 3.0), (6.0, 1.0)], 1):
        rows.append({"step": s, "rollout/samples": 16.0, "perf/step_s": step_s, "timing_s/generate": gen,
                     "timing_s/train": 1.0, "learner/loss": 0.1, "rollout/partial_carried": 2.0,
                     "rollout/partial_dropped": 0.0, "rollout/segments_max": float(s)})
    rows.append({"step": 4, "eval/pass1": 0.5})
    return rows


def test_summary_of_a_run_folder(tmp_path):
    rows = _run(tmp_path, list(range(1, 101)))
    L = lengths(tmp_path)
    assert (L["median"], L["p90"], L["p99"], L["max"], L["samples"]) == (50.5, 90, 99, 100, 100)
    s = summarise(rows, tmp_path, wall_s=3.0)
    assert s["steps_timed"] == 3 and s["step_s_median"] == 5.0 and s["generate_s_median"] == 2.0  # the first left out
    assert s["partial_carried_total"] == 8.0 and s["segments_max"] == 4.0
    # tokens by the step that made them: version 2 made 100 (one per sample) in logged step 3, in 3 s
    assert s["generated_tokens_per_step"] == pytest.approx(100 / 3) and s["generate_tok_s_median"] == 0.0
    assert (s["pass1_before"], s["pass1_after"]) == (0.25, 0.5)
    alone = {"queries_per_call": 32, "seconds_ratio": 0.9, "decode_steps_ratio": 0.4,
             "median": {"plain_s": 1.0, "partial_s": 0.9, "plain_decode_steps": 300, "partial_decode_steps": 120}}
    page = "\n".join(partial_rollouts({"setting": ["task=arith_long_tail"], "step_s_ratio": 0.8,
                                       "generate_s_ratio": 0.5, "pass1_after_diff": 0.02, "engine_alone": alone,
                                       "runs": [{**s, "seed": 0, "partial": False}, {**s, "seed": 0, "partial": True}]}))
    assert "| 0 | off | 5.00 | 2.00 |" in page and "| on |" in page and "step 0.80x" in page
    assert "0.40x the decode steps" in page
    assert s["lengths"]["p99_over_median"] == pytest.approx(99 / 50.5)
