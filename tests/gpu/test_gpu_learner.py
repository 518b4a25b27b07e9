"""The learner's GPU path on its own: one `LearnerWorker` rank on CUDA with NCCL, ZeRO-3 and
bf16 (conf/learner/gpu_zero3.yaml's backend and dtype), no Ray and no vLLM, so it also runs
where only torch, transformers and deepspeed are installed. On a GPU machine:
`pytest -m gpu tests/gpu/test_gpu_learner.py -s` (prints the step times)."""
from __future__ import annotations

import time

import pytest

from conftest import separable_group

pytestmark = [pytest.mark.gpu]

STEPS = 6
FREEZE = 1  # RM-only steps first, as in the recipe


@pytest.fixture(scope="module")
def learner(tmp_path_factory):
    import torch

    from launch.model.tiny_model import TinyModelConfig, build_tiny_model
    from learner.config import AlgoConfig, LearnerConfig, OptimConfig
    from learner.worker import LearnerWorker

    path = build_tiny_model(TinyModelConfig(), tmp_path_factory.mktemp("tiny"))
    optim = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=0)
    cfg = LearnerConfig(world_size=1, backend="auto", zero_stage=3, dtype="bfloat16", micro_batch_size=4,
                        policy_optim=optim, rm_optim=optim, sync_tolerance=0.05)
    worker = LearnerWorker(0, cfg, AlgoConfig(mode="oreal", actor_freeze_steps=FREEZE), path, seed=0,
                           total_steps=STEPS)
    worker.setup(*worker.master_address())
    yield worker
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def test_auto_backend_picks_nccl_on_cuda_in_bf16(learner):
    import torch

    assert torch.distributed.get_backend() == "nccl"
    assert learner.device.type == "cuda"
    params = list(learner.policy.module.parameters())
    assert params and all(p.dtype == torch.bfloat16 for p in params)
    # ZeRO-3: each parameter is a partition on the GPU (full tensors only inside forward).
    assert all(p.ds_tensor.device.type == "cuda" for p in params)


def test_oreal_steps_train_the_rm_then_separate_the_policy(learner):
    import torch

    from learner.batch import shard

    samples, counts = separable_group(learner.policy.module.config.vocab_size)
    mbs = shard(samples, 1, learner.cfg.micro_batch_size)[0]

    def margin() -> float:
        """Mean log-prob per token of the correct responses minus the wrong ones."""
        means = []
        for s in samples:
            lp = learner.probe_logprobs(s.prompt_ids + s.response_ids)[len(s.prompt_ids) - 1:]
            means.append(sum(lp) / len(lp))
        return sum(means[:4]) / 4 - sum(means[4:]) / 4

    before = margin()
    rows, times = [], []
    for step in range(STEPS):
        torch.cuda.synchronize()
        t = time.perf_counter()
        rows.append(learner.train_step(mbs, counts, step))
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    after = margin()
    print(f"\nGPU learner (1 rank, NCCL, ZeRO-3, bf16): step s {[round(x, 3) for x in times]}; "
          f"RM loss {[round(r['reward_model/loss'], 4) for r in rows]}; margin {before:.3f} -> {after:.3f}")
    assert rows[0]["learner/policy_frozen"] == 1.0 and "learner/loss" not in rows[0]
    assert all(r["learner/policy_frozen"] == 0.0 for r in rows[FREEZE:])
    losses = [r["reward_model/loss"] for r in rows]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0] - 0.02
    assert all(torch.isfinite(torch.tensor(r["learner/loss"])) for r in rows[FREEZE:])
    # Cloning the correct responses and pushing the wrong ones down widens the gap.
    assert after > before + 0.1


def test_published_weights_round_trip(learner, tmp_path):
    """publish -> load through the ZeRO-3 partitions on the GPU: zeroed weights give the
    uniform distribution, and the published ones bring the policy back."""
    import math

    import torch
    from safetensors.torch import load, save_file

    samples, _ = separable_group(learner.policy.module.config.vocab_size)
    probe = samples[0].prompt_ids + samples[0].response_ids
    before = learner.probe_logprobs(probe)
    blob = learner.publish_weights()
    assert isinstance(blob, bytes) and len(blob) > 1000
    zeros, trained = tmp_path / "zeros", tmp_path / "trained"
    for folder, state in ((zeros, {k: torch.zeros_like(v) for k, v in load(blob).items()}), (trained, load(blob))):
        folder.mkdir()
        save_file(state, str(folder / "model.safetensors"))
    learner.load_policy_from(str(zeros))
    uniform = -math.log(learner.policy.module.config.vocab_size)
    assert all(abs(x - uniform) < 1e-2 for x in learner.probe_logprobs(probe))
    learner.load_policy_from(str(trained))
    after = learner.probe_logprobs(probe)
    assert max(abs(a - b) for a, b in zip(before, after)) <= learner.cfg.sync_tolerance
