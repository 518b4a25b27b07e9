"""verifier/: grades responses against gold answers (OREAL step 2, "Judge").

Pure core (no Ray): `grade`, `Verdict`, `VerifierConfig`, `metrics`, `self_check`,
`check_verdicts` (the alarm: `VerifierAlarm` when grading broke).
Ray wrapper: `VerifierPool` (imported lazily, so `import verifier` never imports ray).
"""
from verifier.alarm import AlarmCheck, VerifierAlarm, check_verdicts
from verifier.config import VerifierConfig
from verifier.grade import grade
from verifier.metrics import metrics
from verifier.self_check import self_check
from verifier.verdict import OUTCOMES, Verdict

__all__ = ["grade", "Verdict", "OUTCOMES", "VerifierConfig", "VerifierPool", "VerifierFailure", "metrics", "self_check",
           "check_verdicts", "AlarmCheck", "VerifierAlarm"]


def __getattr__(name: str):
    if name in ("VerifierPool", "VerifierFailure"):
        from verifier import pool

        return getattr(pool, name)
    raise AttributeError(f"module 'verifier' has no attribute {name!r}")
