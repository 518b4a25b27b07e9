"""Grading targets for tests, run inside grading subprocesses ("module:function" specs).

`misbehave` grades normally unless the completion asks it to sleep, hang or crash.
"""
import os
import signal
import time

from verifier.grade import grade
from verifier.verdict import Verdict

MISBEHAVE = "tests.verifier.verifier_targets:misbehave"


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
