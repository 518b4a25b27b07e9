"""DeepSpeed configs for the three learner models and their LR schedule."""
from __future__ import annotations

import math

import torch

from learner.config import OFFLOAD_MODELS, LearnerConfig, OptimConfig


def ds_config(cfg: LearnerConfig, optim: OptimConfig | None, model: str | None = None) -> dict:
    """ZeRO config; `optim=None` gives a frozen, inference-only engine (the reference).

    `model` ("policy", "rm" or "reference") picks that model's offload switches
    (`learner.offload_params`, `learner.offload_optimizer`); it may be left out only while
    no offload is configured, so that no model silently gets another's placement.
    """
    offload = _offload(cfg, optim, model)
    config: dict = {
        # We feed whole micro-batches ourselves; DeepSpeed's batch arithmetic only needs
        # to be consistent (train = micro x accumulation x world).
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": cfg.world_size,
        "zero_optimization": {"stage": cfg.zero_stage, **offload},
        "bf16": {"enabled": cfg.dtype == "bfloat16"},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if optim is not None:
        config["gradient_clipping"] = optim.grad_clip
        config["optimizer"] = {
            "type": "AdamW",
            "params": {
                "lr": optim.lr,
                "betas": list(optim.betas),
                "weight_decay": optim.weight_decay,
                # Plain torch AdamW: no 40 s fused_adam build on CPU; on GPU torch's own
                # fused/foreach kernels are fast.
                "torch_adam": True,
            },
        }
    return config


def _offload(cfg: LearnerConfig, optim: OptimConfig | None, model: str | None) -> dict:
    """ZeRO `offload_param` / `offload_optimizer` entries of one model: CPU memory, pinned
    only where there is a GPU to copy to (pinning needs CUDA). The optimizer step of an
    offloaded model runs on the CPU with torch's AdamW (`torch_adam`, no op to compile)."""
    if model is None:
        if cfg.offload_params or cfg.offload_optimizer:
            raise ValueError("ds_config needs `model` (policy, rm or reference) when learner.offload_params "
                             "or learner.offload_optimizer is set")
        return {}
    if model not in OFFLOAD_MODELS:
        raise ValueError(f"ds_config: model must be one of {OFFLOAD_MODELS}, got {model!r}")
    target = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    out = {}
    if model in cfg.offload_params:
        out["offload_param"] = dict(target)
    if model in cfg.offload_optimizer and optim is not None:
        out["offload_optimizer"] = dict(target)
    return out


def warmup_cosine(optimizer: torch.optim.Optimizer, optim: OptimConfig, total_steps: int):
    """Linear warm-up to `lr`, then cosine down to `min_lr` at `total_steps` (docs/algorithm.md step 7)."""
    floor = optim.min_lr / optim.lr

    def factor(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / (optim.warmup_steps + 1)
        span = max(1, total_steps - optim.warmup_steps)
        progress = min(1.0, (step - optim.warmup_steps) / span)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def grad_norm(engine) -> float:
    """The engine's global gradient norm of its last step (0 before any)."""
    norm = engine.get_global_grad_norm()
    return float(norm) if norm is not None else 0.0
