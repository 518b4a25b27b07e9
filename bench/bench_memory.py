"""Peak memory and time of one OREAL train step on this CPU, today's learner path against the
new one, next to the memory planner's estimate (`launch.planning.memory_plan`).

One in-process learner rank (world size 1, gloo, ZeRO-3, bfloat16, mode oreal: policy, token
RM and reference, no frozen steps) on a randomly initialised Qwen2-style model of 104.9M
parameters (hidden 1024, 3 layers of 16 heads, MLP 8192, vocabulary 16384). Few, wide layers:
at 8k tokens attention costs layers x hidden x tokens^2 and dominates a step on 2 cores, and
this shape keeps the whole benchmark near 12 minutes; the vocabulary is the 32k of a real
small model halved so that today's path at 8k fits this machine's RAM. One sample pair (one
positive, one negative) of 2,048 and of 8,192 tokens per sample (64 prompt tokens).

Paths (rows' `path`):
- `today`: gradient checkpointing off, no token budget (both samples in one micro-batch) and
  the log-probs of before this change, reproduced by monkeypatching `learner.loss.token_logprobs`
  and `learner.worker.token_logprobs` with `unchunked_token_logprobs`: one float32 log-softmax
  over the whole micro-batch and the full-vocabulary float32 entropy (the commit before the
  issue already chunked the log-probs row by row but took the entropy of whole float32 rows);
- `new`: checkpointing on for policy and RM, learner.max_tokens_per_micro_batch=8192 (one 8k
  sample per micro-batch, the two 2k ones together), chunked log-probs and entropy;
- `new_no_ckpt`: `new` without checkpointing (the step-time target compares the two).

Each path runs in a fresh process after one warm-up step (Adam's state exists from the first
step on), with glibc's `MALLOC_MMAP_THRESHOLD_` fixed at 64 KiB so that freed tensors go back
to the OS at once and the peak resident set (`learner.weight_sync.memory`: VmHWM, reset before
the step) follows live tensors rather than what glibc's heap happens to keep. `planned_mb` is
the planner's per-process estimate for the same config (`bench_config`). Row keys:
`model_params`, `tokens_per_sample`, `path`, `peak_mb`, `step_s`, `planned_mb`, and
`static_mb` (resident before the step), `step_mb` (peak - static), `cpu_s` (the process's
CPU time in the step: less sensitive than wall time to other work on a shared machine, whose
1-minute load average before the step is `load_1m`).
Run: `python -m bench.bench_memory` (also in `make bench`); writes results/bench_memory.json.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from launch.state.provenance import invoked, stamp

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "bench_memory.json"
MB = 1 << 20
MODEL = ["model.tiny.hidden_size=1024", "model.tiny.num_layers=3", "model.tiny.num_heads=16",
         "model.tiny.intermediate_size=8192", "model.tiny.vocab_size=16384",
         "model.tiny.max_position_embeddings=16384"]
TOKENS = (2048, 8192)
PROMPT = 64
WARMUP_TOKENS = 256
BUDGET = 8192
PATHS = {
    "today": dict(gradient_checkpointing=False, budget=None, chunked=False),
    "new": dict(gradient_checkpointing=True, budget=BUDGET, chunked=True),
    "new_no_ckpt": dict(gradient_checkpointing=False, budget=BUDGET, chunked=True),
}
# Targets at 8k tokens (the issue).
TARGET_MEMORY_RATIO, TARGET_TIME_RATIO, TARGET_PLAN_ERROR = 0.25, 1.4, 0.25
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def bench_config(path: str, tokens: int, model: list[str] | None = None):
    """The TrainConfig of one row (composed like `launch.train`): the planner reads it, the
    child builds its learner from it."""
    from launch.plan import compose

    p = PATHS[path]
    budget = "null" if p["budget"] is None else p["budget"]
    return compose([*(MODEL if model is None else model), "learner.world_size=1", "learner.backend=gloo",
                    "learner.dtype=bfloat16", "learner.micro_batch_size=2",
                    f"learner.gradient_checkpointing={p['gradient_checkpointing']}",
                    f"learner.max_tokens_per_micro_batch={budget}", f"rollout.max_model_len={tokens}",
                    "algo.mode=oreal", "algo.actor_freeze_steps=0", "model.warmup.enabled=false"])


def planned_mb(path: str, tokens: int, model: list[str] | None = None) -> tuple[float, float]:
    """(peak, model state + process) MiB of one learner process, as planned."""
    from launch.planning.memory_plan import LOGPROB_CHUNK_TOKENS, build_plan
    from launch.planning.model_shape import load_shape

    cfg = bench_config(path, tokens, model)
    chunk = LOGPROB_CHUNK_TOKENS if PATHS[path]["chunked"] else None
    rank = build_plan(cfg, load_shape(cfg.model.path, cfg.model.tiny), chunk).rank
    return rank.peak / MB, rank.static / MB


def unchunked_token_logprobs(logits, input_ids, chunk_tokens=1024, with_entropy=False):
    """Today's log-probs (same signature as `learner.loss.token_logprobs`): one float32
    log-softmax over the whole micro-batch, kept for backward, and the full-vocabulary float32
    entropy of it, without gradient (as the worker's metric was)."""
    import torch

    lp = torch.log_softmax(logits[:, :-1].float(), -1)
    logp = lp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    if not with_entropy:
        return logp, None
    with torch.no_grad():
        return logp, -(lp.exp() * lp).sum(-1)


def pair(tokens: int):
    """One positive and one negative sample of `tokens` tokens (prompt + response)."""
    import random

    from learner.batch import TrainSample

    rng = random.Random(tokens)
    prompt = tuple(rng.randrange(3, 500) for _ in range(PROMPT))
    return [TrainSample(prompt, tuple(rng.randrange(3, 500) for _ in range(tokens - PROMPT)), r, r * 2.0)
            for r in (1.0, -1.0)]


def child(path: str, tokens: tuple[int, ...], model: list[str] | None) -> None:
    """One path in this (fresh) process: prints one `BENCH_ROW {json}` line per token size."""
    import gc

    import learner.loss
    import learner.worker
    from launch.model.tiny_model import ensure_tiny_model
    from learner.batch import GlobalCounts, shard
    from learner.weight_sync import memory

    cfg = bench_config(path, max(tokens), model)
    model_path = ensure_tiny_model(cfg.model.tiny)
    if not PATHS[path]["chunked"]:
        learner.loss.token_logprobs = learner.worker.token_logprobs = unchunked_token_logprobs
    w = learner.worker.LearnerWorker(0, cfg.learner, cfg.algo, model_path, seed=0, total_steps=10)
    w.setup(*w.master_address())

    def step(samples, i: int) -> tuple[float, float, float, float]:
        mbs = shard(samples, 1, cfg.learner.micro_batch_size, cfg.learner.max_tokens_per_micro_batch)[0]
        gc.collect()
        base = memory.reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        w.train_step(mbs, GlobalCounts.of(samples), i)
        return time.perf_counter() - t0, time.process_time() - c0, base, memory.peak()

    step(pair(WARMUP_TOKENS), 0)
    for i, n in enumerate(tokens, 1):
        load = os.getloadavg()[0]
        dt, cpu, base, peak = step(pair(n), i)
        row = dict(tokens_per_sample=n, path=path, peak_mb=round(peak / MB, 1), step_s=round(dt, 2),
                   cpu_s=round(cpu, 1), static_mb=round(base / MB, 1), step_mb=round((peak - base) / MB, 1),
                   load_1m=round(load, 2))
        print("BENCH_ROW " + json.dumps(row), flush=True)


def _available_mb() -> float:
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) / 1024


def run_path(path: str, tokens: tuple[int, ...], model: list[str] | None, wait_s: float = 600) -> list[dict]:
    """The rows of one path from a child process; waits (up to `wait_s`) for free RAM of 1.2x
    the planned peak, and returns a skipped row per token size if it never comes."""
    need = 1.2 * max(planned_mb(path, n, model)[0] for n in tokens)
    deadline = time.monotonic() + wait_s
    while _available_mb() < need and time.monotonic() < deadline:
        print(f"  {path}: waiting for {need:.0f} MiB of free RAM ({_available_mb():.0f} available)", flush=True)
        time.sleep(30)
    if _available_mb() < need:
        return [dict(tokens_per_sample=n, path=path, skipped=f"less than {need:.0f} MiB of RAM free") for n in tokens]
    argv = [sys.executable, "-m", "bench.bench_memory", "--child", path, "--tokens", *map(str, tokens)]
    if model is not None:
        argv += ["--model", *model]
    proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, **CHILD_ENV}, capture_output=True, text=True)
    rows = [json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("BENCH_ROW ")]
    if proc.returncode != 0 or len(rows) != len(tokens):
        raise RuntimeError(f"bench_memory child {path} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return rows


def targets(rows: list[dict], at: int) -> dict:
    """The issue's three targets at `at` tokens per sample, each with its numbers."""
    by = {r["path"]: r for r in rows if r["tokens_per_sample"] == at and "peak_mb" in r}
    out: dict = {}
    if "today" in by and "new" in by:
        ratio = by["new"]["peak_mb"] / by["today"]["peak_mb"]
        step_ratio = by["new"]["step_mb"] / by["today"]["step_mb"]
        out["memory"] = dict(target=f"new peak <= {TARGET_MEMORY_RATIO} x today's", ratio=round(ratio, 3),
                             met=ratio <= TARGET_MEMORY_RATIO, step_mb_ratio=round(step_ratio, 3),
                             step_mb_met=step_ratio <= TARGET_MEMORY_RATIO)
    if "new" in by and "new_no_ckpt" in by:
        ratio = by["new"]["step_s"] / by["new_no_ckpt"]["step_s"]
        cpu = by["new"].get("cpu_s", 0) / max(by["new_no_ckpt"].get("cpu_s", 0), 1e-9)
        out["time"] = dict(target=f"checkpointing <= {TARGET_TIME_RATIO} x the time without", ratio=round(ratio, 3),
                           met=ratio <= TARGET_TIME_RATIO, cpu_ratio=round(cpu, 3), cpu_met=cpu <= TARGET_TIME_RATIO)
    errors = {p: round(r["planned_mb"] / r["peak_mb"] - 1, 3) for p, r in by.items()}
    if errors:
        out["planner"] = dict(target=f"|planned / measured - 1| <= {TARGET_PLAN_ERROR}", errors=errors,
                              met=all(abs(e) <= TARGET_PLAN_ERROR for e in errors.values()))
    return out


def table(rows: list[dict]) -> str:
    head = (f"{'tokens':>7s} {'path':12s} {'peak MB':>9s} {'planned MB':>11s} {'static MB':>10s} {'step MB':>8s} "
            f"{'step s':>8s} {'CPU s':>7s} {'load':>5s}")
    lines = [head]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['tokens_per_sample']:>7d} {r['path']:12s} skipped: {r['skipped']}")
            continue
        lines.append(f"{r['tokens_per_sample']:>7d} {r['path']:12s} {r['peak_mb']:9.0f} {r['planned_mb']:11.0f} "
                     f"{r['static_mb']:10.0f} {r['step_mb']:8.0f} {r['step_s']:8.1f} {r['cpu_s']:7.1f} {r['load_1m']:5.2f}")
    return "\n".join(lines)


def run(tokens: tuple[int, ...] = TOKENS, model: list[str] | None = None, out: Path | None = OUT,
        paths: list[str] | None = None) -> dict:
    from launch.planning.memory_plan import build_plan  # noqa: F401  (fail early if the planner is broken)
    from launch.planning.model_shape import load_shape

    cfg = bench_config("new", max(tokens), model)
    params = load_shape(None, cfg.model.tiny).params
    rows = []
    for path in paths or PATHS:
        t0 = time.perf_counter()
        for r in run_path(path, tokens, model):
            r["model_params"] = params
            if "peak_mb" in r:
                r["planned_mb"] = round(planned_mb(path, r["tokens_per_sample"], model)[0], 1)
            rows.append(r)
        print(f"  {path}: {time.perf_counter() - t0:.0f} s", flush=True)
    result = dict(rows=rows, targets=targets(rows, max(tokens)), model=MODEL if model is None else model,
                  dtype="bfloat16", world_size=1, budget_tokens=BUDGET, malloc=CHILD_ENV)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"provenance": stamp(invoked("bench.bench_memory")), **result}, indent=1) + "\n")
    return result


def main(args: list[str] | None = None) -> None:
    """`make bench` calls it without arguments; `--tokens N ...`, `--model <overrides>` and
    `--paths P ...` make a custom run (nothing written); `--child PATH` is one path's process."""
    args = list(args or [])
    tokens = tuple(int(a) for a in _opt(args, "--tokens")) or TOKENS
    model, paths = _opt(args, "--model") or None, _opt(args, "--paths") or None
    if args and args[0] == "--child":
        return child(args[1], tokens, model)
    full = model is None and tokens == TOKENS and paths is None
    result = run(tokens, model, OUT if full else None, paths)
    print(table(result["rows"]))
    for name, t in result["targets"].items():
        print(f"target {name} at {max(tokens)} tokens: {'MET' if t['met'] else 'NOT MET'}: {json.dumps(t)}")
    print(f"written {OUT}" if full else "(a custom run: nothing written)")


def _opt(args: list[str], flag: str) -> list[str]:
    """The values after `flag` up to the next --flag."""
    if flag not in args:
        return []
    rest = args[args.index(flag) + 1:]
    return rest[: next((i for i, a in enumerate(rest) if a.startswith("--")), len(rest))]


if __name__ == "__main__":
    main(sys.argv[1:])
