"""Per-step verifier metrics (namespaced `verifier/...`, logged by the driver only).

| key | meaning |
|---|---|
| verifier/outcome/<outcome> | number of verdicts with that outcome (all six keys, zeros included) |
| verifier/accuracy | fraction of verdicts that are correct |
| verifier/timeout_frac | fraction of verdicts that timed out |
| verifier/latency_p50_s, verifier/latency_p99_s | grading latency percentiles (seconds) |
| verifier/judge_asked, verifier/judge_rescued, verifier/judge_errors | LLM judge questions, YES replies, and those without an exact YES/NO (error, deadline) |
"""
from __future__ import annotations

from collections.abc import Sequence

from verifier.verdict import OUTCOMES, Verdict


def _percentile(sorted_xs: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 for an empty list)."""
    if not sorted_xs:
        return 0.0
    k = min(len(sorted_xs) - 1, max(0, round(q / 100 * (len(sorted_xs) - 1))))
    return sorted_xs[k]


def metrics(verdicts: Sequence[Verdict]) -> dict[str, float]:
    """Counts of each outcome and latency percentiles.

    >>> m = metrics([Verdict(True, "correct", "1", 0.01), Verdict(False, "timeout", None, 3.0)])
    >>> m["verifier/outcome/timeout"], m["verifier/accuracy"]
    (1, 0.5)
    """
    out: dict[str, float] = {f"verifier/outcome/{o}": 0 for o in OUTCOMES}
    for v in verdicts:
        out[f"verifier/outcome/{v.outcome}"] += 1
    n = len(verdicts)
    out["verifier/accuracy"] = out["verifier/outcome/correct"] / n if n else 0.0
    out["verifier/timeout_frac"] = out["verifier/outcome/timeout"] / n if n else 0.0
    out["verifier/judge_asked"] = sum(v.judge is not None for v in verdicts)
    out["verifier/judge_rescued"] = sum(v.judge == "yes" for v in verdicts)
    out["verifier/judge_errors"] = sum(v.judge == "error" for v in verdicts)
    lat = sorted(v.latency_s for v in verdicts)
    out["verifier/latency_p50_s"] = _percentile(lat, 50)
    out["verifier/latency_p99_s"] = _percentile(lat, 99)
    return out
