"""Sampled-evaluation metrics: unbiased pass@k, maj@k over clustered answers, truncation rate.

Pure (no Ray, no sympy): answer equivalence comes in as a function, so `launch.eval` can ask
the verifier pool (deadline-bounded) and tests can pass a plain lookup.

>>> round(pass_at_k(4, 2, 2), 4)          # 1 - C(2,2)/C(4,2) = 1 - 1/6
0.8333
>>> maj_at_k(["1/2", "0.5", "3", None], [True, True, False, False], 4,
...          same=lambda a, b: {a, b} <= {"1/2", "0.5"})
True
"""
from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Callable, Sequence

Same = Callable[[str, str], bool]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021, eq. 1) from n samples of which c are correct:
    1 - C(n-c, k) / C(n, k), the chance that k of the n drawn without replacement hold a
    correct one. Exact integer arithmetic (no overflow for large n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def cluster(answers: Sequence[str], same: Same) -> list[list[int]]:
    """Group answer indices into classes of equivalent answers, greedily in order: each answer
    joins the first class whose first member it equals (`same(representative, answer)`), else
    opens a new class. Identical texts never reach `same`."""
    classes: list[list[int]] = []
    for i, a in enumerate(answers):
        for members in classes:
            rep = answers[members[0]]
            if rep == a or same(rep, a):
                members.append(i)
                break
        else:
            classes.append([i])
    return classes


def majority_index(answers: Sequence[str | None], same: Same) -> int | None:
    """Index of the first sample of the largest class of equivalent answers (ties: the class
    seen first); samples without an answer (None) do not vote. None when nobody voted."""
    voted = [i for i, a in enumerate(answers) if a is not None]
    if not voted:
        return None
    classes = cluster([answers[i] for i in voted], same)
    best = max(classes, key=len)  # max keeps the first of equal sizes
    return voted[best[0]]


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool], k: int, same: Same) -> bool:
    """Majority vote over the first k samples: is the most common answer (equivalent answers
    written differently counted as one) correct? No answer at all counts as wrong."""
    if not 1 <= k <= len(answers) or len(correct) != len(answers):
        raise ValueError(f"need 1 <= k <= n and one verdict per answer, got k={k}, "
                         f"{len(answers)} answers, {len(correct)} verdicts")
    i = majority_index(answers[:k], same)
    return i is not None and bool(correct[i])


@dataclass(frozen=True)
class ProblemSamples:
    """One problem's graded samples: extracted answer (None when none, or truncated), verdict,
    finished (ended with a stop token)."""

    answers: tuple[str | None, ...]
    correct: tuple[bool, ...]
    finished: tuple[bool, ...]


def sampled_metrics(problems: Sequence[ProblemSamples], ks: Sequence[int], same: Same) -> dict[str, float]:
    """Means over problems: `pass@1` (mean over the samples, c/n), `pass@k` (unbiased) and
    `maj@k` for each k, and `truncated_frac` over all samples."""
    if not problems:
        return {}
    n = len(problems[0].correct)
    if any(len(p.correct) != n for p in problems):
        raise ValueError("every problem needs the same number of samples")
    bad = [k for k in ks if not 1 <= k <= n]
    if bad:
        raise ValueError(f"eval.k values must be in [1, eval.n={n}], got {bad}")
    m = len(problems)
    out = {"pass@1": sum(sum(p.correct) / n for p in problems) / m}
    for k in ks:
        out[f"pass@{k}"] = sum(pass_at_k(n, sum(p.correct), k) for p in problems) / m
        out[f"maj@{k}"] = sum(maj_at_k(p.answers, p.correct, k, same) for p in problems) / m
    out["truncated_frac"] = sum(not f for p in problems for f in p.finished) / (m * n)
    return out
