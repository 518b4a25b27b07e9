"""Verifier throughput: VerifierPool vs calling math-verify directly, on the same pairs.

Pairs: MATH-500 reference solutions (they end in `\\boxed{answer}`) as completions, each
graded against its own gold (correct) and, with the boxed answer corrupted, as a wrong
completion; a few use "The answer is ..." instead of a box. Every method first grades a
warm-up set built from *other* problems (sympy's caches warm, no gold seen before), then
the timed set. Run: `python -m bench.bench_verifier`; prints a table and writes
results/bench_verifier.json.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from launch.state.provenance import invoked, stamp

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "bench_verifier.json"
N_PROBLEMS = 200  # timed set: problems [0, 200) -> 400 pairs
WARMUP = (300, 400)  # warm-up set: other problems


def realistic_pairs(start: int = 0, stop: int = N_PROBLEMS) -> list[tuple[str, str]]:
    from verifier.extract import boxed_spans
    from verifier.self_check import corrupt

    from launch.data.benchmarks import resolve_benchmark_path

    rows = [json.loads(line) for line in resolve_benchmark_path("math500").open()][start:stop]
    pairs = []
    for k, r in enumerate(rows):
        sol, gold = r["solution"], r["answer"]
        spans = boxed_spans(sol)
        if not spans:
            continue
        s, e, _ = spans[-1]
        wrong = sol[:s] + "\\boxed{" + corrupt(gold) + "}" + sol[e:]
        if k % 5 == 0:  # some completions state the answer without a box
            sol = sol[:s] + sol[e:] + f"\n\nThe final answer is ${gold}$."
        pairs += [(sol, gold), (wrong, gold)]
    return pairs


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))] if xs else 0.0


def bench_direct(pairs, warmup) -> dict:
    """math-verify as its README shows it, in this process, one pair after another."""
    from math_verify import parse, verify

    for completion, gold in warmup:
        verify(parse("$" + gold + "$"), parse(completion))
    lat, correct = [], []
    t0 = time.perf_counter()
    for completion, gold in pairs:
        t = time.perf_counter()
        correct.append(bool(verify(parse("$" + gold + "$"), parse(completion))))
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    return {"pairs_per_s": len(pairs) / wall, "latency_p50_s": _pct(lat, 50),
            "latency_p99_s": _pct(lat, 99), "correct": correct}


def bench_pool(pairs, warmup, num_workers: int) -> dict:
    from verifier import VerifierConfig, VerifierPool

    pool = VerifierPool(VerifierConfig(num_workers=num_workers))
    try:
        pool.grade([c for c, _ in warmup], [g for _, g in warmup])
        t0 = time.perf_counter()
        verdicts = pool.grade([c for c, _ in pairs], [g for _, g in pairs])
        wall = time.perf_counter() - t0
    finally:
        pool.shutdown()
    m = pool.metrics(verdicts)
    return {"num_workers": num_workers, "pairs_per_s": len(pairs) / wall,
            "pairs_per_s_per_worker": len(pairs) / wall / num_workers,
            "latency_p50_s": m["verifier/latency_p50_s"], "latency_p99_s": m["verifier/latency_p99_s"],
            "outcomes": {k.split("/")[-1]: v for k, v in m.items() if "/outcome/" in k},
            "correct": [v.correct for v in verdicts]}


def bench_integers(n: int = 2000) -> dict:
    """The synthetic-arithmetic common case: plain integers, fast exact path."""
    from verifier import grade

    pairs = [(f"... so the result is \\boxed{{{i * 7}}}", str(i * 7 + (i % 2))) for i in range(n)]
    t0 = time.perf_counter()
    for c, g in pairs:
        grade(c, g)
    return {"pairs_per_s": n / (time.perf_counter() - t0)}


def main() -> dict:
    import ray

    from launch.ray_connect import ray_temp_dir

    pairs, warmup = realistic_pairs(), realistic_pairs(*WARMUP)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
                 _temp_dir=ray_temp_dir(str(ROOT / ".cache" / "ray_bv")))
    try:
        pool1 = bench_pool(pairs, warmup, 1)
        pool2 = bench_pool(pairs, warmup, 2)
        direct = bench_direct(pairs, warmup)
    finally:
        if started_ray:
            ray.shutdown()
    ints = bench_integers()
    labels = [i % 2 == 0 for i in range(len(pairs))]  # even: gold solution, odd: corrupted
    result = {
        "pairs": len(pairs),
        "cpu_count": os.cpu_count(),
        "direct_math_verify": {k: v for k, v in direct.items() if k != "correct"},
        "pool_1_worker": {k: v for k, v in pool1.items() if k != "correct"},
        "pool_2_workers": {k: v for k, v in pool2.items() if k != "correct"},
        "integers_in_process": ints,
        "ratio_pool_per_worker_vs_direct": pool1["pairs_per_s_per_worker"] / direct["pairs_per_s"],
        "accuracy_vs_labels": {
            "direct_math_verify": sum(a == b for a, b in zip(direct["correct"], labels)) / len(labels),
            "pool": sum(a == b for a, b in zip(pool1["correct"], labels)) / len(labels),
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"provenance": stamp(invoked("bench.bench_verifier")), **result}, indent=2))
    print(f"verifier bench: {len(pairs)} MATH-500 pairs, {os.cpu_count()} CPUs")
    print(f"  math-verify direct, 1 process : {direct['pairs_per_s']:8.1f} pairs/s  "
          f"p50 {direct['latency_p50_s'] * 1e3:6.1f} ms  p99 {direct['latency_p99_s'] * 1e3:6.1f} ms")
    for p in (pool1, pool2):
        print(f"  VerifierPool, {p['num_workers']} worker(s)       : {p['pairs_per_s']:8.1f} pairs/s "
              f"({p['pairs_per_s_per_worker']:.1f}/worker)  p50 {p['latency_p50_s'] * 1e3:6.1f} ms  "
              f"p99 {p['latency_p99_s'] * 1e3:6.1f} ms")
    print(f"  ratio pool/worker vs direct   : {result['ratio_pool_per_worker_vs_direct']:.2f}x "
          "(target >= 0.8x)")
    print(f"  integers (fast path)          : {ints['pairs_per_s']:8.0f} pairs/s")
    print(f"  agreement with labels         : direct {result['accuracy_vs_labels']['direct_math_verify']:.3f}"
          f", pool {result['accuracy_vs_labels']['pool']:.3f}")
    print(f"  -> {OUT.relative_to(ROOT)}")
    return result


if __name__ == "__main__":
    main()
