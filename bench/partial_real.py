"""`python -m bench.partial_real`: partial rollouts (`rollout.partial`) in the real loop on this
machine, on a task whose response lengths have a long tail (`task=arith_long_tail`: the count
of numbers per problem follows a power law, so a few responses are ten times the median).

The same seed, the same settings, `rollout.partial` off and on, each a fresh
`python -m launch.train`: the median step time (`perf/step_s`) and generation time over the
steps that trained, the response lengths the run drew (from its rollout record), the carried
and dropped samples, and held-out pass@1 before and after. What partial rollouts can save is
bounded by generation's share of the step: on two shared cores the learner's share is large,
so the step gains less than the generation does; both are reported as measured.

Beside the loop, the engine alone (`engine_alone`: one in-process vLLM engine, the warmed-up
policy, eight calls of 32 fresh queries, plain against partial with the cut samples carried
from call to call) separates what partial rollouts save in decode steps, what a GPU's step
time follows (a decode step costs about the same for 1 or 256 sequences there), from what
they save in seconds here, where a decode step's cost grows with the sequences in it.

Writes results/partial_rollouts.json and prints a table. `--steps N` (default 30), `--seeds`
(default 0 1).
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


def generated_tokens(run_dir: Path) -> dict[int, int]:
    """Tokens generated in each step (by the version that sampled them, = step - 1 on-policy),
    from the recorded samples' segments: a carried sample's tokens count where they were made."""
    from launch.records import read_step

    out: dict[int, int] = {}
    for f in (run_dir / "rollouts").glob("step_*.jsonl"):
        for r in read_step(f)[0]:
            for version, n in r["segments"]:
                out[version] = out.get(version, 0) + n
    return out


def summarise(rows: list[dict[str, Any]], run_dir: Path, wall_s: float) -> dict[str, Any]:
    from bench.pipeline_real import timed_rows

    trained = timed_rows(rows)
    evals = [r["eval/pass1"] for r in rows if "eval/pass1" in r]
    gen = [r.get("timing_s/generate_ahead", r["timing_s/generate"]) for r in trained]
    steps = [r for r in rows if "rollout/samples" in r]
    made = generated_tokens(run_dir)  # the work each step's generation did, whatever trained
    tok_s = [made.get(r["step"] - 1, 0) / r["timing_s/generate"] for r in trained if "timing_s/generate_ahead" not in r]
    return {"step_s_median": statistics.median(r["perf/step_s"] for r in trained),
            "generate_s_median": statistics.median(gen),
            "train_s_median": statistics.median(r["timing_s/train"] for r in trained),
            "generated_tokens_per_step": statistics.mean(made.get(r["step"] - 1, 0) for r in trained),
            "generate_tok_s_median": statistics.median(tok_s) if tok_s else None,
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


def engine_alone(calls: int = 8, queries: int = 32) -> dict[str, Any]:
    """Per call, plain and partial (budget 0.9, the cut samples continued in the next call):
    seconds and decode steps (the most tokens any request generated in the call). Medians over
    the calls after the first (partial's first has nothing carried yet)."""
    from transformers import AutoTokenizer

    from actors.engine import RolloutEngine
    from bench.bench_peer import compose_config
    from launch.data.tasks import load_task, task_prompt
    from launch.roles import prepare_policy

    cfg = compose_config([*SETTING, "rollout.in_process_engine=true"])
    splits = load_task(cfg.task)
    path = prepare_policy(cfg, splits)
    tok = AutoTokenizer.from_pretrained(path)
    engine = RolloutEngine(cfg.rollout, path, seed=0)
    prompt = {p.id: task_prompt(tok, p.question, cfg.task) for p in splits.train[:calls * queries]}
    carried: dict[str, list] = {}
    rows = []
    for c in range(calls):
        ids = [p.id for p in splits.train[c * queries:(c + 1) * queries]]
        t = time.perf_counter()
        plain = dict(engine.generate_stream(ids, [prompt[i] for i in ids], seeds=list(range(len(ids)))))
        plain_s = time.perf_counter() - t
        every = ids + list(carried)
        prefixes = [None] * len(ids) + list(carried.values())
        t = time.perf_counter()
        part = dict(engine.generate_stream(every, [prompt[i] for i in every], seeds=list(range(len(every))),
                                           prefixes=prefixes, partial_budget=cfg.rollout.partial_budget))
        part_s = time.perf_counter() - t
        carried = {every[i]: [r for r in g if r.cut] for i, g in part.items() if any(r.cut for r in g)}
        rows.append({"plain_s": plain_s, "partial_s": part_s,
                     "plain_decode_steps": max(len(r.response_ids) for g in plain.values() for r in g),
                     "partial_decode_steps": max(r.segments[-1][1] if r.segments else len(r.response_ids)
                                                 for g in part.values() for r in g),
                     "carried_samples": sum(len(v) for v in carried.values())})
    del engine
    steady = rows[1:]
    med = {k: statistics.median(r[k] for r in steady) for k in rows[0]}
    return {"calls": rows, "median": med, "queries_per_call": queries,
            "seconds_ratio": med["partial_s"] / med["plain_s"],
            "decode_steps_ratio": med["partial_decode_steps"] / med["plain_decode_steps"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from bench.bench_peer import set_env
    from launch.state.provenance import invoked, stamp

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args(argv)
    set_env()
    runs = [run_one(p, args.steps, seed, ROOT / ".cache" / "partial_real") for seed in args.seeds
            for p in (False, True)]
    print(f"{'seed':<4} {'rollout.partial':<16} {'step s':>7} {'generate s':>10} {'train s':>8} {'tokens/step':>11} "
          f"{'gen tok/s':>9} {'carried':>7} {'dropped':>7} {'pass@1':>15}")
    for r in runs:
        print(f"{r['seed']:<4} {str(r['partial']).lower():<16} {r['step_s_median']:7.2f} {r['generate_s_median']:10.2f} "
              f"{r['train_s_median']:8.2f} {r['generated_tokens_per_step']:11.0f} {r['generate_tok_s_median']:9.0f} "
              f"{r['partial_carried_total']:7.0f} "
              f"{r['partial_dropped_total']:7.0f} {r['pass1_before']:.3f} -> {r['pass1_after']:.3f}")
    L = runs[0]["lengths"]
    print(f"response tokens (seed {runs[0]['seed']}, off): median {L['median']:.0f}, p99 {L['p99']:.0f}, "
          f"max {L['max']:.0f} (p99/median {L['p99_over_median']:.1f})")

    def ratio(key: str) -> float:
        return statistics.mean(on[key] / off[key] for off, on in zip(runs[::2], runs[1::2]))

    out = {"provenance": stamp(invoked("bench.partial_real")), "setting": SETTING + [f"steps={args.steps}"],
           "seeds": args.seeds, "runs": runs, "step_s_ratio": ratio("step_s_median"),
           "generate_s_ratio": ratio("generate_s_median"),
           "pass1_after_diff": statistics.mean(on["pass1_after"] - off["pass1_after"]
                                               for off, on in zip(runs[::2], runs[1::2]))}
    print(f"partial / off (mean over seeds): step {out['step_s_ratio']:.2f}x, generation "
          f"{out['generate_s_ratio']:.2f}x; pass@1 after {out['pass1_after_diff']:+.3f}")
    out["engine_alone"] = e = engine_alone()
    print(f"engine alone, {e['queries_per_call']} queries a call (median of {len(e['calls']) - 1}): plain "
          f"{e['median']['plain_s']:.2f} s / {e['median']['plain_decode_steps']:.0f} decode steps, partial "
          f"{e['median']['partial_s']:.2f} s / {e['median']['partial_decode_steps']:.0f} decode steps "
          f"({e['seconds_ratio']:.2f}x the seconds, {e['decode_steps_ratio']:.2f}x the decode steps)")
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "partial_rollouts.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
