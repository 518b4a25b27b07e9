"""Long samples at 7B widths under an 80 GB cap: one OREAL train step (policy, token RM and
reference; one rank, NCCL, ZeRO-3, bf16; gradient checkpointing on; token budget of one
16,384-token sample per micro-batch; chunked log-probs) on two 16,384-token samples.

The model has Qwen2.5-7B's widths (hidden 3584, 28 heads / 4 KV heads, MLP 18944, vocabulary
152064, untied head), so a token costs what it costs at 7B (a layer's activations, the
[tokens, 152064] logits), with random weights made on the GPU (`from_config` under ZeRO-3's
init, no weights on disk). It has 2 layers instead of 28: one rank cannot hold three 7B models'
ZeRO state (the real run shards it over 8 GPUs); 2 layers give 1.56B parameters, ~43 GiB of
model state, more than a rank of the 8-GPU run holds (~31 GiB), while the 26 missing layers'
checkpointed inputs would add only ~3 GiB. `launch.plan +experiment=paper_7b` plans the
real run; the planner's figure for this one is printed next to the measured peak.

On a GPU machine (torch, transformers, deepspeed; no Ray or vLLM needed), in about a minute:
`pytest -m gpu tests/gpu/test_gpu_memory.py -s`.
"""
from __future__ import annotations

import math
import time

import pytest

pytestmark = [pytest.mark.gpu]

GiB = 1 << 30
CAP = 80 * GiB
TOKENS = 16_384
PROMPT = 64
LAYERS = 2
QWEN_7B_WIDTHS = dict(hidden_size=3584, intermediate_size=18944, num_attention_heads=28, num_key_value_heads=4,
                      vocab_size=152064, max_position_embeddings=32768, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """config.json (7B widths, LAYERS layers) and a small tokenizer; no weights."""
    from transformers import Qwen2Config

    from launch.model.tiny_model import EOS_TOKEN, PAD_TOKEN, build_tokenizer

    folder = tmp_path_factory.mktemp("qwen7b-widths")
    tok = build_tokenizer(512, TOKENS)
    pad, eos = tok.convert_tokens_to_ids([PAD_TOKEN, EOS_TOKEN])
    Qwen2Config(**QWEN_7B_WIDTHS, num_hidden_layers=LAYERS, pad_token_id=pad, eos_token_id=eos, bos_token_id=pad,
                dtype="bfloat16").save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def random_init(path, dtype=None, **kwargs):
    """Stands in for `AutoModelForCausalLM.from_pretrained`: the same model with random
    weights, made under ZeRO-3's `zero.Init` (HfDeepSpeedConfig is alive) on the GPU."""
    from transformers import AutoConfig, AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)


def planned_gib(model_dir, learner_cfg, algo) -> float | None:
    """The memory planner's estimate for this rank (None where Hydra/omegaconf is missing)."""
    try:
        from actors.config import RolloutConfig
        from launch.config import ModelConfig, TrainConfig
        from launch.planning.memory_plan import build_plan
        from launch.planning.model_shape import load_shape
    except ImportError:
        return None
    cfg = TrainConfig(model=ModelConfig(path=str(model_dir)), learner=learner_cfg, algo=algo,
                      rollout=RolloutConfig(max_model_len=TOKENS, num_gpus_per_actor=1, dtype="bfloat16"))
    return build_plan(cfg, load_shape(cfg.model.path, cfg.model.tiny)).rank.peak / GiB


def test_one_oreal_step_of_two_16k_samples_at_7b_widths_fits_in_80gb(model_dir):
    import random

    import torch
    from transformers import AutoModelForCausalLM

    from learner.batch import GlobalCounts, TrainSample, shard
    from learner.config import AlgoConfig, LearnerConfig
    from learner.worker import LearnerWorker

    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, CAP / total))
    cfg = LearnerConfig(world_size=1, backend="auto", zero_stage=3, dtype="bfloat16", micro_batch_size=2,
                        max_tokens_per_micro_batch=TOKENS, gradient_checkpointing=True)
    algo = AlgoConfig(mode="oreal", actor_freeze_steps=0)
    try:
        t0 = time.perf_counter()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(AutoModelForCausalLM, "from_pretrained", random_init)
            worker = LearnerWorker(0, cfg, algo, str(model_dir), seed=0, total_steps=2)
            worker.setup(*worker.master_address())
        setup_s = time.perf_counter() - t0
        assert torch.distributed.get_backend() == "nccl"
        rng = random.Random(0)
        prompt = tuple(rng.randrange(3, 500) for _ in range(PROMPT))
        samples = [TrainSample(prompt, tuple(rng.randrange(3, 500) for _ in range(TOKENS - PROMPT)), r, r * 8 / 7)
                   for r in (1.0, -1.0)]
        mbs = shard(samples, 1, cfg.micro_batch_size, cfg.max_tokens_per_micro_batch)[0]
        assert [len(mb) for mb in mbs] == [1, 1]  # the budget holds one 16k sample per micro-batch
        state = torch.cuda.memory_allocated()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = worker.train_step(mbs, GlobalCounts.of(samples), step=0)
        torch.cuda.synchronize()
        step_s, peak = time.perf_counter() - t0, torch.cuda.max_memory_allocated()
        plan = planned_gib(model_dir, cfg, algo)
        params = sum(p.ds_numel for p in worker.policy.module.parameters())
        print(f"\n7B widths x {LAYERS} layers ({params / 1e9:.2f}B), 2 x {TOKENS} tokens: peak "
              f"{peak / GiB:.1f} GiB ({state / GiB:.1f} before it; Adam's state comes with the first step) under a "
              f"{CAP / GiB:.0f} GiB cap"
              + (f", planned {plan:.1f} GiB" if plan else "") + f"; set-up {setup_s:.0f} s, step {step_s:.1f} s")
        assert peak < CAP
        assert out["learner/policy_frozen"] == 0.0 and out["learner/tokens"] == 2 * (TOKENS - PROMPT)
        assert all(math.isfinite(out[k]) for k in ("learner/loss", "reward_model/loss", "learner/grad_norm"))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        if torch.distributed.is_initialized():
            import deepspeed.comm

            deepspeed.comm.destroy_process_group()
