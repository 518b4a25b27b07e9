"""The verifier alarm (`verifier.alarm.check_verdicts`, what rl_step asks after grading):
warn past verifier.warn_frac, stop past verifier.stop_frac, and the thresholds' config."""
from __future__ import annotations

import pytest

from verifier import VerifierConfig
from verifier.alarm import VerifierAlarm, check_verdicts
from verifier.verdict import Verdict

OK = Verdict(True, "correct", "1")
WRONG = Verdict(False, "incorrect", "2")
TIMEOUT = Verdict.failed("timeout", "deadline 3.0 s passed")
ERROR = Verdict.failed("error", "verifier actor failed twice: RayActorError")


def _batch(n_ok: int, n_wrong: int = 0, n_timeout: int = 0, n_error: int = 0) -> list[Verdict]:
    return [OK] * n_ok + [WRONG] * n_wrong + [TIMEOUT] * n_timeout + [ERROR] * n_error


@pytest.mark.parametrize("verdicts,level", [
    (_batch(10), "ok"),
    (_batch(2, 8), "ok"),                      # wrong answers are the policy's fault, not the verifier's
    (_batch(8, n_timeout=2), "ok"),            # 0.2 is not past warn_frac 0.2
    (_batch(7, n_timeout=2, n_error=1), "warn"),  # 0.3: timeouts and errors count together
    (_batch(5, n_error=5), "warn"),            # 0.5 is not past stop_frac 0.5
    (_batch(4, n_timeout=3, n_error=3), "stop"),  # 0.6
    (_batch(0, n_error=16), "stop"),           # a dead verifier: every reward would be -1
    ([], "ok"),
])
def test_levels_at_the_default_thresholds(verdicts, level):
    cfg = VerifierConfig()
    check = check_verdicts(verdicts, cfg.warn_frac, cfg.stop_frac)
    assert check.level == level
    assert check.metrics["verifier/alarm"] == (0.0 if level == "ok" else 1.0)
    n_failed = sum(v.outcome in ("timeout", "error") for v in verdicts)
    assert check.metrics["verifier/failure_frac"] == pytest.approx(n_failed / len(verdicts) if verdicts else 0.0)


def test_thresholds_are_strict_and_configurable():
    verdicts = _batch(9, n_timeout=1)  # share 0.1
    assert check_verdicts(verdicts, warn_frac=0.1, stop_frac=0.1).level == "ok"
    assert check_verdicts(verdicts, warn_frac=0.05, stop_frac=0.5).level == "warn"
    assert check_verdicts(verdicts, warn_frac=0.0, stop_frac=0.05).level == "stop"
    assert check_verdicts(_batch(0, n_error=4), warn_frac=1.0, stop_frac=1.0).level == "ok"  # alarm off


def test_stop_message_names_the_step_counts_key_and_first_reason():
    check = check_verdicts(_batch(2, n_timeout=3, n_error=5), warn_frac=0.2, stop_frac=0.5)
    err = VerifierAlarm(check, step=7)
    text = str(err)
    assert "step 7" in text and "8 of 10" in text and "3 timeout, 5 error" in text
    assert "verifier.stop_frac=0.5" in text and "deadline 3.0 s passed" in text and "\n" not in text
    assert err.check is check and err.step == 7
    warn = check_verdicts(_batch(7, n_timeout=3), warn_frac=0.2, stop_frac=0.5)
    assert "verifier.warn_frac=0.2" in warn.message(3) and "not training" not in warn.message(3)


@pytest.mark.parametrize("kwargs", [{"warn_frac": -0.1}, {"stop_frac": 1.5}, {"warn_frac": 0.6, "stop_frac": 0.5}])
def test_thresholds_config_errors_name_the_keys(kwargs):
    with pytest.raises(ValueError, match=r"verifier\.warn_frac <= verifier\.stop_frac"):
        VerifierConfig(**kwargs)
