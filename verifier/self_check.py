"""Startup self-check: can the verifier grade this run's gold answers at all?

Each gold is graded against itself (`\\boxed{gold}`: must be `correct`) and against a
corrupted copy (must not be). A gold failing either check would hand out wrong rewards for
every sample of its query, so the run refuses to start when more than `max_fail_frac` of
the golds fail, and names them.

>>> corrupt("\\\\frac{1}{2}")
'\\\\frac{2}{2}'
>>> corrupt("\\\\text{Monday}")
'\\\\text{Monday}+1'
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence

from verifier.extract import gold_answer
from verifier.grade import grade
from verifier.verdict import Verdict

log = logging.getLogger(__name__)
GradeMany = Callable[[list[str], list[str], list[bool]], list[Verdict]]
_DIGIT_RE = re.compile(r"\d")
_SHOW = 20


def corrupt(gold: str) -> str:
    """A copy of `gold` that is not equivalent to it: its first digit +1 (mod 10), else `+1`."""
    m = _DIGIT_RE.search(gold)
    if m is None:
        return gold + "+1"
    d = str((int(m.group()) + 1) % 10)
    return gold[:m.start()] + d + gold[m.end():]


def _in_process(completions: list[str], golds: list[str], finished: list[bool]) -> list[Verdict]:
    return [grade(c, g, finished=f) for c, g, f in zip(completions, golds, finished)]


def self_check(golds: Sequence[str], grade_many: GradeMany = _in_process,
               max_fail_frac: float = 0.02) -> list[str]:
    """Check every gold; raise ValueError naming the failures when too many fail.

    Each distinct gold is graded once; the failed fraction counts every gold, repeats included.
    Returns the (tolerated) failure descriptions, one per distinct gold. `grade_many` is
    `VerifierPool.grade` in a run (deadline-bounded); the default grades in this process
    (tests, notebooks).
    """
    counts = Counter(golds)  # each distinct gold graded once (the demo's 2000 golds: 27 distinct)
    distinct = list(counts)
    texts = [gold_answer(g) for g in distinct]
    completions = [f"The answer is $\\boxed{{{t}}}$." for t in texts]
    completions += [f"The answer is $\\boxed{{{corrupt(t)}}}$." for t in texts]
    verdicts = grade_many(completions, distinct * 2, [True] * len(completions))
    n, m = len(golds), len(texts)
    failures, failed = [], 0  # failed: golds (repeats counted) whose distinct text failed
    for i, t in enumerate(texts):
        same, bad = verdicts[i], verdicts[m + i]
        if not same.correct:
            failures.append(f"{t!r} vs itself: {same.outcome} ({same.detail})")
        elif bad.correct:
            failures.append(f"{t!r} vs corrupted {corrupt(t)!r}: graded correct")
        else:
            continue
        failed += counts[distinct[i]]
    if n and failed / n > max_fail_frac:
        shown = "\n  ".join(failures[:_SHOW])
        more = f"\n  ... and {len(failures) - _SHOW} more" if len(failures) > _SHOW else ""
        raise ValueError(
            f"verifier self-check failed for {failed}/{n} gold answers "
            f"(> verifier.self_check_max_fail_frac={max_fail_frac}):\n  {shown}{more}")
    for f in failures:
        log.warning("verifier self-check: %s", f)
    return failures
