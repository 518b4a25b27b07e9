"""`Verdict`: the one message the verifier returns per (completion, gold) pair.

It crosses process boundaries (grading subprocess -> Ray actor -> driver), so it holds
plain Python values only: never a sympy object (stringifying some of those hangs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# Every grading path ends in exactly one of these. Only `correct` earns reward r = +1;
# everything else is r = -1 (docs/algorithm.md, step 2 "Judge"), unless a user's reward
# function (`verifier.reward_fn`) gave a float `score`: then r is that float.
OUTCOMES = ("correct", "incorrect", "no_answer", "truncated", "timeout", "error")


@dataclass(frozen=True)
class Verdict:
    """Outcome of grading one response against its gold answer.

    correct:   True iff outcome == "correct"; the reward is +1 if correct else -1.
    outcome:   one of OUTCOMES.
    answer:    the extracted answer text (None when nothing was extracted).
    latency_s: wall-clock seconds spent grading this sample.
    detail:    why (for error / timeout / no_answer / rescues), else None.
    judge:     what the LLM judge said ("yes" / "no" / "error"; None: not asked).
    score:     the float reward of `verifier.reward_fn`, the sample's r (correct iff > 0);
               None: r is the outcome's (`algo.reward_correct` / `reward_incorrect`).

    >>> Verdict(correct=True, outcome="correct", answer="42").correct
    True
    """

    correct: bool
    outcome: str
    answer: str | None = None
    latency_s: float = 0.0
    detail: str | None = None
    judge: str | None = None
    score: float | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"Verdict.outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        if self.correct != (self.outcome == "correct"):
            raise ValueError(f"Verdict.correct={self.correct} contradicts outcome={self.outcome!r}")
        if self.answer is not None and not isinstance(self.answer, str):
            raise TypeError(f"Verdict.answer must be str or None, got {type(self.answer).__name__}")
        if self.score is not None and (not math.isfinite(self.score) or self.correct != (self.score > 0)):
            raise ValueError(f"Verdict.score={self.score} must be finite, and > 0 exactly when correct "
                             f"(correct={self.correct})")

    @property
    def reward(self) -> float:
        """OREAL's outcome reward: +1 if correct else -1 (or the reward function's score)."""
        if self.score is not None:
            return self.score
        return 1.0 if self.correct else -1.0

    def to_tuple(self) -> tuple:
        return (self.correct, self.outcome, self.answer, self.latency_s, self.detail, self.judge, self.score)

    @classmethod
    def from_tuple(cls, t: tuple) -> "Verdict":
        return cls(*t)

    @classmethod
    def failed(cls, outcome: str, detail: str, answer: str | None = None,
               latency_s: float = 0.0) -> "Verdict":
        """A non-correct verdict with a reason."""
        return cls(False, outcome, answer, latency_s, detail)
