"""The query `d` every task and benchmark loader produces."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One query `d`: the question, its gold answer, and optionally a worked solution.

    >>> Problem("arith-train-0", "Compute 47 + 38 - 19.", "66",
    ...         "47 + 38 = 85. 85 - 19 = 66. The answer is \\\\boxed{66}.").answer
    '66'
    """

    id: str
    question: str
    # Gold answer as plain text (what the verifier compares against).
    answer: str
    # Worked solution ending in \boxed{answer}, for the supervised warm-up; None if unknown.
    solution: str | None = None

    def __post_init__(self) -> None:
        if not (self.question.strip() and self.answer.strip()):
            raise ValueError(f"problem {self.id!r} has an empty question or answer")
