"""CPU-seconds spent by a process and every process it starts (Ray's, the actors', vLLM's), by
role, up to a moment: where a start-up's time went when every role shares a few cores, and the
floor that sets (its CPU-seconds over the cores: no schedule of the same work starts faster).

Sampled (psutil, every `every` seconds), so a process that ends between two samples loses up to
one interval of its CPU time: a lower bound, close for processes that live for seconds.
"""
from __future__ import annotations

import os
import threading
import time
from collections import defaultdict


def role_of(cmdline: list[str], is_root: bool) -> str:
    """A short name for a process: "driver" (the sampled command), a Ray actor's class
    ("ray::LearnerWorker.setup" -> "LearnerWorker"), a module run with -m, else the program.

    >>> role_of(["ray::RolloutEngine.generate_stream"], False), role_of(["python", "-m", "verifier.worker", "4"], False)
    ('RolloutEngine', 'verifier.worker')
    >>> role_of(["/x/ray/core/src/ray/raylet/raylet", "--node"], False), role_of(["python", "-m", "launch.train"], True)
    ('raylet', 'driver')
    >>> role_of(["python", "/x/ray/_private/workers/default_worker.py", "--node-ip-address=1"], False)
    'ray worker (no actor)'
    """
    if is_root:
        return "driver"
    if not cmdline:
        return "other"
    if cmdline[0].startswith("ray::"):
        return cmdline[0].removeprefix("ray::").split(".")[0].split()[0] or "ray"
    if "-m" in cmdline[:-1]:
        return cmdline[cmdline.index("-m") + 1]
    program = os.path.basename(next((a for a in cmdline[1:] if a.endswith(".py")), cmdline[0]))
    return "ray worker (no actor)" if program in ("default_worker.py", "setup_worker.py") else program


class TreeSampler:
    """Samples the CPU time of `pid` and its descendants in a thread until `stop()`."""

    def __init__(self, pid: int, every: float = 0.5):
        self.pid, self.every = pid, every
        self.began = time.time()
        self.samples: list[tuple[float, dict[str, float]]] = []  # (seconds since began, role -> CPU-s)
        self._last: dict[tuple[int, float], tuple[str, float]] = {}  # (pid, created) -> (role, CPU-s)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stopped.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        # the role from the latest title: a Ray worker starts as default_worker.py and
                        # takes its actor's name ("ray::LearnerWorker") once it holds one
                        self._last[(p.pid, p.create_time())] = (role_of(p.cmdline(), p.pid == self.pid),
                                                                t.user + t.system)
                except psutil.Error:
                    pass
            self.samples.append((time.time() - self.began, self.by_role()))
            self._stopped.wait(self.every)

    def by_role(self) -> dict[str, float]:
        roles: dict[str, float] = defaultdict(float)
        for role, cpu in list(self._last.values()):
            roles[role] += cpu
        return dict(roles)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def at(self, seconds: float) -> dict[str, float]:
        """CPU-seconds by role at the last sample no later than `seconds` after the start."""
        before = [roles for t, roles in self.samples if t <= seconds]
        return before[-1] if before else {}


def cpu_floor(by_role: dict[str, float], cores: int | None = None) -> dict[str, float]:
    """Total CPU-seconds and the wall floor they set on `cores` (default: this process's).

    >>> cpu_floor({"driver": 10.0, "RolloutEngine": 30.0}, cores=2)
    {'cpu_s': 40.0, 'cores': 2, 'floor_s': 20.0}
    """
    cores = cores or len(os.sched_getaffinity(0))
    total = sum(by_role.values())
    return {"cpu_s": total, "cores": cores, "floor_s": total / cores}
