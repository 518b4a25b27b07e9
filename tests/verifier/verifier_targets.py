"""Grading targets for tests, run inside grading subprocesses ("module:function" specs).

`misbehave` grades normally unless the completion asks it to sleep, hang or crash.
"""
import os
import signal
import time

from verifier.grade import grade
from verifier.verdict import Verdict

MISBEHAVE = "tests.verifier.verifier_targets:misbehave"

# (name, completion): each must come back within the deadline + 1 s, graded against "3"
ADVERSARIAL = [
    ("tower", "\\boxed{9^{9^{9^9}}}"),
    ("double-exp", "\\boxed{2^{2^{36}}}"),
    ("factorial", "\\boxed{(10^6)!}"),
    ("factorial-braced", "\\boxed{(10^{6})!+1}"),
    ("long", "x" * 100_000 + " so \\boxed{3}"),
    ("long-no-box", "1+" * 50_000),
    ("nested", "\\boxed{" + "(" * 20_000 + "1" + ")" * 20_000 + "}"),
    ("nested-tail", "(" * 20_000 + "The answer is " + "(" * 9_000 + "1" + ")" * 9_000),
    ("big-pow", "\\boxed{10^{10^{10}}+1}"),
    ("many-items", "\\boxed{" + ",".join(["x^2"] * 3000) + "}"),
]


def misbehave(completion, gold, *, finished=True, cfg=None):
    if completion.startswith("sleep:"):
        time.sleep(float(completion.split(":")[1]))
    elif completion == "hang":
        while True:
            pass
    elif completion == "alloc":  # more than the subprocess's address-space cap
        try:
            bytearray(cfg.worker_memory_mb * 2**20 * 2)
        except MemoryError:
            return Verdict.failed("error", "MemoryError")
        return Verdict.failed("error", "allocation was not capped")
    elif completion == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    return grade(completion, gold, finished=finished, cfg=cfg)


SLOW = "tests.verifier.verifier_targets:slow"


def slow(completion, gold, *, finished=True, cfg=None):
    """The real grader, 30 ms slower per sample: a step's grading lasts long enough for a test
    to kill a grading process or actor in the middle of it."""
    time.sleep(0.03)
    return grade(completion, gold, finished=finished, cfg=cfg)


BROKEN = "tests.verifier.verifier_targets:broken"


def broken(completion, gold, *, finished=True, cfg=None):
    """A verifier that errs on every sample (a broken install, a bad grading change)."""
    return Verdict.failed("error", "grading is broken")


ENV_PROBE = "tests.verifier.verifier_targets:env_probe"


def env_probe(completion, gold, *, finished=True, cfg=None):
    """Which of the comma-separated variable names in `completion` the grading process has
    (the verdict's detail; "none" if it has none of them)."""
    seen = [name for name in completion.split(",") if name in os.environ]
    return Verdict.failed("error", ",".join(seen) or "none")


USER_REWARD = "tests.verifier.verifier_targets:user_reward"


def user_reward(completion, gold, question):
    """A `verifier.reward_fn` (not a grading target): the question decides, or a float score."""
    if completion == "question":
        return question == "Q?"
    if completion.startswith("score:"):
        return float(completion[len("score:"):])
    return completion == gold
