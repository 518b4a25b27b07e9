"""`verifier.reward_fn`: a reward function of the user's in place of the math rules.

    verifier.reward_fn=verifier.plugins.string_match:reward        # package.module:function

`function(completion, gold, question) -> bool | float` runs where `verifier.grade.grade` would:
in the grading subprocess (`verifier.worker`), so the per-sample deadline, the memory cap and
the secret-free environment hold for it, and its verdicts go through the same pool, alarm and
rollout record. `load` checks the spec before Ray starts (`launch.preflight.check_reward_fn`),
one line naming the key when it cannot be imported, is not callable or does not take three
arguments.

What a call gives (`verdict_of`):

    True / False            correct / incorrect: r = algo.reward_correct / reward_incorrect (+1 / -1)
    a number (int, float)   r = that number; correct iff > 0: the pass rate, the filter's mixed
                            queries, OREAL's (correct, incorrect) pair and the token RM's label
    it raises, or returns
    anything else or NaN    error (the alarm counts it, as a grading crash: verifier.warn_frac)

A response without the stop token is `truncated` before the function is asked, as in `grade`
(docs/algorithm.md step 2); `truncated`, `timeout` and `error` get `algo.reward_incorrect`.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import numbers
import time
from pathlib import Path
from typing import Callable

from verifier.config import VerifierConfig
from verifier.verdict import Verdict

# The grading subprocess's target when verifier.reward_fn is set (verifier.worker.grading_target).
TARGET = "verifier.plugins.reward_fn:grade"
KEY = "verifier.reward_fn"
_loaded: dict[str, Callable] = {}  # in the grading subprocess: imported once, at its warm-up call


def load(spec: str) -> Callable:
    """The function `spec` ("package.module:function") names, or ValueError (one line, naming
    verifier.reward_fn): a module that cannot be imported, a missing or non-callable name, or a
    function that cannot be called as `function(completion, gold, question)`."""
    module, _, name = spec.partition(":")
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # not found, or the module's own error while importing
        raise ValueError(f"{KEY}={spec}: cannot import {module} ({type(e).__name__}: {_first_line(e)})") from None
    fn = getattr(mod, name, None)
    if fn is None:
        raise ValueError(f"{KEY}={spec}: module {module} ({getattr(mod, '__file__', '?')}) has no {name}")
    if not callable(fn):
        raise ValueError(f"{KEY}={spec}: {name} is a {type(fn).__name__}, not a function")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read (some builtins): called as is
        return fn
    try:
        signature.bind("completion", "gold", "question")
    except TypeError:
        raise ValueError(f"{KEY}={spec}: {name}{signature} cannot be called as {name}(completion, gold, "
                         "question)") from None
    return fn


def import_root(spec: str) -> str | None:
    """The folder this process imports `spec`'s top-level package from, None when it finds
    none. The grading subprocess is a fresh interpreter: a module importable by the Ray actor
    (Ray puts the driver's launch folder on its workers' sys.path) is put on its PYTHONPATH."""
    top = spec.partition(":")[0].split(".")[0]
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if found is None:
        return None
    if found.submodule_search_locations:  # a package (or a namespace package): the folder above it
        return str(Path(next(iter(found.submodule_search_locations))).parent)
    return str(Path(found.origin).parent) if found.has_location and found.origin else None


def verdict_of(value, latency_s: float = 0.0) -> Verdict:
    """The verdict for what the function returned (table in the module docstring).

    >>> verdict_of(True).outcome, verdict_of(0.25).score, verdict_of(0).correct, verdict_of("yes").outcome
    ('correct', 0.25, False, 'error')
    """
    if isinstance(value, bool) or type(value).__name__ in ("bool_", "bool"):  # numpy's bool too
        ok = bool(value)
        return Verdict(ok, "correct" if ok else "incorrect", None, latency_s)
    if isinstance(value, numbers.Real):
        score = float(value)
        if not math.isfinite(score):
            return Verdict.failed("error", f"reward_fn returned {score}, not a finite number", None, latency_s)
        return Verdict(score > 0, "correct" if score > 0 else "incorrect", None, latency_s, score=score)
    return Verdict.failed("error", f"reward_fn returned a {type(value).__name__}, not a bool or a number",
                          None, latency_s)


def grade(completion: str, gold: str, *, finished: bool = True, cfg: VerifierConfig | None = None,
          question: str | None = None) -> Verdict:
    """`cfg.reward_fn`'s verdict on one sample, with `verifier.grade.grade`'s signature (the
    grading subprocess calls it as it would call that). Total: one verdict on every path."""
    t0 = time.perf_counter()
    if not finished:
        return Verdict.failed("truncated", "response did not end with the stop token")
    spec = cfg.reward_fn if cfg is not None else None
    if not spec:
        return Verdict.failed("error", f"{TARGET} grades with {KEY}, which is not set")
    try:
        fn = _loaded.get(spec) or _loaded.setdefault(spec, load(spec))
        value = fn(completion, gold, question)
    except Exception as e:  # the user's code: any error is the verifier's `error`, as a crash of grade()
        return Verdict.failed("error", f"reward_fn raised {type(e).__name__}: {_first_line(e)[:200]}", None,
                              time.perf_counter() - t0)
    return verdict_of(value, time.perf_counter() - t0)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""
