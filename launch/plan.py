"""`python -m launch.plan [hydra overrides]`: the memory plan of a run, before any process
starts. Composes conf/train.yaml exactly as `launch.train` does (same overrides, e.g.
`+experiment=paper_7b`), prints per learner model and per engine what one GPU (or the CPU
node) will hold, and exits 0 when it fits, 1 with one line per problem naming the keys to
change. `launch.train` runs the same check first (`plan.check=false` skips it).

Example (the paper preset on 8 x 80 GB, `model.path` a local Qwen2.5-7B folder), in GiB::

    model: 7.62B params: hidden 3584, 28 layers, 28 heads / 4 KV heads of 128, MLP 18944, vocab 152064
    learner: 8 rank(s), one GPU each (plan.gpu_memory_gib=80), ZeRO-3, bfloat16; micro-batch 1 x 17408 ...
      GiB per rank        params  weights   grads  optimizer  buffers  on device  offloaded
      policy               7.62B     1.77    1.77      10.64     0.93      15.12       0.00
      rm                   7.07B     1.65    1.65       9.88     0.93      14.10       0.00
      reference            7.62B     1.77    0.00       0.00     0.00       1.77       0.00
      activations         no ckpt    ckpt   (one micro-batch; the used one marked *)
      policy + logits      117.64   15.32*
      rm                   108.23    9.68*
      ...
      peak per rank: 30.99 model state + max(compute 17.44, optimizer step 7.09) = 48.43 of 77.00 GiB usable
    engines: 4 engine(s) of 1 GPU(s), bfloat16; per GPU: weights 14.19 + KV cache 51.81 (...) + vLLM 2.00 = 68.00 GiB
    ...
    fits
"""
from __future__ import annotations

import sys
from pathlib import Path

from launch.planning.memory_plan import GiB, MemoryPlan

ROOT = Path(__file__).resolve().parents[1]


def _g(x: float) -> str:
    return f"{x / GiB:.2f}"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def render(plan: MemoryPlan, cfg) -> str:
    """The plan as a table (GiB)."""
    r, e, lc, rc = plan.rank, plan.engine, cfg.learner, cfg.rollout
    where = (f"one GPU each (plan.gpu_memory_gib={cfg.plan.gpu_memory_gib:g})" if r.on_gpu
             else "on the CPU (one process each)")
    budget = f"(rows x rollout.max_model_len; learner.max_tokens_per_micro_batch={lc.max_tokens_per_micro_batch})"
    out = [f"model: {plan.shape.describe()}",
           f"learner: {lc.world_size} rank(s), {where}, ZeRO-{lc.zero_stage}, {lc.dtype}; micro-batch "
           f"{r.rows} x {r.seq_len} = {r.tokens} tokens {budget}",
           f"  {'GiB per rank':18s} {'params':>7s} {'weights':>8s} {'grads':>7s} {'optimizer':>10s} "
           f"{'buffers':>8s} {'on device':>10s} {'offloaded':>10s}"]
    for m in r.models:
        out.append(f"  {m.name:18s} {_count(m.params):>7s} {_g(m.weights):>8s} {_g(m.grads):>7s} "
                   f"{_g(m.optimizer):>10s} {_g(m.buffers):>8s} {_g(m.device):>10s} {_g(m.offloaded):>10s}")
    out.append(f"  {'activations':18s} {'no ckpt':>8s} {'ckpt':>7s}   (one micro-batch; the used one marked *)")
    for a in r.acts:
        mark = ("*", " ") if not a.checkpointing else (" ", "*")
        label = a.name + (" + logits" if a.name == "policy" else "")
        out.append(f"  {label:18s} {_g(a.no_ckpt):>8s}{mark[0]} {_g(a.ckpt):>6s}{mark[1]}")
    chunk = "whole micro-batch" if r.chunk_tokens is None else f"{r.chunk_tokens} tokens"
    out.append(f"  of which logits [{r.tokens} x {plan.shape.vocab_size}] and their gradient / the reference's "
               f"{_g(r.logits)}, log-prob chunk ({chunk}, float32 x 3) {_g(r.chunk)}")
    out.append(f"  ZeRO-3 gathered module + gradient + prefetch {_g(r.gathered)}; optimizer step (transient) "
               f"{_g(r.step)}" + (f"; process {_g(r.process)}" if r.process else ""))
    compute = max([a.used for a in r.acts], default=0.0) + r.gathered
    limit = f" of {_g(plan.gpu_budget)} GiB usable" if r.on_gpu else " GiB"
    out.append(f"  peak per rank: {_g(r.static)} model state + max(compute {_g(compute)}, optimizer step "
               f"{_g(r.step)}) = {_g(r.peak)}{limit}")
    if e.on_gpu:
        src = (f"rollout.kv_cache_gib={rc.kv_cache_gib:g}" if rc.kv_cache_gib > 0
               else f"rollout.gpu_memory_utilization={rc.gpu_memory_utilization:g} x {cfg.plan.gpu_memory_gib:g} "
                    "- weights - vLLM")
        what = f"{rc.num_engines} engine(s) of {rc.tensor_parallel_size} GPU(s), {rc.dtype}"
    else:
        src, what = f"rollout.kv_cache_gib={rc.kv_cache_gib:g}", f"{rc.num_engines} engine(s) on the CPU, {rc.dtype}"
    per = "per GPU" if e.on_gpu else "per engine"
    out.append(f"engines: {what}; {per}: weights {_g(e.weights)} + KV cache {_g(max(e.kv_cache, 0))} ({src}) + "
               f"vLLM {_g(e.overhead)} = {_g(e.total)} GiB")
    draws = ("prompts_per_step" if cfg.max_prompts_per_step == cfg.prompts_per_step
             else "the largest step's queries, algo.rm_only_prompts_per_step")
    out.append(f"  batch: {e.sequences} sequences per engine ({draws} / num_engines x n_samples), "
               f"KV {_g(e.kv_per_seq)} GiB each at max_model_len {rc.max_model_len}: {e.concurrent} fit at once")
    if not (r.on_gpu and e.on_gpu):
        out.append(f"CPU node: {_g(plan.node_total)} of {_g(plan.node_budget)} GiB (ranks, engines, Ray, verifiers)")
    out += [f"note: {n}" for n in plan.notes]
    out += ["fits"] if plan.fits else [f"DOES NOT FIT: {p}" for p in plan.problems]
    return "\n".join(out)


def plan_for(cfg) -> MemoryPlan:
    """The checked plan of a TrainConfig (reads the model's config.json, no weights)."""
    from launch.planning.model_shape import load_shape
    from launch.planning.plan_check import check

    return check(cfg, load_shape(cfg.model.path, cfg.model.tiny))


def run_check(cfg) -> int:
    """Print the plan; 0 when it fits, 1 when not (each problem one line on stderr too)."""
    from launch.planning.model_shape import ShapeError

    try:
        plan = plan_for(cfg)
    except ShapeError as e:
        print(f"memory plan: {e}", file=sys.stderr, flush=True)
        return 1
    print(render(plan, cfg), flush=True)
    for p in plan.problems:
        print(f"memory plan: {p}", file=sys.stderr, flush=True)
    return 0 if plan.fits else 1


def compose(overrides: list[str]):
    """conf/train.yaml with `overrides`, into the typed TrainConfig (as launch.train does,
    without Hydra's run folder or logging)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from launch.config import register_configs, to_train_config

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_train_config(hydra_compose(config_name="train", overrides=overrides))


def main(argv: list[str]) -> int:
    return run_check(compose(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
