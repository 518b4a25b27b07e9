"""The memory plan against the hardware: one line per part that cannot fit, naming the keys
that would fix it. For the learner and a CPU node each candidate change is planned again,
alone, and the line says what it would need, e.g.

    learner rank: needs 150.8 GiB per GPU > 77.0 GiB (plan.gpu_memory_gib=80 - plan.gpu_reserve_gib=3);
    change learner.gradient_checkpointing=true (48.4 GiB, fits) | learner.world_size=1024 (121.9 GiB) |
    learner.offload_optimizer=[policy,rm] (126.8 GiB) | ...; or shorter samples (rollout.max_model_len)

(the paper preset with `learner.gradient_checkpointing=false`). When no single change fits,
the first ones are also planned together ("... together (54.4 GiB, fits)").
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from launch.planning.memory_plan import RAY_GIB, VERIFIER_WORKER_GIB, GiB, MemoryPlan, build_plan
from launch.planning.model_shape import ModelShape

if TYPE_CHECKING:
    from launch.config import TrainConfig

Change = tuple[str, Callable[["TrainConfig"], "TrainConfig"]]


def learner_device(plan: MemoryPlan, cfg: TrainConfig) -> float:
    """What one learner GPU holds: its rank, plus engine i when colocated."""
    return plan.rank.peak + (plan.engine.total if cfg.learner.colocate and plan.engine.on_gpu else 0.0)


def failures(plan: MemoryPlan, cfg: TrainConfig) -> dict[str, float]:
    """{'learner' | 'engine' | 'node': bytes needed} for each part over its budget."""
    out: dict[str, float] = {}
    if plan.rank.on_gpu and learner_device(plan, cfg) > plan.gpu_budget:
        out["learner"] = learner_device(plan, cfg)
    e = plan.engine
    over_gpu = e.on_gpu and not cfg.learner.colocate and e.total > plan.gpu_budget
    if over_gpu or e.kv_cache < e.kv_per_seq:
        out["engine"] = e.total
    if plan.node_total > plan.node_budget:
        out["node"] = plan.node_total
    return out


def check(cfg: TrainConfig, shape: ModelShape) -> MemoryPlan:
    """The plan, with `problems` (empty when it fits) and `notes`."""
    plan = build_plan(cfg, shape)
    for part, need in failures(plan, cfg).items():
        plan.problems.append(_PROBLEM[part](cfg, shape, plan, need))
    e = plan.engine
    if e.sequences > e.concurrent >= 1:
        plan.notes.append(f"each engine's KV cache holds {e.concurrent} of its {e.sequences} sequences of "
                          f"rollout.max_model_len={cfg.rollout.max_model_len} at once; vLLM queues the rest")
    if plan.rank.offloaded:
        plan.notes.append(f"offloaded to CPU memory: {plan.rank.offloaded / GiB:.1f} GiB per learner rank")
    return plan


# --------------------------------------------------------------------------- remedies
def _learner(cfg: TrainConfig, **changes) -> TrainConfig:
    return replace(cfg, learner=replace(cfg.learner, **changes))


def _rollout(cfg: TrainConfig, **changes) -> TrainConfig:
    return replace(cfg, rollout=replace(cfg.rollout, **changes))


def _learner_changes(cfg: TrainConfig, plan: MemoryPlan, world_sizes: list[int]) -> list[Change]:
    lc, out = cfg.learner, []
    if not lc.gradient_checkpointing:
        out.append(("learner.gradient_checkpointing=true", lambda c: _learner(c, gradient_checkpointing=True)))
    if lc.rm_gradient_checkpointing is False and cfg.algo.uses_rm:
        out.append(("learner.rm_gradient_checkpointing=true", lambda c: _learner(c, rm_gradient_checkpointing=True)))
    if plan.rank.rows > 1:
        seq = plan.rank.seq_len
        out.append((f"learner.max_tokens_per_micro_batch={seq}", lambda c: _learner(c, max_tokens_per_micro_batch=seq)))
    if plan.rank.on_gpu and lc.zero_stage >= 1:
        trained = [m.name for m in plan.rank.models if m.optimizer]
        if trained:
            opt = sorted(set(lc.offload_optimizer) | set(trained), key=["policy", "rm"].index)
            out.append((f"learner.offload_optimizer=[{','.join(opt)}]", lambda c: _learner(c, offload_optimizer=opt)))
    if plan.rank.on_gpu and lc.zero_stage == 3 and any(m.weights for m in plan.rank.models):
        every = [m.name for m in plan.rank.models]
        out.append((f"learner.offload_params=[{','.join(every)}]", lambda c: _learner(c, offload_params=every)))
    for n in world_sizes:
        out.append((f"learner.world_size={n}", lambda c, n=n: _learner(c, world_size=n)))
    return out


def _evaluate(cfg: TrainConfig, shape: ModelShape, part: str, changes: list[Change]) -> list[str]:
    """'key=value (X GiB[, fits])' per change that is a valid config and lowers the need,
    fitting ones first. Of the world sizes tried (in order) only the first that fits is
    kept, or, when none does, the one needing least."""
    now = _need(cfg, shape, part)
    rows, sizes = [], []
    for text, apply in changes:
        try:
            new = apply(cfg)
        except ValueError:  # e.g. colocate pins world_size to num_engines
            continue
        need = _need(new, shape, part)
        ok = part not in failures(build_plan(new, shape), new)
        if need < now or ok:
            row = (not ok, need, f"{text} ({need / GiB:.1f} GiB{', fits' if ok else ''})")
            (sizes if text.startswith("learner.world_size=") else rows).append(row)
    fitting = [r for r in sizes if not r[0]]
    rows += fitting[:1] or sorted(sizes)[:1]
    out = [r[2] for r in sorted(rows)]
    if not any(not r[0] for r in rows):  # no single change fits: the first ones together
        joint = _together(cfg, shape, part, [c for c in changes if not c[0].startswith("learner.world_size=")])
        out = ([joint] if joint else []) + out
    return out


def _together(cfg: TrainConfig, shape: ModelShape, part: str, changes: list[Change]) -> str | None:
    """The shortest prefix of `changes`, applied together, that fits (as one remedy)."""
    texts = []
    for text, apply in changes:
        try:
            cfg = apply(cfg)
        except ValueError:
            continue
        texts.append(text)
        if len(texts) > 1 and part not in failures(build_plan(cfg, shape), cfg):
            return f"{' '.join(texts)} together ({_need(cfg, shape, part) / GiB:.1f} GiB, fits)"
    return None


def _need(cfg: TrainConfig, shape: ModelShape, part: str) -> float:
    plan = build_plan(cfg, shape)
    return {"learner": learner_device(plan, cfg), "engine": plan.engine.total, "node": plan.node_total}[part]


def _learner_problem(cfg: TrainConfig, shape: ModelShape, plan: MemoryPlan, need: float) -> str:
    pc, n = cfg.plan, cfg.learner.world_size
    changes = _learner_changes(cfg, plan, [n * 2 ** k for k in range(1, 8)])
    if cfg.learner.colocate:
        room = (plan.gpu_budget - plan.rank.peak) / GiB
        changes.append((f"rollout.gpu_memory_utilization<={max(room, 0) / pc.gpu_memory_gib:.2f}",
                        lambda c: _rollout(c, gpu_memory_utilization=max(room, 0.01) / pc.gpu_memory_gib)))
    what = "learner rank + colocated engine" if cfg.learner.colocate else "learner rank"
    return (f"{what}: needs {need / GiB:.1f} GiB per GPU > {plan.gpu_budget / GiB:.1f} GiB (plan.gpu_memory_gib="
            f"{pc.gpu_memory_gib:g} - plan.gpu_reserve_gib={pc.gpu_reserve_gib:g}); change "
            + " | ".join(_evaluate(cfg, shape, "learner", changes) or ["plan.gpu_memory_gib (bigger GPUs)"])
            + "; or shorter samples (rollout.max_model_len)")


def _engine_problem(cfg: TrainConfig, shape: ModelShape, plan: MemoryPlan, need: float) -> str:
    rc, e, gpu = cfg.rollout, plan.engine, cfg.plan.gpu_memory_gib
    head = (f"engine: weights {e.weights / GiB:.1f} GiB + KV cache {max(e.kv_cache, 0) / GiB:.1f} GiB"
            f" + {e.overhead / GiB:.1f} GiB vLLM; one sequence of rollout.max_model_len={rc.max_model_len} "
            f"needs {e.kv_per_seq / GiB:.2f} GiB of KV")
    if not e.on_gpu:
        return f"{head}: raise rollout.kv_cache_gib to >= {e.kv_per_seq / GiB:.2f} or lower rollout.max_model_len"
    if rc.kv_cache_gib > 0:
        fix = (f"rollout.kv_cache_gib (>= {e.kv_per_seq / GiB:.2f} GiB and <= "
               f"{(plan.gpu_budget - e.weights - e.overhead) / GiB:.1f} GiB)")
    else:
        least = (e.weights + e.overhead + e.kv_per_seq) / GiB / gpu
        fix = (f"rollout.gpu_memory_utilization>={least:.2f}" if least <= 1 - cfg.plan.gpu_reserve_gib / gpu
               else "rollout.gpu_memory_utilization")
    return (f"{head}; per GPU (plan.gpu_memory_gib={gpu:g}) that does not fit: change {fix} | "
            f"rollout.tensor_parallel_size={2 * rc.tensor_parallel_size} (with rollout.num_gpus_per_actor) | "
            f"a smaller rollout.max_model_len")


def _node_problem(cfg: TrainConfig, shape: ModelShape, plan: MemoryPlan, need: float) -> str:
    rc, lc = cfg.rollout, cfg.learner
    ray = RAY_GIB + cfg.verifier.num_workers * VERIFIER_WORKER_GIB
    parts = [f"Ray and {cfg.verifier.num_workers} verifiers {ray:.1f} GiB"]
    changes: list[Change] = []
    if not plan.rank.on_gpu:
        parts.insert(0, f"{lc.world_size} learner rank(s) x {plan.rank.peak / GiB:.1f} GiB")
        changes += _learner_changes(cfg, plan, sorted({n for n in (lc.world_size // 2, 1) if 1 <= n < lc.world_size},
                                                      reverse=True))
    if not plan.engine.on_gpu:
        parts.insert(1, f"{rc.num_engines} engine(s) x {plan.engine.total / GiB:.1f} GiB")
        if rc.kv_cache_gib > 1:
            changes.append((f"rollout.kv_cache_gib={rc.kv_cache_gib / 2:g}", lambda c: _rollout(c, kv_cache_gib=rc.kv_cache_gib / 2)))
        if rc.num_engines > 1:
            changes.append(("rollout.num_engines=1", lambda c: _rollout(c, num_engines=1)))
    budget = cfg.plan.cpu_memory_gib
    src = f"plan.cpu_memory_gib={budget:g}" if budget is not None else "this machine's RAM; plan.cpu_memory_gib sets it"
    fixes = _evaluate(cfg, shape, "node", changes) or ["a smaller model (model.path / model.tiny)"]
    return (f"CPU node: needs {need / GiB:.1f} GiB ({' + '.join(parts)}) > {plan.node_budget / GiB:.1f} GiB "
            f"({src}); change " + " | ".join(fixes))


_PROBLEM = {"learner": _learner_problem, "engine": _engine_problem, "node": _node_problem}
