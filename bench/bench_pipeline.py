"""`python -m bench.bench_pipeline`: step time on-policy (serial) and one step off-policy
(pipelined, `algo.max_staleness=1`), next to generation and training alone.

Scheduling, simulated: stand-in engines (`bench.standins`: log-normal response lengths, a
fixed decode speed, no model) in real Ray actors, the real verifier pool, and a stand-in
learner of fixed cost, through the real driver step (`launch.loop.rl_step`); the weight sync
is a stand-in of fixed cost (the engines take the new version). This measures what the
schedule does, not what a model costs: the limit it is measured against is
max(generate, train) + sync, what a perfect overlap would take.

Real, this machine (`bench.pipeline_real`): the demo and the long setting through
`python -m launch.train` in both modes, with the demo's start-up (launch to the first step)
stage by stage, next to two floors: the engine's processes each import vLLM, one after the
other (`startup_floor`: that import timed alone in a fresh interpreter, times the processes),
and the start-up's CPU-seconds over the machine's cores (`startup_cpu_floor` of each real run,
sampled over every process of the run by role in `startup_cpu_s`: on two cores every role
competes for them, so no order of the same work starts faster).

Long tail, simulated (`bench.long_tail`): lengths with p99 / median >= 10, the step with
partial rollouts (`rollout.partial`) against today's tail-bound step and the volume bound.

Writes results/bench_pipeline.json (`serial_step_s`, `pipelined_step_s`, `generate_alone_s`,
`train_alone_s`, `sync_s`, `ceiling_s`, `pipelined_over_ceiling`; `long_tail`; `real`,
`startup_s` (the median over the demo's launches), `startup_max_s`, `startup_runs`,
`startup_floor`) and prints a table. `--simulated-only` skips the real runs and keeps their
keys from the file as the last full run left them (`real_provenance` says which run).
"""
from __future__ import annotations

import dataclasses
import json
import random
import statistics
import sys
import time
from pathlib import Path

from launch.state.provenance import invoked, stamp

ROOT = Path(__file__).resolve().parents[1]
STEPS, QUERIES, K = 6, 16, 8
TRAIN_S, SYNC_S = 2.0, 0.2  # the stand-in learner's and sync's fixed costs
ENGINES = [{"tok_per_s": 400.0, "mean_tokens": 400.0}, {"tok_per_s": 400.0, "mean_tokens": 400.0}]
TARGET = 1.15  # pipelined <= 1.15 x max(generate, train) + sync
STARTUP_TARGET_S = 30.0  # the demo, launch to the first step, caches built


def _problems(step: int):
    from launch.data.problem import Problem

    return [Problem(str(100 * step + i), "stand-in", str(100 * step + i)) for i in range(QUERIES)]


def run_mode(roles, staleness: int) -> list[float]:
    """Wall seconds of each step after the first (the first has nothing generated ahead)."""
    from launch.config import TrainConfig
    from launch.loop import rl_step
    from learner.config import AlgoConfig

    cfg = dataclasses.replace(TrainConfig(), prompts_per_step=QUERIES,
                              algo=AlgoConfig(mode="reinforce", max_staleness=staleness))
    prompt = {p.id: "stand-in" for s in range(STEPS + 1) for p in _problems(s)}
    walls = []
    for step in range(STEPS):
        start = time.perf_counter()
        rl_step(cfg, roles, _problems(step), prompt, [1], step, random.Random(step), next_queries=_problems(step + 1))
        walls.append(time.perf_counter() - start)
    roles.ahead.wait()
    return walls[1:]


def main(real: bool = True) -> dict:
    """The simulated schedule, then (`real`) the loop itself on this machine in both modes and
    the demo's start-up launches (`bench.pipeline_real`, about 11 minutes); `--simulated-only`
    skips the latter."""
    import ray

    import learner.weight_sync as ws
    from actors.config import RolloutConfig
    from actors.group import RolloutGroup
    from bench.standins import StandInEngine, StandInLearner, StandInRoles, stand_in_sync
    from launch.ray_connect import ray_temp_dir
    from launch.streaming import generate_and_grade
    from verifier import VerifierConfig, VerifierPool

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR",
                 _temp_dir=ray_temp_dir(str(ROOT / ".cache" / "ray_bp")))
    real_sync, ws.sync_weights = ws.sync_weights, stand_in_sync(SYNC_S)
    cfg = RolloutConfig(num_engines=len(ENGINES), n_samples=K, max_new_tokens=4000, num_cpus_per_actor=0.1)
    rollout = RolloutGroup(cfg, "stand-in", seed=0, engine_cls=StandInEngine, engine_kwargs=ENGINES)
    pool = VerifierPool(VerifierConfig(num_workers=2))
    try:
        roles = StandInRoles(rollout, pool, StandInLearner(TRAIN_S))
        gen = []  # the very steps the modes run (same queries, same seeds: same lengths)
        for step in range(1, STEPS):
            ids = [p.id for p in _problems(step)]
            t0 = time.perf_counter()
            generate_and_grade(rollout, pool, ids, ["stand-in"] * QUERIES, ids, seed_key=(0, step))
            gen.append(time.perf_counter() - t0)
        serial, pipelined = run_mode(roles, 0), run_mode(roles, 1)
        from bench import long_tail

        tail = long_tail.run(pool=pool)
    finally:
        ws.sync_weights = real_sync
        rollout.shutdown()
        pool.shutdown()
        if started:
            ray.shutdown()
    generate_s = statistics.median(gen)
    ceiling = max(generate_s, TRAIN_S) + SYNC_S
    out = {"serial_step_s": statistics.median(serial), "pipelined_step_s": statistics.median(pipelined),
           "generate_alone_s": generate_s, "train_alone_s": TRAIN_S, "sync_s": SYNC_S, "ceiling_s": ceiling,
           "pipelined_over_ceiling": statistics.median(pipelined) / ceiling, "target": TARGET,
           "stale_dropped": roles.ahead.stale_dropped,
           "setting": {"steps": STEPS, "queries": QUERIES, "samples": K, "engines": ENGINES},
           "note": "scheduling only: stand-in engines, learner and sync around the real driver, actors and pool"}
    rows = [("serial step (generate, grade, train, sync)", out["serial_step_s"]),
            ("pipelined step (max_staleness=1)", out["pipelined_step_s"]),
            ("generate + grade alone", generate_s), ("train alone (stand-in)", TRAIN_S),
            ("ceiling: max(generate, train) + sync", ceiling)]
    for name, v in rows:
        print(f"{name:<44} {v:6.2f} s")
    print(f"pipelined / ceiling = {out['pipelined_over_ceiling']:.2f} (target <= {TARGET})")
    out["long_tail"] = tail
    long_tail.report(tail)
    path = ROOT / "results" / "bench_pipeline.json"
    if not real and path.is_file():  # the real part's figures stay those of the last full run
        last = json.loads(path.read_text())
        kept = {k: v for k, v in last.items() if k == "real" or k.startswith("startup")}
        out.update(kept, **({"real_provenance": last.get("real_provenance", last.get("provenance"))} if kept else {}))
    if real:
        from bench.pipeline_real import run as run_real, startup_launches, vllm_import_s

        print("real loop, this machine (2 shared cores):", flush=True)
        out["real"] = run_real(ROOT / ".cache" / "bench_pipeline")
        demos = [r for r in out["real"] if r["setting"] == "demo"]
        # the demo's, launch to the first step (caches built): the median over its launches
        out.update(startup_launches(ROOT / ".cache" / "bench_pipeline", demos))
        out["startup_target_s"] = STARTUP_TARGET_S
        each = ", ".join(f"{r['startup_s']:.1f}" for r in out["startup_runs"])
        print(f"start-up (demo, launch to the first step) {out['startup_s']:.1f} s, the median of "
              f"{len(out['startup_runs'])} launches ({each}; target <= {STARTUP_TARGET_S:.0f})")
        demo = next(r for r in demos if r["max_staleness"] == 0)  # its stages and CPU by role
        for stage, v in sorted(demo["startup_stages_s"].items(), key=lambda kv: -kv[1]):
            print(f"  {stage:<24} {v:6.1f} s")
        out["startup_floor"] = vllm_import_s()
        f = out["startup_floor"]
        print(f"  floor: the engine's {f['engine_processes']} process(es) each import vLLM "
              f"({f['import_wall_s']:.1f} s alone here) one after the other: {f['engine_chain_floor_s']:.1f} s")
        cpu = demo["startup_cpu_floor"]
        print(f"  floor: {cpu['cpu_s']:.0f} CPU-seconds over {cpu['cores']} cores: {cpu['floor_s']:.1f} s "
              "(by role: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(demo["startup_cpu_s"].items(),
                                                                         key=lambda kv: -kv[1])[:6]) + ")")
    (ROOT / "results").mkdir(exist_ok=True)
    path.write_text(
        json.dumps({"provenance": stamp(invoked("bench.bench_pipeline")), **out}, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main(real="--simulated-only" not in sys.argv[1:])
