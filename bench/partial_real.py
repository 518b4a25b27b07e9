"""`python -m bench.partial_real`: partial rollouts (`rollout.partial`) in the real loop on this
machine, on a task whose response lengths have a long tail (`task=arith_long_tail`: the count
of numbers per problem follows a power law, so a few responses are ten times the median).

The same seed, the same settings, `rollout.partial` off and on, each a fresh
`python -m launch.train`: the median step time (`perf/step_s`) and generation time over the
steps that trained, the response lengths the run drew (from its rollout record), the carried
and dropped samples, and held-out pass@1 before and after. What partial rollouts can save is
bounded by generation's share of the step: on two shared cores the learner's share is large,
so the step gains less than the generation does; both are reported as measured.

Writes results/partial_rollouts.json and prints a table. `--steps N` (default 30).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SETTING = ["task=arith_long_tail", "rollout.max_new_tokens=400", "rollout.max_model_len=640", "eval_every=10"]


def lengths(run_dir: Path) -> dict[str, float]:
    """Response lengths in tokens over every recorded sample: median, p90, p99, max, p99/median."""
    from launch.records import read_step

    tokens = sorted(r["response_tokens"] for f in sorted((run_dir / "rollouts").glob("step_*.jsonl"))
                    for r in read_step(f)[0])
    med, p99 = statistics.median(tokens), tokens[int(0.99 * (len(tokens) - 1))]
    return {"median": med, "p90": tokens[int(0.9 * (len(tokens) - 1))], "p99": p99, "max": tokens[-1],
            "p99_over_median": p99 / med, "samples": len(tokens)}


def summarise(rows: list[dict[str, Any]], run_dir: Path, wall_s: float) -> dict[str, Any]:
    trained = [r for r in rows if "rollout/samples" in r and "learner/loss" in r][1:]  # the first: lazy set-up
    evals = [r["eval/pass1"] for r in rows if "eval/pass1" in r]
    gen = [r.get("timing_s/generate_ahead", r["timing_s/generate"]) for r in trained]
    steps = [r for r in rows if "rollout/samples" in r]
    return {"step_s_median": statistics.median(r["perf/step_s"] for r in trained),
            "generate_s_median": statistics.median(gen), "train_s_median": statistics.median(r["timing_s/train"] for r in trained),
            "steps_timed": len(trained), "samples_trained_per_step": statistics.mean(r["rollout/samples"] for r in steps),
            "partial_carried_total": sum(r.get("rollout/partial_carried", 0.0) for r in steps),
            "partial_dropped_total": sum(r.get("rollout/partial_dropped", 0.0) for r in steps),
            "segments_max": max((r.get("rollout/segments_max", 1.0) for r in steps), default=1.0),
            "pass1_before": evals[0] if evals else None, "pass1_after": evals[-1] if evals else None,
            "lengths": lengths(run_dir), "process_wall_s": wall_s}


def run_one(partial: bool, steps: int, seed: int, out_dir: Path) -> dict[str, Any]:
    run_dir = out_dir / f"partial-{'on' if partial else 'off'}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "launch.train", *SETTING, f"steps={steps}", f"seed={seed}",
           f"rollout.partial={str(partial).lower()}", "wandb.mode=disabled", "ckpt.enabled=false",
           "save_policy=false", f"ray.temp_dir={ROOT / '.cache' / 'ray'}", f"output_dir={run_dir}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"partial": partial, "seed": seed, "steps": steps, **summarise(rows, run_dir, time.perf_counter() - start)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from bench.bench_peer import set_env
    from launch.state.provenance import invoked, stamp

    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_known_args(argv)[1]
    steps = int(args[args.index("--steps") + 1]) if "--steps" in args else 30
    set_env()
    runs = [run_one(p, steps, 0, ROOT / ".cache" / "partial_real") for p in (False, True)]
    off, on = runs
    print(f"{'rollout.partial':<16} {'step s':>7} {'generate s':>10} {'train s':>8} {'samples/step':>12} "
          f"{'carried':>7} {'dropped':>7} {'pass@1':>15}")
    for r in runs:
        print(f"{str(r['partial']).lower():<16} {r['step_s_median']:7.2f} {r['generate_s_median']:10.2f} "
              f"{r['train_s_median']:8.2f} {r['samples_trained_per_step']:12.1f} {r['partial_carried_total']:7.0f} "
              f"{r['partial_dropped_total']:7.0f} {r['pass1_before']:.3f} -> {r['pass1_after']:.3f}")
    L = off["lengths"]
    print(f"response tokens (off): median {L['median']:.0f}, p99 {L['p99']:.0f}, max {L['max']:.0f} "
          f"(p99/median {L['p99_over_median']:.1f})")
    out = {"provenance": stamp(invoked("bench.partial_real")), "setting": SETTING + [f"steps={steps}", "seed=0"],
           "runs": runs, "step_s_ratio": on["step_s_median"] / off["step_s_median"],
           "generate_s_ratio": on["generate_s_median"] / off["generate_s_median"]}
    print(f"partial / off: step {out['step_s_ratio']:.2f}x, generation {out['generate_s_ratio']:.2f}x")
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "partial_rollouts.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
