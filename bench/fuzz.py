"""`python -m bench.fuzz`: generated hostile input against the grading path, the data loaders and
`launch.eval`'s report; writes results/fuzz.json.

What runs each input, and what counts:
- grading: the real grading subprocess (`verifier.worker.GradingWorker`: the deadline
  `verifier.timeout_s`, the memory cap, a kill and a warm spare), as the verifier actors run it.
  A `timeout` verdict is a hang, an `error` verdict (an exception inside `grade`) a crash, a
  `wrong` input (a mutated gold, a hedge, an injection: bench/fuzz_inputs.py) graded correct a
  false positive. `slowest_s` is the slowest grading time the subprocess reported; the target
  is about a second in-process, the deadline being the backstop.
- loaders: JSONL files of good and broken rows through `read_jsonl_problems`; an exception is a
  crash, a bad row loaded or a good one lost is `wrong_loads`.
- eval report: `launch.evaluation.report.Scorer` (grading through the same subprocess, answer
  clustering in this process) on problems whose sampled responses are hostile; a wrong response
  counted correct is a false positive.
The loaders and the report run in a forked child with a per-input deadline, so a hang is
counted, not waited on. Every count must be 0.

    python -m bench.fuzz                 # 12,000 inputs (about 3 minutes here)
    python -m bench.fuzz --inputs 600    # a slice (tests/bench/test_fuzz.py runs one)
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.fuzz_inputs import WRONG, GradeInput, data_rows, eval_groups, hostile_answers, wrong_answers

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "fuzz.json"
GOLD_SETS = ("math500", "gsm8k_test", "aime24", "amc23", "olympiadbench", "minerva_math", "math_test_full")
CHUNK = 200
ROWS_PER_FILE = 25
EVAL_K = 4


def gold_pool() -> tuple[list[tuple[str, str]], str]:
    """(question, gold) pairs of the benchmark files (the configured folder, else the test
    fixtures) and where they came from."""
    from launch.data.benchmarks import benchmarks_dir, read_jsonl_problems

    for folder in (benchmarks_dir(), ROOT / "tests" / "fixtures" / "benchmarks"):
        pairs = []
        for name in GOLD_SETS:
            if (folder / f"{name}.jsonl").is_file():
                problems, _ = read_jsonl_problems(folder / f"{name}.jsonl")
                pairs += [(p.question, p.answer) for p in problems]
        if pairs:
            return pairs, str(folder)
    raise SystemExit("no benchmark file found for gold answers")


# ------------------------------------------------------------------------- grading

def fuzz_grading(inputs: Sequence[GradeInput], worker) -> dict[str, Any]:
    counts = {"inputs": 0, "crashes": 0, "hangs": 0, "false_positives": 0, "over_1s": 0}
    slowest, examples = (0.0, None), []
    for start in range(0, len(inputs), CHUNK):
        chunk = inputs[start:start + CHUNK]
        verdicts = worker.grade_many([(x.completion, x.gold, True, x.question) for x in chunk])
        for x, v in zip(chunk, verdicts):
            counts["inputs"] += 1
            failed = {"error": "crashes", "timeout": "hangs"}.get(v.outcome)
            if x.expect == WRONG and v.correct:
                failed = "false_positives"
            if failed:
                counts[failed] += 1
                examples.append({"count": failed, "kind": x.kind, "completion": x.completion[:300], "gold": x.gold,
                                 "detail": (v.detail or "")[:300]})
            counts["over_1s"] += v.latency_s > 1.0
            if v.latency_s > slowest[0]:
                slowest = (v.latency_s, x.kind)
    return {**counts, "slowest_s": round(slowest[0], 3), "slowest_kind": slowest[1], "examples": examples[:20]}


# ------------------------------------------------------------- bounded, in a forked child

def bounded_map(fn: Callable[[Any], Any], items: Sequence, limit_s: float) -> list[tuple[str, float, Any]]:
    """("ok" | "crash" | "hang", seconds, result or error) of `fn(item)` for each item, run in
    a forked child; an item past `limit_s` kills the child (a hang) and the rest go on in a
    new one."""
    ctx = multiprocessing.get_context("fork")
    out: list[tuple[str, float, Any]] = []
    while len(out) < len(items):
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_serve, args=(fn, items, len(out), send), daemon=True)
        proc.start()
        send.close()
        while len(out) < len(items):
            if not recv.poll(limit_s):
                proc.kill()
                out.append(("hang", limit_s, f"no result within {limit_s}s"))
                break
            try:
                out.append(recv.recv())
            except EOFError:
                proc.join()
                out.append(("crash", 0.0, f"the process died (exit code {proc.exitcode})"))
                break
        proc.join(timeout=5)
        recv.close()
    return out


def _serve(fn, items, start, send) -> None:
    for item in items[start:]:
        t = time.perf_counter()
        try:
            got = fn(item)
            result = ("ok", time.perf_counter() - t, got)
        except BaseException as e:  # noqa: BLE001 - every escape is what we count
            result = ("crash", time.perf_counter() - t, f"{type(e).__name__}: {str(e)[:300]}")
        send.send(result)


# ------------------------------------------------------------------------- loaders

def _load_file(spec: tuple[str, list[bool | None]]) -> dict:
    """Load one JSONL file; which of its lines loaded against which should have."""
    from launch.data.benchmarks import read_jsonl_problems

    path, usable = spec
    problems, skipped = read_jsonl_problems(path)
    loaded = {int(p.id.rsplit("-", 1)[1]) for p in problems}
    wrong = [n for n, ok in enumerate(usable, 1) if ok is not None and (n in loaded) != ok]
    return {"rows": len(usable), "loaded": len(loaded), "skipped": len(skipped), "wrong": wrong}


def fuzz_loaders(rng: random.Random, n_rows: int, folder: Path, limit_s: float) -> dict[str, Any]:
    specs = []
    rows = data_rows(rng, n_rows)
    for f in range(0, len(rows), ROWS_PER_FILE):
        part = rows[f:f + ROWS_PER_FILE]
        path = folder / f"rows_{f // ROWS_PER_FILE:04d}.jsonl"
        path.write_bytes(b"\n".join(line for line, _ in part) + b"\n")
        specs.append((str(path), [ok for _, ok in part]))
    results = bounded_map(_load_file, specs, limit_s)
    counts = {"inputs": len(rows), "crashes": 0, "hangs": 0, "wrong_loads": 0}
    slowest, examples = 0.0, []
    for spec, (status, seconds, got) in zip(specs, results):
        slowest = max(slowest, seconds)
        if status != "ok":
            counts["crashes" if status == "crash" else "hangs"] += 1
            examples.append({"count": status, "file": Path(spec[0]).name, "detail": str(got)[:300]})
        elif got["wrong"]:
            counts["wrong_loads"] += len(got["wrong"])
            examples.append({"count": "wrong_loads", "file": Path(spec[0]).name, "lines": got["wrong"]})
    return {**counts, "slowest_s": round(slowest, 3), "examples": examples[:20]}


# --------------------------------------------------------------------- eval report

class _Rollout:
    def __init__(self, text: str):
        self.response_text, self.response_ids, self.finished = text, [0] * min(len(text), 64), True


class _WorkerVerifier:
    """The verifier pool's `grade` over one grading subprocess (same deadline and cap)."""

    def __init__(self, worker):
        self.worker = worker

    def grade(self, completions, golds, finished, questions=None):
        questions = questions or [None] * len(completions)
        return self.worker.grade_many(list(zip(completions, golds, finished, questions)))


_EVAL_WORKER = None


def _score_group(group: dict) -> dict:
    """One problem's sampled responses through `Scorer` (clustering in this process)."""
    global _EVAL_WORKER
    from launch.data.problem import Problem
    from launch.evaluation.config import EvalConfig
    from launch.evaluation.report import Scorer
    from verifier import VerifierConfig
    from verifier.worker import GradingWorker

    if _EVAL_WORKER is None:
        _EVAL_WORKER = GradingWorker(VerifierConfig(), spare=True)
        _EVAL_WORKER.start()
    scorer = Scorer("fuzz", EvalConfig(greedy=False, n=EVAL_K, k=[1, EVAL_K]), _WorkerVerifier(_EVAL_WORKER))
    problem = Problem(id="fuzz-1", question=group["question"], answer=group["gold"])
    rows = scorer.add([problem], None, [[_Rollout(text) for text, _ in group["responses"]]])
    scorer.metrics()
    return {"false_positives": sum(r["correct"] and expect == WRONG for r, (_, expect) in zip(rows, group["responses"])),
            "errors": sum(r["outcome"] in ("error", "timeout") for r in rows)}


def fuzz_eval(rng: random.Random, golds, n_responses: int, limit_s: float) -> dict[str, Any]:
    groups = eval_groups(golds, rng, max(1, n_responses // EVAL_K), EVAL_K)
    results = bounded_map(_score_group, groups, limit_s)
    counts = {"inputs": len(groups) * EVAL_K, "crashes": 0, "hangs": 0, "false_positives": 0}
    slowest, examples = 0.0, []
    for group, (status, seconds, got) in zip(groups, results):
        slowest = max(slowest, seconds)
        if status != "ok":
            counts["crashes" if status == "crash" else "hangs"] += 1
            examples.append({"count": status, "gold": group["gold"], "detail": str(got)[:300]})
        else:
            counts["crashes"] += got["errors"]
            counts["false_positives"] += got["false_positives"]
    return {**counts, "slowest_s": round(slowest, 3), "examples": examples[:20]}


# ----------------------------------------------------------------------------- run

def run(total: int = 12_000, seed: int = 0) -> dict[str, Any]:
    """`total` inputs: 60% grading (half wrong answers, half hostile), 25% data rows, 15%
    eval responses."""
    from verifier import VerifierConfig
    from verifier.worker import GradingWorker

    rng = random.Random(seed)
    golds, source = gold_pool()
    cfg = VerifierConfig()
    n_grade = int(total * 0.6)
    inputs = wrong_answers(golds, rng, n_grade // 2) + hostile_answers(golds, rng, n_grade - n_grade // 2)
    rng.shuffle(inputs)
    t0 = time.perf_counter()
    worker = GradingWorker(cfg)
    worker.start()
    try:
        grading = fuzz_grading(inputs, worker)
    finally:
        worker.shutdown()
    limit = 4 * cfg.timeout_s  # a loader file or a report group: many parses, one budget
    with tempfile.TemporaryDirectory(prefix="oreal-fuzz-") as folder:
        loaders = fuzz_loaders(rng, int(total * 0.25), Path(folder), limit)
    report = fuzz_eval(rng, golds, total - n_grade - int(total * 0.25), limit)
    parts = {"grading": grading, "loaders": loaders, "eval_report": report}
    return {
        "inputs": sum(p["inputs"] for p in parts.values()),
        "crashes": sum(p["crashes"] for p in parts.values()),
        "hangs": sum(p["hangs"] for p in parts.values()),
        "false_positives": grading["false_positives"] + report["false_positives"],
        "wrong_loads": loaders["wrong_loads"],
        "slowest_s": max(p["slowest_s"] for p in parts.values()),
        "slowest_grade_s": grading["slowest_s"],
        "deadline_s": cfg.timeout_s,
        "seed": seed, "golds": len(golds), "gold_source": source, "wall_s": round(time.perf_counter() - t0, 1),
        "parts": parts,
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"{'part':<12} {'inputs':>7} {'crashes':>8} {'hangs':>6} {'false+':>7} {'slowest s':>10}"]
    for name, p in result["parts"].items():
        lines.append(f"{name:<12} {p['inputs']:>7} {p['crashes']:>8} {p['hangs']:>6} "
                     f"{p.get('false_positives', p.get('wrong_loads', 0)):>7} {p['slowest_s']:>10.3f}")
    lines.append(f"{'total':<12} {result['inputs']:>7} {result['crashes']:>8} {result['hangs']:>6} "
                 f"{result['false_positives']:>7} {result['slowest_s']:>10.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n")[0])
    ap.add_argument("--inputs", type=int, default=12_000, help="inputs in all (default 12,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT, help=f"the results file (default {OUT.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    result = run(args.inputs, args.seed)
    from launch.state.provenance import invoked, stamp

    print(table(result))
    print(f"{result['inputs']} inputs in {result['wall_s']} s; golds from {result['gold_source']} ({result['golds']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"provenance": stamp(invoked("bench.fuzz")), **result}, indent=2) + "\n")
    failed = {k: result[k] for k in ("crashes", "hangs", "false_positives", "wrong_loads") if result[k]}
    if failed:
        raise SystemExit(f"fuzz: {failed} (examples in {args.out})")


if __name__ == "__main__":
    main()
