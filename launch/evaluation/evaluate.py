"""Held-out greedy pass@1 and per-step rollout statistics."""
from __future__ import annotations

import time
from typing import Sequence

from actors.types import Rollout


def evaluate(rollout, verifier, problems: Sequence, prompt: dict[str, str], step: int) -> dict[str, float]:
    """Greedy pass@1 of the current policy on `problems` (one sample each, temperature 0)."""
    start = time.perf_counter()
    groups = rollout.generate([p.id for p in problems], [prompt[p.id] for p in problems], n=1, greedy=True)
    verdicts = verifier.grade([g[0].response_text for g in groups], [p.answer for p in problems],
                              [g[0].finished for g in groups], questions=[p.question for p in problems])
    return {
        "eval/step": float(step),
        "eval/pass1": sum(v.correct for v in verdicts) / max(1, len(verdicts)),
        "eval/truncated_frac": sum(v.outcome == "truncated" for v in verdicts) / max(1, len(verdicts)),
        "eval/response_length/mean": sum(len(g[0].response_ids) for g in groups) / max(1, len(groups)),
        "timing_s/eval": time.perf_counter() - start,
    }


def evaluate_all(rollout, verifier, heldout: Sequence, benchmarks: dict[str, Sequence], prompt: dict[str, str],
                 step: int) -> dict[str, float]:
    """The held-out split (`evaluate`) and the configured benchmarks (`evaluate_benchmarks`)
    at one step, as one row."""
    out = evaluate(rollout, verifier, heldout, prompt, step) if heldout else {"eval/step": float(step)}
    out.update(evaluate_benchmarks(rollout, verifier, benchmarks, prompt))
    return out


def rollout_metrics(groups: Sequence[Sequence[Rollout]], correct: Sequence[Sequence[bool]],
                    rewards: Sequence[Sequence[float]] | None = None) -> dict[str, float]:
    """The step's samples. `rewards`: each sample's r (learner.selection's); without them
    rollout/reward_mean is the mean of +-1 by correctness."""
    flat = [r for g in groups for r in g]
    n = max(1, len(flat))
    hits = [c for row in correct for c in row]
    lengths = [len(r.response_ids) for r in flat]
    pass_rates = [sum(row) / max(1, len(row)) for row in correct]
    return {
        "rollout/samples": float(len(flat)),
        "rollout/pass_rate": sum(hits) / n,
        "rollout/reward_mean": (sum(map(sum, rewards)) if rewards is not None else 2 * sum(hits) - len(hits)) / n,
        "rollout/response_length/mean": sum(lengths) / n,
        "rollout/response_length/max": float(max(lengths, default=0)),
        "rollout/truncated_frac": sum(not r.finished for r in flat) / n,
        "rollout/all_correct_frac": sum(p == 1.0 for p in pass_rates) / max(1, len(pass_rates)),
        "rollout/all_wrong_frac": sum(p == 0.0 for p in pass_rates) / max(1, len(pass_rates)),
        "rollout/policy_version": float(max((r.policy_version for r in flat), default=0)),
    }


def evaluate_benchmarks(rollout, verifier, benchmarks: dict[str, Sequence], prompt: dict[str, str],
                        batch_size: int = 64) -> dict[str, float]:
    """Greedy pass@1 on each benchmark (`{name: problems}`, prompts in `prompt`), scored as
    `python -m launch.eval` scores it (`launch.evaluation.report.Scorer`): `eval/<name>/pass1`,
    `eval/<name>/truncated_frac`, and `eval/benchmarks/pass1`, the mean over benchmarks (what
    a best-checkpoint choice can use)."""
    from launch.evaluation.config import EvalConfig
    from launch.evaluation.report import Scorer

    start, out = time.perf_counter(), {}
    for name, problems in benchmarks.items():
        scorer = Scorer(name, EvalConfig(greedy=True, n=0), verifier)
        for r in range(0, len(problems), batch_size):
            chunk = problems[r:r + batch_size]
            scorer.add(chunk, rollout.generate([p.id for p in chunk], [prompt[p.id] for p in chunk], n=1,
                                               greedy=True), None)
        m = scorer.metrics()
        out[f"eval/{name}/pass1"] = m["greedy_pass@1"]
        out[f"eval/{name}/truncated_frac"] = m["greedy_truncated_frac"]
    if benchmarks:
        out["eval/benchmarks/pass1"] = sum(out[f"eval/{n}/pass1"] for n in benchmarks) / len(benchmarks)
        out["timing_s/eval_benchmarks"] = time.perf_counter() - start
    return out
