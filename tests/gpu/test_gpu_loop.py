"""The GPU path (vLLM CUDA engine, NCCL learner group, bf16) on one GPU: the same code as
the CPU tests, chosen by config. Run on a GPU machine: `pytest -m gpu tests/gpu`."""
from __future__ import annotations

import pytest

from conftest import CACHE, compose

pytestmark = [pytest.mark.gpu, pytest.mark.e2e, pytest.mark.slow]


def test_two_steps_on_one_gpu(tmp_path):
    from launch.config import to_train_config
    from launch.loop import train

    cfg = to_train_config(compose([
        "rollout=gpu", "learner=gpu_zero3",
        # one GPU shared by the engine and a 1-rank learner (colocated, Ray fractional GPUs)
        "learner.colocate=true",
        "rollout.num_engines=1", "rollout.num_gpus_per_actor=0.4", "rollout.gpu_memory_utilization=0.3",
        "rollout.max_new_tokens=48", "rollout.max_model_len=256", "rollout.n_samples=8",
        "learner.world_size=1", "learner.num_gpus_per_rank=0.4", "learner.micro_batch_size=16",
        "learner.gradient_checkpointing=false",
        "steps=2", "prompts_per_step=8", "eval_size=16", "eval_every=0", "algo=reinforce",
        f"ray.temp_dir={CACHE / 'ray'}",
    ]))
    result = train(cfg, tmp_path)
    rows = [r for r in result.history if "rollout/samples" in r]
    assert len(rows) == 2 and all(r["rollout/samples"] == 64 for r in rows)
    assert all(r["sync/max_abs_logprob_diff"] <= cfg.learner.sync_tolerance for r in rows)
