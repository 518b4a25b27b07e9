"""`GradingWorker`: one long-lived grading subprocess with a hard deadline per sample.

The subprocess is a fresh interpreter (`python -m verifier.worker`), not a fork: it
inherits no Ray threads, re-runs no `__main__`, and math-verify's `signal.alarm` is never
needed. A warm spare is kept ready, so replacing a killed process costs no start-up time.

Protocol over a socket pair (parent = a Ray actor or any process):

    parent                                      child
    send([(i, completion, gold, finished[, question]), ...])
                                                for each job: send((i, verdict tuple))
    poll(deadline) per job -------------------- deadline passed: SIGKILL the child, the
                                                spare takes over, job i -> `timeout`,
                                                the rest is resent
    EOF (the child died) ---------------------- the spare takes over, job i is retried
                                                once, then -> `error`

The child calls the target `verifier.grade:grade` per job, or, with `verifier.reward_fn`,
`verifier.plugins.reward_fn:grade`, which calls the user's function under the same deadline,
memory cap and environment.

Each job's clock starts when the previous verdict arrived (or the batch was sent), so a
slow sample never eats its successors' time. Parsed sympy objects stay in the child; the
parent receives plain tuples.

The child parses untrusted text (model output) with sympy and math-verify, so it gets its
parent's environment without secrets (`child_env`, `scrub_secrets`): on a local cluster a
Ray actor's environment is the driver's, W&B key and hub token included.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path

from verifier.config import VerifierConfig
from verifier.extract import extract_answer
from verifier.plugins import reward_fn
from verifier.verdict import Verdict

# (completion, gold, finished) or (completion, gold, finished, question): the problem's text,
# when given, sets the domain of the answer's symbols (verifier.domain).
Job = tuple[str, str, bool] | tuple[str, str, bool, str | None]
DEFAULT_TARGET = "verifier.grade:grade"
_STARTUP_TIMEOUT_S = 120.0
_ROOT = str(Path(__file__).resolve().parents[1])


def grading_target(cfg: VerifierConfig) -> str:
    """What the grading subprocess calls per sample: the math rules, or `verifier.reward_fn`."""
    return reward_fn.TARGET if cfg.reward_fn else DEFAULT_TARGET


class _Child:
    """One grading subprocess and the parent's end of its socket."""

    def __init__(self, cfg: VerifierConfig, target: str) -> None:
        parent_sock, child_sock = socket.socketpair()
        fd = child_sock.fileno()
        # a reward function is imported in the child from where this process finds it
        paths = [reward_fn.import_root(cfg.reward_fn)] if cfg.reward_fn else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "verifier.worker", str(fd), json.dumps(asdict(cfg)), target],
            pass_fds=(fd,), env=child_env(extra_paths=paths), stdin=subprocess.DEVNULL, close_fds=True)
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.ready = False

    def wait_ready(self, timeout: float = _STARTUP_TIMEOUT_S) -> None:
        if self.ready:
            return
        try:
            if not self.conn.poll(timeout):
                raise RuntimeError(f"grading subprocess not ready after {timeout}s")
            self.conn.recv()
        except (EOFError, OSError) as e:
            raise RuntimeError(f"grading subprocess died at start (exit {self.proc.poll()})") from e
        self.ready = True

    def kill(self) -> None:
        self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.conn.close()


class GradingWorker:
    """Owns a grading subprocess (plus a warm spare); `grade_many` returns exactly one
    Verdict per job on every path: reply, deadline, or crash."""

    def __init__(self, cfg: VerifierConfig, target: str | None = None, spare: bool = True) -> None:
        self.cfg = cfg
        # "module:function" with grade()'s signature: by the config (`grading_target`); tests inject others
        self.target = target or grading_target(cfg)
        self.spare = spare
        self._child: _Child | None = None
        self._spare: _Child | None = None
        self.restarts = 0  # every replacement: deadline kills and deaths
        self.crashes = 0  # the grading process died on its own (a fault, not a deadline)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Make sure a ready child exists (the warm spare if any), then warm a new spare."""
        if self._child is None:
            child, self._spare = self._spare or _Child(self.cfg, self.target), None
            try:
                child.wait_ready()
            except RuntimeError:  # e.g. the spare died while idle: one fresh try
                child.kill()
                child = _Child(self.cfg, self.target)
                child.wait_ready()
            self._child = child
        if self.spare and self._spare is None:
            self._spare = _Child(self.cfg, self.target)  # warms up while we grade

    def _replace(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child = None
            self.restarts += 1
        self.start()

    def shutdown(self) -> None:
        for c in (self._child, self._spare):
            if c is not None:
                c.kill()
        self._child = self._spare = None

    @property
    def pid(self) -> int | None:
        return self._child.proc.pid if self._child is not None else None

    # ---------------------------------------------------------------- grading
    def grade_many(self, jobs: Sequence[Job]) -> list[Verdict]:
        """Grade jobs in order; every path yields one Verdict per job."""
        results: list[Verdict | None] = [None] * len(jobs)
        attempts = [0] * len(jobs)
        pending = list(range(len(jobs)))
        while pending:
            if self._child is None or self._child.proc.poll() is not None:
                self.crashes += self._child is not None
                self._replace()
            try:
                self._child.conn.send([(i, *jobs[i]) for i in pending])
            except OSError:
                self.crashes += 1
                self._replace()
                continue
            pending = self._collect(jobs, pending, results, attempts)
        return results  # type: ignore[return-value]

    def _collect(self, jobs, pending, results, attempts) -> list[int]:
        """Read verdicts for `pending` until done or the child is gone; return what is left."""
        timeout, conn = self.cfg.timeout_s, self._child.conn
        start = time.monotonic()
        for pos, i in enumerate(pending):
            ok = conn.poll(max(0.0, start + timeout - time.monotonic()))
            elapsed = time.monotonic() - start
            if not ok:  # deadline: kill; this job times out; the rest go to the spare
                self._replace()
                results[i] = Verdict.failed("timeout", f"no verdict within {timeout}s",
                                            self._answer(jobs[i]), elapsed)
                return pending[pos + 1:]
            try:
                j, tup = conn.recv()
                if j != i:
                    raise EOFError(f"protocol error: verdict for job {j}, expected {i}")
            except (EOFError, OSError):  # the child died (or misbehaved) under this job
                self.crashes += 1
                self._replace()
                attempts[i] += 1
                if attempts[i] < 2:
                    return pending[pos:]
                results[i] = Verdict.failed("error", "grading process died twice on this sample",
                                            self._answer(jobs[i]), elapsed)
                return pending[pos + 1:]
            results[i] = Verdict.from_tuple(tup)  # latency_s: the child's own grading time
            start = time.monotonic()
        return []

    def _answer(self, job: Job) -> str | None:
        """Extracted answer for a verdict made in the parent (pure string code)."""
        try:
            return extract_answer(job[0], self.cfg.max_completion_chars)
        except Exception:
            return None


# -------------------------------------------------------------------- the child's environment
# Name parts that mark a variable as a credential (the name split at every "_" or other
# non-alphanumeric character, any case): WANDB_API_KEY, HF_TOKEN, DB_PASS, PROXY_AUTH, ...
SECRET_NAME_PARTS = frozenset({
    "TOKEN", "TOKENS", "AUTHTOKEN", "KEY", "KEYS", "APIKEY", "SECRET", "SECRETS", "PASSWORD", "PASSWORDS",
    "PASSWD", "PASS", "PASSPHRASE", "AUTH", "CREDENTIAL", "CREDENTIALS", "COOKIE", "COOKIES", "SESSION",
    "PRIVATE"})
# A URL with user info before its host: scheme://user:password@host, scheme://token@host.
_URL_CREDENTIALS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@]+@")


def is_secret(name: str, value: str = "") -> bool:
    """Whether a variable looks like a credential: a name part in SECRET_NAME_PARTS, or a value
    holding a URL with user info (HTTPS_PROXY=http://user:pw@host, DATABASE_URL=postgres://u:p@h/db).
    Whole parts only, so KEYBOARD_LAYOUT, TOKENIZERS_PARALLELISM and PASSES are no secrets.

    >>> [is_secret(n) for n in ("WANDB_API_KEY", "hf_token", "DB_PASS", "KEYBOARD_LAYOUT", "PATH")]
    [True, True, True, False, False]
    """
    parts = set(re.split(r"[^A-Z0-9]+", name.upper()))
    return not parts.isdisjoint(SECRET_NAME_PARTS) or _URL_CREDENTIALS.search(value) is not None


def scrub_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without its secret-like variables (`is_secret`): the rule shared by the grading
    child's environment and the variables the driver sends to Ray workers
    (`launch.ray_connect.worker_env`). It errs on the side of dropping: a process that needs
    a credential is given it on purpose, never by inheritance."""
    return {k: v for k, v in env.items() if not is_secret(k, v)}


def child_env(environ: Mapping[str, str] | None = None, extra_paths: Sequence[str | None] = ()) -> dict[str, str]:
    """The grading child's environment: `environ` (default: this process's) without secrets,
    and this repository first on PYTHONPATH (`python -m verifier.worker` must find it), then
    `extra_paths` (where a `verifier.reward_fn` module is found)."""
    env = scrub_secrets(os.environ if environ is None else environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, *extra_paths, env.get("PYTHONPATH")) if p)
    return env


# -------------------------------------------------------------------- child side
def _limit_memory(mb: int) -> None:
    if mb > 0:
        import resource

        limit = mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def child_main(fd: int, cfg_json: str, target: str) -> None:
    """Grade jobs in order, one reply per job, until EOF."""
    conn = Connection(fd)
    cfg = VerifierConfig(**json.loads(cfg_json))
    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(module), name)
    takes_question = _takes_question(fn)
    from verifier import symbolic  # noqa: F401  (warm up sympy + math-verify before "ready")

    fn("\\boxed{\\frac{1}{2}}", "0.5", finished=True, cfg=cfg)
    _limit_memory(cfg.worker_memory_mb)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            jobs = conn.recv()
        except (EOFError, OSError):
            return
        for i, completion, gold, finished, *question in jobs:
            # the question only when given and the target takes it: a grading target with
            # grade()'s older signature (no `question`) still works, in the problem-free domain
            extra = {"question": question[0]} if takes_question and question and question[0] is not None else {}
            v = fn(completion, gold, finished=finished, cfg=cfg, **extra)
            conn.send((i, v.to_tuple()))


def _takes_question(fn) -> bool:
    """Whether the grading target accepts `question=` (or any keyword)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "question" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


if __name__ == "__main__":
    child_main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
