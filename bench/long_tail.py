"""The long-tail case of `python -m bench.bench_pipeline` (`long_tail` in
results/bench_pipeline.json): response lengths log-normal with p99 / median >= 10, as a
reasoning model's are, through the real driver step (`launch.loop.rl_step`), stand-in engines
(`bench.standins`), the real verifier pool, a stand-in learner and sync of fixed cost; serial
steps (algo.max_staleness=0), so the step is generate + grade + train + sync.

  tail_bound_step_s  rollout.partial off: every step waits for its longest sample
  volume_bound_s     the step's tokens over the engines' throughput, + train + sync: no
                     schedule of the same work is faster
  partial_step_s     rollout.partial on: the median step once the carried samples reached
                     their steady state (the first `warmup` steps left out)

Throughput: the stand-in decodes each sequence at `tok_per_s`; unbounded, it would run any
batch at once and the volume bound would be one mean sample's time, so each engine has
`max_concurrent` decode slots (a real engine's batch and KV-cache limit; later samples queue
for one, in the call's order, as vLLM's first-come-first-served scheduler does): its
throughput is max_concurrent x tok_per_s, the engines' together engines x that; a step's
64 samples per engine, 4 per slot, keep it busy most of the step, as a real engine is.

The budget is the default, 0.9. The stand-ins queue a call's continued samples before its
fresh ones, as `RolloutEngine` does. `fresh_first` measures the same with the fresh ones
first (the driver sends the carried queries last): then the longest samples wait behind the
fresh ones, decode little in each step and outlive `partial_max_age`, and their queries are
dropped (rollout/partial_dropped), a bias against long responses (about 3% of the queries at
0.9 and 9% at 0.85 in a model of this schedule), for a step no faster.
"""
from __future__ import annotations

import dataclasses
import random
import statistics
import time
from dataclasses import dataclass

VOLUME_TARGET, TAIL_TARGET = 1.3, 0.6  # partial_step_s <= 1.3 x volume_bound_s and <= 0.6 x tail_bound_step_s


@dataclass(frozen=True)
class Setting:
    queries: int = 16
    samples: int = 8
    engines: int = 2
    tok_per_s: float = 400.0  # per sequence
    max_concurrent: int = 16  # decode slots per engine: a step's 64 samples per engine, 4 per slot
    mean_tokens: float = 400.0
    sigma: float = 1.1  # log-normal shape: p99 / median = exp(2.326 sigma) = 12.9
    max_new_tokens: int = 4000
    train_s: float = 2.0
    sync_s: float = 0.2
    budget: float = 0.9
    max_age: int = 4
    tail_steps: int = 5
    partial_steps: int = 12
    warmup: int = 4  # partial steps before the steady state: the carried samples build up

    @property
    def throughput(self) -> float:
        """The engines' tokens per second, every decode slot busy."""
        return self.engines * self.max_concurrent * self.tok_per_s


def _problems(s: Setting, step: int):
    from launch.data.problem import Problem

    return [Problem(str(1000 * step + i), "stand-in", str(1000 * step + i)) for i in range(s.queries)]


def _steps(s: Setting, rollout, pool, partial: bool, steps: int) -> tuple[list[dict], list[int], bool]:
    """`steps` serial driver steps: a row per step, every trained sample's length, and whether
    every trained query had all its samples ended (none cut, each its planned length)."""
    from actors.config import RolloutConfig
    from bench.standins import StandInLearner, StandInRoles, planned_length
    from launch.config import TrainConfig
    from launch.loop import rl_step
    from launch.state.carried import Carried
    from learner.config import AlgoConfig

    cfg = dataclasses.replace(TrainConfig(), prompts_per_step=s.queries, algo=AlgoConfig(mode="reinforce"),
                              rollout=RolloutConfig(n_samples=s.samples, max_new_tokens=s.max_new_tokens,
                                                    partial=partial, partial_budget=s.budget,
                                                    partial_max_age=s.max_age))
    roles = StandInRoles(rollout, pool, StandInLearner(s.train_s))
    prompt = {p.id: "stand-in" for step in range(steps) for p in _problems(s, step)}
    carried, rows, lengths, complete = Carried(), [], [], True
    for step in range(steps):
        start = time.perf_counter()
        metrics, groups, _ = rl_step(cfg, roles, _problems(s, step), prompt, [1], step, random.Random(step),
                                     carried=carried)
        wall = time.perf_counter() - start
        complete &= all(len(g) == s.samples and not r.cut and len(r.response_ids) == planned_length(r)
                        for g in groups for r in g)
        lengths += [len(r.response_ids) for g in groups for r in g]
        rows.append({"step": step, "step_s": wall, "generate_s": metrics["timing_s/generate"],
                     "verify_s": metrics.get("timing_s/verify", 0.0), "trained_queries": len(groups),
                     "tokens": sum(len(r.response_ids) for g in groups for r in g),
                     **{k.split("/")[1]: metrics.get(k, 0.0) for k in
                        ("rollout/partial_carried", "rollout/partial_dropped", "rollout/segments_max")}})
    trained = [x for _, xs in roles.learner.trained for x in xs]
    complete &= all(len(x.response_ids) == x.prompt_ids[1] for x in trained)
    return rows, lengths, complete


def run(s: Setting = Setting(), pool=None, fresh_first: bool = True) -> dict:
    """Both modes on the same queries (the same lengths: each fresh query keeps its position,
    its seed and its engine), inside a running Ray; partial rollouts again with engines that
    give the fresh samples their slots first (`fresh_first`). `pool`: a verifier pool to
    grade with (else one of its own)."""
    import learner.weight_sync as ws
    from actors.config import RolloutConfig
    from actors.group import RolloutGroup
    from bench.standins import StandInEngine, stand_in_sync
    from verifier import VerifierConfig, VerifierPool

    def engines(continued_first: bool) -> RolloutGroup:
        kw = {"tok_per_s": s.tok_per_s, "mean_tokens": s.mean_tokens, "sigma": s.sigma,
              "max_concurrent": s.max_concurrent, "continued_first": continued_first}
        cfg = RolloutConfig(num_engines=s.engines, n_samples=s.samples, max_new_tokens=s.max_new_tokens,
                            num_cpus_per_actor=0.1)
        return RolloutGroup(cfg, "stand-in", seed=0, engine_cls=StandInEngine, engine_kwargs=[kw] * s.engines)

    own_pool = pool is None
    pool = pool or VerifierPool(VerifierConfig(num_workers=2))
    real_sync, ws.sync_weights = ws.sync_weights, stand_in_sync(s.sync_s)
    try:
        rollout = engines(continued_first=True)
        try:
            tail, lengths, _ = _steps(s, rollout, pool, partial=False, steps=s.tail_steps)
            part, _, complete = _steps(s, rollout, pool, partial=True, steps=s.partial_steps)
        finally:
            rollout.shutdown()
        first, first_complete = None, True
        if fresh_first:
            rollout = engines(continued_first=False)
            try:
                first, _, first_complete = _steps(s, rollout, pool, partial=True, steps=s.partial_steps)
            finally:
                rollout.shutdown()
    finally:
        ws.sync_weights = real_sync
        if own_pool:
            pool.shutdown()
    ordered = sorted(lengths)
    tail_s = statistics.median(r["step_s"] for r in tail[1:])  # the first step starts the actors' work
    volume_s = statistics.mean(r["tokens"] for r in tail) / s.throughput + s.train_s + s.sync_s

    def partial_figures(rows: list[dict]) -> dict:
        step_s = statistics.median(r["step_s"] for r in rows[s.warmup:])
        return {"partial_step_s": step_s, "partial_over_volume": step_s / volume_s, "partial_over_tail": step_s / tail_s,
                "met": step_s <= VOLUME_TARGET * volume_s and step_s <= TAIL_TARGET * tail_s,
                "carried_samples": sum(r["partial_carried"] for r in rows[s.warmup:]) / len(rows[s.warmup:]),
                "dropped_samples": sum(r["partial_dropped"] for r in rows),
                "trained_queries": sum(r["trained_queries"] for r in rows), "drawn_queries": s.queries * len(rows)}

    return {"tail_bound_step_s": tail_s, "volume_bound_s": volume_s, **partial_figures(part),
            "volume_target": VOLUME_TARGET, "tail_target": TAIL_TARGET,
            "lengths_p99_over_median": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
            / statistics.median(ordered),
            "lengths_median": statistics.median(ordered), "lengths_max": ordered[-1],
            "trained_complete": complete and first_complete, "throughput_tok_s": s.throughput,
            "fresh_first": {**partial_figures(first), "partial_steps": first} if first else None,
            "setting": dataclasses.asdict(s), "tail_steps": tail, "partial_steps": part}


def report(out: dict) -> None:
    """The table, with the targets, and the partial steps one by one."""
    v, t, first = out["volume_bound_s"], out["tail_bound_step_s"], out["fresh_first"]
    print(f"long tail: lengths p99 / median = {out['lengths_p99_over_median']:.1f} (median "
          f"{out['lengths_median']:.0f}, longest {out['lengths_max']} tokens), engines' throughput "
          f"{out['throughput_tok_s']:.0f} tok/s, budget {out['setting']['budget']}")
    print(f"  {'':<52} {'step s':>7} {'/ volume':>9} {'/ tail':>7} {'dropped':>8}")
    rows = [("tail-bound step (rollout.partial off)", t, None), ("volume bound (tokens / throughput + train + sync)",
            v, None), ("partial step (steady state, median)", out["partial_step_s"], out),
            ("  fresh samples' slots first", first["partial_step_s"], first)]
    for name, value, fig in rows:
        extra = (f" {value / v:>9.2f} {value / t:>7.2f} {fig['dropped_samples']:>4.0f} smp" if fig else "")
        print(f"  {name:<52} {value:>7.2f}{extra}")
    print(f"  targets: partial <= {VOLUME_TARGET} x volume, <= {TAIL_TARGET} x tail; met: {out['met']}; "
          f"trained queries complete (K ended samples, none cut): {out['trained_complete']}")
    for label, steps in (("partial", out["partial_steps"]), ("fresh first", first["partial_steps"])):
        print(f"  {label}: step  wall s  generate s  verify s  trained  carried  dropped  segments_max")
        for r in steps:
            print(f"  {'':<{len(label)}} {r['step']:>5} {r['step_s']:>7.2f} {r['generate_s']:>11.2f} "
                  f"{r['verify_s']:>9.2f} {r['trained_queries']:>8} {r['partial_carried']:>8.0f} "
                  f"{r['partial_dropped']:>8.0f} {r['segments_max']:>13.0f}")
