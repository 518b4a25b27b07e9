"""Every parsing function the grader runs on untrusted text is linear in its input (issue 29).

Each hostile input is timed at size n and 4n (n chosen so that the n case takes ~10 ms here):
linear code takes ~4x as long, quadratic ~16x, exponential never finishes, so `4n < 8 * n +
50 ms` fails on anything worse than linear whatever the machine's speed. The sizes the review
measured (26 spaces before a unit: 15 s; a 12k-character question: 5.8 s; a 20k-character
unclosed `\\boxed{`: 1.8 s; a 28 KB solution: 3.3 s) must each take under a second, and so must
`grade()` on them. Each timing runs under a hard deadline, so a regression fails, not hangs.
The power-tower guard must hold however the tower is braced, parenthesised or spaced.
"""
from __future__ import annotations

import math
import signal
import time
from typing import Callable

import pytest

from launch.data.problem_rows import last_boxed as row_last_boxed
from verifier import grade
from verifier.domain import problem_domain
from verifier.equivalence import risky
from verifier.extract import extract_answer, gold_answer, last_boxed
from verifier.normalize import normalize

_DEADLINE_S = 5.0


def _seconds(fn: Callable[[str], object], text: str, repeat: int = 3) -> float:
    """Best of `repeat` timings of fn(text) (a busy machine only ever adds time), all under a
    hard deadline."""
    def expired(*_):
        raise TimeoutError(f"{getattr(fn, '__name__', fn)} on {len(text)} chars ran past {_DEADLINE_S} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, _DEADLINE_S)
    try:
        best = math.inf
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn(text)
            best = min(best, time.perf_counter() - t0)
        return best
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _unbounded_extract(text: str) -> str | None:
    return extract_answer(text, max_chars=10**9)  # the default keeps 20k chars: no growth to see


def _unclosed_boxes(n: int) -> str:
    return "\\boxed{" * (n // 7)


# (id, function, hostile input of size ~n, n, the review's input)
CASES = [
    ("normalize-spaces-before-word", normalize, lambda n: "1" + " " * n + "x", 20_000, "1" + " " * 26 + "x"),
    ("normalize-spaces-before-unit", normalize, lambda n: "1" + " " * n + "cmx", 20_000, "1" + " " * 26 + "cmx"),
    ("normalize-spaces-before-text", normalize, lambda n: "1" + " " * n + "\\text", 20_000,
     "1" + " " * 26 + "\\text"),
    ("normalize-digits", normalize, lambda n: "1" * n, 40_000, "1" * 20_000),
    ("domain-variable-list", problem_domain, lambda n: "a, " * (n // 3), 20_000, "Let " + "a, " * 4_000 + "b."),
    ("domain-mathbb-spaces", problem_domain, lambda n: "\\mathbb" + " " * n + "x", 100_000,
     "\\mathbb" + " " * 12_000 + "x"),
    ("extract-unclosed-boxes", _unbounded_extract, _unclosed_boxes, 100_000, _unclosed_boxes(20_000)),
    ("last_boxed-unclosed-boxes", last_boxed, _unclosed_boxes, 100_000, _unclosed_boxes(28_000)),
    ("gold_answer-unclosed-boxes", gold_answer, _unclosed_boxes, 100_000, _unclosed_boxes(28_000)),
    ("row-last_boxed-unclosed-boxes", row_last_boxed, _unclosed_boxes, 100_000, _unclosed_boxes(28_000)),
    ("risky-spaces-after-caret", risky, lambda n: "2^" + " " * n + "x", 200_000, "2^" + " " * 1_000 + "x"),
    ("risky-open-groups", risky, lambda n: "2^{x" * (n // 4), 100_000, "2^{x" * 250),
]


@pytest.mark.parametrize("fn,make,n,review_input", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_linear_in_the_input(fn, make, n, review_input):
    t_n, t_4n = _seconds(fn, make(n)), _seconds(fn, make(4 * n))
    assert t_4n < 8 * t_n + 0.05, f"n: {t_n:.4f} s, 4n: {t_4n:.4f} s (linear gives ~4x)"
    assert _seconds(fn, review_input, repeat=1) < 1.0


@pytest.fixture(scope="module")
def warm_grader():
    """The first symbolic comparison imports sympy / math-verify (~1.5 s): not the input's cost."""
    grade("\\boxed{x+1}", "1+x")


QUESTION_12K = "Let " + "a, " * 3_990 + "and b be real numbers. Find $a+b$."
SOLUTION_28K = "Compute \\boxed{" * 1_870 + " so the answer is \\boxed{3}."
# (id, completion, gold, question, outcome)
GRADE_CASES = [
    ("spaces-before-word", "\\boxed{1" + " " * 26 + "x}", "1", None, "incorrect"),
    ("spaces-before-unit", "\\boxed{3" + " " * 26 + "\\text{cm}}", "3", None, "correct"),
    ("question-12k", "\\boxed{3}", "3", QUESTION_12K, "correct"),
    ("unclosed-boxes-20k", _unclosed_boxes(20_000), "3", None, "no_answer"),
    ("unclosed-boxes-then-box", _unclosed_boxes(19_000) + " \\boxed{3}", "3", None, "correct"),
    ("gold-solution-28k", "\\boxed{3}", SOLUTION_28K, None, "correct"),
]


@pytest.mark.parametrize("completion,gold,question,outcome", [c[1:] for c in GRADE_CASES],
                         ids=[c[0] for c in GRADE_CASES])
def test_grade_on_hostile_input_is_fast(warm_grader, completion, gold, question, outcome):
    assert len(QUESTION_12K) >= 12_000 and len(SOLUTION_28K) >= 28_000
    verdicts = []
    assert _seconds(lambda c: verdicts.append(grade(c, gold, question=question)), completion, repeat=1) < 1.0
    assert verdicts[0].outcome == outcome, verdicts[0]


TOWERS = [
    "9^{9^{9^9}}",  # what the guard always caught
    "9^{{9^{{9^{9}}}}}",
    "9^{ {9}^{ {9}^{9} } }",
    "9^(9^(9^9))",
    "9 ^ { ( 9 ^ { ( 9 ^ 9 ) } ) }",
    "9^{\\left(9^{\\left(9^{9}\\right)}\\right)}",
    "((9))^{((9))^{((9))^{((9))}}}",
    "9^{-9^{9}}",
    "2^{(3+6)^{9}}",
    "2^{((123456789))}",
    "y = 9^{{9^{{9^{9}}}}}",
]


@pytest.mark.parametrize("tower", TOWERS)
def test_power_tower_guard_holds_however_braced(warm_grader, tower):
    assert risky(tower) == "power tower"
    verdicts = []
    assert _seconds(lambda c: verdicts.append(grade(c, "3")), f"\\boxed{{{tower}}}", repeat=1) < 1.0
    assert verdicts[0].outcome == "incorrect" and verdicts[0].detail.startswith("power tower"), verdicts[0]


@pytest.mark.parametrize("answer,gold", [
    ("(2^3)^4", "4096"),  # a power of a power is not a tower
    ("2^{10}", "1024"),
    ("3 \\times 10^{8}", "300000000"),
    ("e^{-x^2/2}", "e^{-\\frac{x^2}{2}}"),
    ("2^{n+1}", "2 \\cdot 2^{n}"),
    ("10^{-5}", "0.00001"),
])
def test_the_guard_leaves_ordinary_powers_alone(warm_grader, answer, gold):
    assert risky(normalize(answer)) is None
    assert grade(f"\\boxed{{{answer}}}", gold).outcome == "correct"


FACTORIAL_CHAINS = ["1" + "!" * 200, "1" + "! " * 150, "(" * 30 + "3" + ")!" * 30, "((3)!)!", "{(3!)}!", "3!!"]


@pytest.mark.parametrize("answer", FACTORIAL_CHAINS)
def test_factorial_chains_are_compared_as_text_at_once(warm_grader, answer):
    # found by bench.fuzz: 1 and 200 `!` took 12 s in sympy's evalf; ((3)!)! raised OverflowError
    assert risky(answer) == "large factorial"
    verdicts = []
    assert _seconds(lambda c: verdicts.append(grade(c, "720")), f"\\boxed{{{answer}}}", repeat=1) < 1.0
    assert verdicts[0].outcome == "incorrect" and verdicts[0].detail.startswith("large factorial"), verdicts[0]


@pytest.mark.parametrize("answer,gold", [("120", "5!"), ("5!", "120"), ("1! + 2! + 3!", "9"), ("(n+1)!", "(n+1) n!")])
def test_single_factorials_still_evaluate(answer, gold):
    assert risky(answer) is None
    assert grade(f"\\boxed{{{answer}}}", gold).correct
