"""The verifier alarm: a step whose grading broke must not train the policy.

A `timeout` or `error` verdict is a failure of the verifier, not of the policy, yet it is
scored like a wrong answer (r = -1). When many samples of a step fail that way the rewards
say nothing about the policy (all of them failing would train it on nothing but -1s). So
after grading, the driver asks `check_verdicts` for the step's failure share

    share = (#timeout + #error) / #verdicts

and, against `verifier.warn_frac` <= `verifier.stop_frac`:

- share <= warn_frac: fine (`verifier/alarm` = 0);
- warn_frac < share <= stop_frac: a warning line, `verifier/alarm` = 1, the step trains;
- share > stop_frac: `VerifierAlarm` is raised BEFORE the learner sees the step (the
  training loop saves a checkpoint and stops).

With the LLM judge, a step where more than `verifier.alarm_judge_rescued_frac` (0.5) of at
least JUDGE_MIN_ASKED judge questions were rescues also warns: a judge that says YES to
everything (or is being talked into it) must not go unnoticed.

>>> from verifier.verdict import Verdict
>>> ok, bad = Verdict(True, "correct", "1"), Verdict.failed("timeout", "deadline")
>>> check_verdicts([ok, ok, ok, bad], warn_frac=0.2, stop_frac=0.5).level
'warn'
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from verifier.verdict import Verdict

# Outcomes that mean the verifier failed to grade, whatever the response was.
FAILURE_OUTCOMES = ("timeout", "error")
# Judge questions in a step below which the rescued share raises no alarm.
JUDGE_MIN_ASKED = 8


class VerifierAlarm(RuntimeError):
    """Too many verdicts of one step were `timeout` or `error` (past `verifier.stop_frac`):
    the step is not trained on. Carries the `AlarmCheck` that raised it."""

    def __init__(self, check: "AlarmCheck", step: int | None = None) -> None:
        self.check = check
        self.step = step
        super().__init__(check.message(step))


@dataclass(frozen=True)
class AlarmCheck:
    """The verdict of the alarm on one step's verdicts."""

    # "ok" | "warn" | "stop".
    level: str
    # (#timeout + #error) / #verdicts (0 for no verdicts).
    share: float
    timeouts: int
    errors: int
    total: int
    warn_frac: float
    stop_frac: float
    # The first failure's detail (why it timed out or errored), for the message.
    example: str | None = None
    # LLM judge questions and rescues, and the rescued share past which it warns.
    judge_asked: int = 0
    judge_rescued: int = 0
    judge_frac: float = 1.0

    @property
    def judge_alarm(self) -> bool:
        return self.judge_asked >= JUDGE_MIN_ASKED and self.judge_rescued > self.judge_frac * self.judge_asked

    @property
    def metrics(self) -> dict[str, float]:
        return {"verifier/failure_frac": self.share, "verifier/alarm": float(self.level != "ok")}

    def message(self, step: int | None = None) -> str:
        where = f"step {step}: " if step is not None else ""
        limit = (f"verifier.stop_frac={self.stop_frac:g}" if self.level == "stop"
                 else f"verifier.warn_frac={self.warn_frac:g}")
        why = f"; first: {self.example}" if self.example else ""
        tail = " - not training on this step" if self.level == "stop" else ""
        judge = (f"LLM judge rescued {self.judge_rescued} of {self.judge_asked} answers it was asked "
                 f"about, past verifier.alarm_judge_rescued_frac={self.judge_frac:g}")
        if self.judge_alarm and self.share <= self.warn_frac:
            return where + judge
        judge = f"; {judge}" if self.judge_alarm else ""
        return (f"{where}verifier failed on {self.timeouts + self.errors} of {self.total} samples "
                f"({self.timeouts} timeout, {self.errors} error; {self.share:.0%}), past {limit}{why}{judge}{tail}")


def check_verdicts(verdicts: Sequence[Verdict], warn_frac: float, stop_frac: float,
                   judge_rescued_frac: float = 1.0) -> AlarmCheck:
    """The alarm level of one step's verdicts (pure; see the module docstring)."""
    timeouts = sum(v.outcome == "timeout" for v in verdicts)
    errors = sum(v.outcome == "error" for v in verdicts)
    total = len(verdicts)
    share = (timeouts + errors) / total if total else 0.0
    level = "stop" if share > stop_frac else "warn" if share > warn_frac else "ok"
    example = next((f"{v.outcome}: {v.detail}" for v in verdicts if v.outcome in FAILURE_OUTCOMES and v.detail),
                   None)
    asked = sum(v.judge is not None for v in verdicts)
    rescued = sum(v.judge == "yes" for v in verdicts)
    check = AlarmCheck(level, share, timeouts, errors, total, warn_frac, stop_frac, example,
                       asked, rescued, judge_rescued_frac)
    return replace(check, level="warn") if level == "ok" and check.judge_alarm else check
