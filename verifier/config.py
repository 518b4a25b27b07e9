"""`VerifierConfig`: every verifier default lives here (schema of conf/verifier/*.yaml)."""
from __future__ import annotations

import re
from dataclasses import dataclass

# "package.module:function" (verifier.reward_fn).
REWARD_FN_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


@dataclass
class VerifierConfig:
    # Ray actors in the pool; each owns one long-lived grading subprocess.
    num_workers: int = 2
    # CPUs Ray reserves per actor (0 lets a whole topology fit on 2 cores).
    actor_num_cpus: float = 0.0
    # Hard wall-clock deadline per sample (s); on expiry the subprocess is killed and restarted.
    timeout_s: float = 3.0
    # Completions longer than this keep only their last `max_completion_chars` characters.
    max_completion_chars: int = 20_000
    # Extracted answers longer than this are rejected (outcome `incorrect`) before parsing.
    max_answer_chars: int = 1_000
    # Answers nested deeper than this (brackets/braces) are rejected before parsing.
    max_nesting: int = 40
    # A decimal answer approximating an irrational / non-terminating gold needs this many
    # significant digits (and must agree with the exact value to its last digit).
    approx_min_sig_digits: int = 6
    # What free symbols in answers may be when two expressions are compared: `complex` assumes
    # nothing (|x| != x, \\sqrt{x^2} != x); `real` or `positive` when the task's problems say so.
    symbol_domain: str = "complex"
    # Grade each problem with the domain its text states ("x is a positive real number" ->
    # positive, "for real x" -> real, "complex" -> complex; verifier.domain), symbol_domain where
    # it states none. Needs the question with the sample (VerifierPool.grade(..., questions=)).
    domain_from_problem: bool = True
    # Address-space cap for the grading subprocess in MiB (0 = no cap).
    worker_memory_mb: int = 1_024
    # Samples per Ray task; smaller chunks balance load better, larger ones cost less overhead.
    chunk_size: int = 16
    # Startup self-check: refuse to train when more than this fraction of gold answers fail.
    self_check_max_fail_frac: float = 0.02
    # Alarm: when more than this share of a step's verdicts are `timeout` or `error`, the
    # run warns (a log line, metric verifier/alarm = 1) and still trains on the step.
    warn_frac: float = 0.2
    # Past this share the run stops with a checkpoint (VerifierAlarm) before training on the
    # step: a broken verifier must never train the policy on all-wrong rewards. 1 = never.
    stop_frac: float = 0.5
    # Dead verifier actors replaced in one run before the run stops (VerifierFailure); each
    # replacement is counted in faults/verifier_actor_restarts.
    max_actor_restarts: int = 16
    # Times a chunk whose actor died is resent to a fresh actor; then its samples get `error`.
    max_chunk_resends: int = 1
    # Optional LLM judge (OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1); None = off.
    judge_url: str | None = None
    # Model name sent to the judge endpoint.
    judge_model: str | None = None
    # Total seconds allowed for all judge requests of one chunk, retries included; no answer
    # in time counts as incorrect (and as a judge error).
    judge_timeout_s: float = 10.0
    # Concurrent judge requests per actor.
    judge_max_concurrency: int = 8
    # Only one-line answers without \\text and at most this long are sent to the judge.
    judge_max_answer_chars: int = 200
    # Retries (with backoff, within judge_timeout_s) of a judge request on HTTP 429/5xx or a
    # reset connection.
    judge_max_retries: int = 2
    # Alarm (a warning, verifier/alarm = 1): more than this share of a step's judge questions
    # were rescues, with at least 8 asked (a judge that says YES to everything). 1 = never.
    alarm_judge_rescued_frac: float = 0.5
    # A reward function of yours, "package.module:function", called as function(completion,
    # gold, question) -> bool or float, grades instead of the math rules: in the same grading
    # subprocesses, deadline, memory cap, alarm and records (docs/verifier.md, "Your own reward
    # function"); a float is the reward r itself (correct iff > 0). null: the math rules.
    reward_fn: str | None = None

    def __post_init__(self) -> None:
        positive = ("num_workers", "timeout_s", "max_completion_chars", "max_answer_chars",
                    "max_nesting", "approx_min_sig_digits", "chunk_size", "judge_timeout_s",
                    "judge_max_concurrency", "judge_max_answer_chars")
        for key in ("max_actor_restarts", "max_chunk_resends", "judge_max_retries"):
            if getattr(self, key) < 0:
                raise ValueError(f"verifier.{key} must be >= 0, got {getattr(self, key)}")
        for key in positive:
            if not getattr(self, key) > 0:
                raise ValueError(f"verifier.{key} must be > 0, got {getattr(self, key)!r}")
        if self.actor_num_cpus < 0:
            raise ValueError(f"verifier.actor_num_cpus must be >= 0, got {self.actor_num_cpus}")
        if self.worker_memory_mb < 0:
            raise ValueError(f"verifier.worker_memory_mb must be >= 0, got {self.worker_memory_mb}")
        if not 0.0 <= self.self_check_max_fail_frac <= 1.0:
            raise ValueError("verifier.self_check_max_fail_frac must be in [0, 1], "
                             f"got {self.self_check_max_fail_frac}")
        if not 0.0 <= self.warn_frac <= self.stop_frac <= 1.0:
            raise ValueError("need 0 <= verifier.warn_frac <= verifier.stop_frac <= 1, "
                             f"got warn_frac={self.warn_frac}, stop_frac={self.stop_frac}")
        if not 0.0 <= self.alarm_judge_rescued_frac <= 1.0:
            raise ValueError("verifier.alarm_judge_rescued_frac must be in [0, 1], "
                             f"got {self.alarm_judge_rescued_frac}")
        if self.symbol_domain not in ("complex", "real", "positive"):
            raise ValueError("verifier.symbol_domain must be complex, real or positive, "
                             f"got {self.symbol_domain!r}")
        if self.reward_fn is not None and not REWARD_FN_SPEC.match(self.reward_fn):
            raise ValueError(f"verifier.reward_fn must be 'package.module:function', got {self.reward_fn!r}")
        if self.reward_fn is not None and self.judge_url is not None:
            raise ValueError("verifier.reward_fn with verifier.judge_url: the LLM judge re-checks the math "
                             "rules' answers, which reward_fn replaces; set one of the two")
        if self.judge_url is not None and not self.judge_model:
            raise ValueError("verifier.judge_model must be set when verifier.judge_url is set")
