"""Benchmarks scored inside training (`eval_benchmarks`): config checks, the best-checkpoint
score, and one real step through the shared e2e roles."""
from __future__ import annotations

import dataclasses
import json

import pytest

from conftest import FIXTURE_BENCHMARKS


def test_unknown_eval_benchmark_is_refused_naming_the_key():
    from launch.config import TrainConfig

    with pytest.raises(ValueError, match="eval_benchmarks: unknown benchmark 'math5000'"):
        TrainConfig(eval_benchmarks=["math5000"])
    with pytest.raises(ValueError, match="eval_benchmark_limit"):
        TrainConfig(eval_benchmark_limit=-1)


def test_the_best_checkpoint_is_scored_on_the_benchmarks_when_there_are_some():
    from launch.state.checkpoint import eval_score
    from launch.state.metrics import evals_of

    assert eval_score({"eval/pass1": 0.5}) == 0.5
    assert eval_score({"eval/pass1": 0.5, "eval/benchmarks/pass1": 0.25}) == 0.25
    rows = [{"step": 0, "eval/step": 0.0, "eval/benchmarks/pass1": 0.1, "eval/math500/pass1": 0.1},
            {"step": 1, "rollout/samples": 8.0}]
    assert evals_of(rows) == [{"eval/step": 0.0, "eval/benchmarks/pass1": 0.1, "eval/math500/pass1": 0.1}]


@pytest.mark.e2e
@pytest.mark.slow
def test_one_step_scores_the_benchmarks_before_and_after(fresh_policy, e2e_cfg, tmp_path):
    from launch.loop import train

    task = dataclasses.replace(e2e_cfg.task, benchmarks_dir=str(FIXTURE_BENCHMARKS))
    cfg = dataclasses.replace(e2e_cfg, steps=1, eval_every=0, task=task, eval_benchmarks=["math500", "gsm8k_test"],
                              eval_benchmark_limit=2)
    result = train(cfg, tmp_path, roles=fresh_policy)
    assert [e["eval/step"] for e in result.evals] == [0.0, 1.0]
    for e in result.evals:
        assert {"eval/math500/pass1", "eval/gsm8k_test/pass1", "eval/benchmarks/pass1", "eval/pass1"} <= set(e)
        assert e["eval/benchmarks/pass1"] == pytest.approx((e["eval/math500/pass1"] + e["eval/gsm8k_test/pass1"]) / 2)
    meta = json.loads((tmp_path / "ckpt" / "step_000001" / "driver.json").read_text())
    assert meta["heldout_pass1"] == result.evals[-1]["eval/benchmarks/pass1"]  # what picks the best
    assert set(result.summary["benchmarks_pass1_by_step"]) == {0, 1}
