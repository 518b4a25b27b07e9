"""Every path that ends rollout engines kills their vLLM engine cores (`actors.group.stop_engines`):
`shutdown` (after a run or a sweep point), a restart, a failed start and the driver's exit.

No Ray, no vLLM: `actors.group`'s `ray` is swapped for a fake that runs actor methods and
tasks in this process, and each stand-in engine starts a child python process standing in for
its engine core. Killing the stand-in actor (`ray.kill`) leaves that child running, as SIGKILL
leaves vLLM's; only the reaping kills it.
"""
from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys

import psutil
import pytest

import actors.group as group_mod
from actors.config import RolloutConfig
from actors.engine import reap_processes
from actors.group import RolloutGroup, stop_engines


NODE_A, NODE_B = "a" * 56, "b" * 56  # Ray node ids (28 bytes, hex)


def _core() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _ended(proc: subprocess.Popen) -> bool:
    """The process was SIGKILLed (waited for: it is our child, a zombie until then)."""
    try:
        return proc.wait(timeout=10) == -signal.SIGKILL
    except subprocess.TimeoutExpired:
        return False


class CoreEngine:
    """Stands in for RolloutEngine; its engine core is a child process. `node`: the Ray node it
    reports; `fail`: its start raises (as a vLLM engine that cannot start)."""

    started: list[subprocess.Popen] = []

    def __init__(self, cfg, model_path, seed, node: str = NODE_A, fail: bool = False):
        if fail:
            raise RuntimeError("engine failed to start")
        self.node, self.core = node, _core()
        CoreEngine.started.append(self.core)

    def ready(self) -> int:
        return 0

    def processes(self):
        p = psutil.Process(self.core.pid)
        return self.node, [(p.pid, p.create_time())]


class _Ref:
    def __init__(self, fn, *args, **kwargs):
        try:
            self.value, self.error = fn(*args, **kwargs), None
        except Exception as e:  # what ray.get raises
            self.value, self.error = None, e

    def get(self):
        if self.error is not None:
            raise self.error
        return self.value


class _Handle:
    """An actor handle: `handle.method.remote(...)` runs the method now, a ref to its result."""

    def __init__(self, make):
        self.killed = False
        self.ref = _Ref(make)

    def __getattr__(self, name):
        def remote(*args, **kwargs):
            if self.killed or self.ref.error is not None:
                return _Ref(self._dead)
            return _Ref(getattr(self.ref.value, name), *args, **kwargs)
        return type("Method", (), {"remote": staticmethod(remote)})

    def _dead(self):
        raise self.ref.error or RuntimeError("actor killed")  # Ray's RayActorError carries the cause


class FakeRay:
    """The part of `ray` actors.group uses. Records kills and the reaping tasks' options."""

    def __init__(self):
        self.killed: list[_Handle] = []
        self.tasks: list[tuple[dict, tuple]] = []

    def remote(self, target):
        fake = self

        class Remote:
            def __init__(self, opts=None):
                self.opts = opts or {}

            def options(self, **opts):
                return Remote(opts)

            def remote(self, *args, **kwargs):
                if isinstance(target, type):  # an actor class
                    return _Handle(lambda: target(*args, **kwargs))
                fake.tasks.append((self.opts, args))
                return _Ref(target, *args, **kwargs)
        return Remote()

    @staticmethod
    def get(refs, timeout=None):
        return [r.get() for r in refs] if isinstance(refs, list) else refs.get()

    def kill(self, handle):
        handle.killed = True
        self.killed.append(handle)

    @staticmethod
    def is_initialized():
        return True


@pytest.fixture
def fake_ray(monkeypatch):
    fake, exits = FakeRay(), []
    monkeypatch.setattr(group_mod, "ray", fake)
    monkeypatch.setattr(group_mod.atexit, "register", exits.append)
    monkeypatch.setattr(group_mod.atexit, "unregister", exits.remove)
    fake.exits = exits
    CoreEngine.started = []
    yield fake
    for p in CoreEngine.started:
        if p.poll() is None:
            p.kill()
            p.wait()


def _group(engines: int = 2, kwargs=None) -> RolloutGroup:
    cfg = dataclasses.replace(RolloutConfig(), num_engines=engines, max_engine_restarts=2)
    return RolloutGroup(cfg, "stand-in", seed=0, engine_cls=CoreEngine, engine_kwargs=kwargs)


def test_shutdown_kills_every_engines_core_on_its_own_node(fake_ray):
    group = _group(kwargs=[{"node": NODE_A}, {"node": NODE_B}])
    cores = list(CoreEngine.started)
    assert len(cores) == 2 and all(p.poll() is None for p in cores)
    group.shutdown()
    assert set(map(id, fake_ray.killed)) == set(map(id, group.actors))
    assert all(_ended(p) for p in cores)
    # one reaping task per node, pinned there, given that node's engine core only
    placed = {opts["scheduling_strategy"].node_id: [pid for pid, _ in args[0]] for opts, args in fake_ray.tasks}
    assert placed == {NODE_A: [cores[0].pid], NODE_B: [cores[1].pid]}
    assert all(opts["num_cpus"] == 0 for opts, _ in fake_ray.tasks)
    assert fake_ray.exits == []  # nothing left for the driver's exit


def test_restart_reaps_only_the_dead_engines_core_and_shutdown_the_new_one(fake_ray):
    group = _group()
    old, other = CoreEngine.started
    group.restart(0, RuntimeError("EngineDead"))
    assert _ended(old) and other.poll() is None
    new = CoreEngine.started[2]
    assert new.poll() is None and group._procs[0][1][0][0] == new.pid
    group.shutdown()
    assert _ended(other) and _ended(new)


def test_a_failed_start_stops_the_engine_that_started(fake_ray):
    with pytest.raises(RuntimeError, match="engine failed to start"):
        _group(kwargs=[{}, {"fail": True}])
    (core,) = CoreEngine.started
    assert _ended(core)
    assert len(fake_ray.killed) == 2 and fake_ray.exits == []


def test_the_drivers_exit_stops_engines_never_shut_down(fake_ray):
    group = _group(engines=1)
    (core,) = CoreEngine.started
    assert fake_ray.exits == [group._stop_at_exit]
    fake_ray.exits[0]()  # what atexit runs when the driver ends after an error
    assert _ended(core)


def test_no_known_processes_no_reaping_task(fake_ray):
    assert stop_engines([], [None, (NODE_A, [])]) == 0 and fake_ray.tasks == []


def test_reap_skips_a_pid_that_is_now_another_process():
    """A pid whose start time differs is a reused pid: left alone."""
    p = _core()
    try:
        started = psutil.Process(p.pid).create_time()
        assert reap_processes([(p.pid, started - 5.0)]) == 0 and p.poll() is None
        assert reap_processes([(p.pid, started), (2**22 + 17, 0.0)]) == 1 and _ended(p)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_reap_returns_once_the_killed_processes_have_ended():
    """The next engine may start the moment reaping returns: every killed process has ended
    by then (a zombie, here, as our unwaited child), not merely been sent SIGKILL."""
    procs = [_core() for _ in range(4)]
    try:
        known = [(p.pid, psutil.Process(p.pid).create_time()) for p in procs]
        assert reap_processes(known) == 4
        assert [psutil.Process(p.pid).status() for p in procs] == [psutil.STATUS_ZOMBIE] * 4
        assert all(_ended(p) for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
