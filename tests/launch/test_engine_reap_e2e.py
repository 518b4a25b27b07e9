"""vLLM engine cores do not outlive their engines (`actors.group.stop_engines`), with
`rollout.in_process_engine=false`: each engine's core in a process of its own, as on GPUs.

Ray stays up across runs here (the session's `ray_cluster`), as on a cluster where a sweep's
points run one after another: what a finished run leaves behind, the next one finds. Engine
cores are found independently of the code under test: every descendant of an engine actor's
process whose title is vLLM's (`VLLM::EngineCore`), by psutil.
"""
from __future__ import annotations

import dataclasses

import psutil
import pytest

from conftest import compose

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# As small as a run gets (tests/launch/test_sweep_e2e.py's), engine cores in their own processes.
FAST = ["steps=1", "prompts_per_step=2", "rollout.n_samples=2", "rollout.max_new_tokens=16", "eval_size=1",
        "eval_every=0", "model.warmup.enabled=false", "algo.actor_freeze_steps=0", "ckpt.enabled=false",
        "wandb.mode=disabled", "rollout.in_process_engine=false"]


def _engine_cores(actor_pids) -> list[tuple[int, float]]:
    """(pid, start time) of every vLLM engine core below these engine actors' processes."""
    found = []
    for pid in actor_pids:
        try:
            kids = psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            continue
        for k in kids:
            try:
                if "EngineCore" in k.name() or any("EngineCore" in part for part in k.cmdline()):
                    found.append((k.pid, k.create_time()))
            except psutil.Error:
                pass
    return found


def _alive(procs) -> list[int]:
    """Those of `procs` still running (the same process: start time checked; zombies are not)."""
    alive = []
    for pid, started in procs:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - started) < 1e-3 and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.Error:
            pass
    return alive


def test_no_engine_core_of_a_finished_run_is_alive_when_the_next_starts(ray_cluster, tmp_path, monkeypatch):
    from actors.group import RolloutGroup
    from launch.config import to_train_config
    from launch.loop import train

    runs: list[dict] = []  # per run: its engine cores; the earlier runs' still alive as its engines start
    original = RolloutGroup.__init__

    def recording_init(self, *args, **kwargs):
        alive_at_start = _alive([core for run in runs for core in run["cores"]])
        original(self, *args, **kwargs)
        runs.append({"alive_at_start": alive_at_start, "cores": _engine_cores(self.pids())})

    monkeypatch.setattr(RolloutGroup, "__init__", recording_init)
    cfg = to_train_config(compose(FAST))
    assert cfg.rollout.in_process_engine is False
    for n in range(2):
        train(cfg, tmp_path / f"run{n}")
    print(f"\nengine cores per run: {[run['cores'] for run in runs]}")
    assert len(runs) == 2
    assert all(len(run["cores"]) >= cfg.rollout.num_engines for run in runs)  # the detection sees them
    assert runs[1]["alive_at_start"] == [], "the first run's vLLM engine core outlived it"
    assert _alive(runs[1]["cores"]) == [], "the second run's vLLM engine core outlived it"


def _failing_second_engine():
    """A RolloutEngine whose engine 1 raises in its constructor (after engine 0 began starting):
    a start that fails inside the actor, as a bad vLLM argument or an OOM would. (A bad keyword
    argument fails in `.remote()` itself, before any engine starts.)"""
    import sys

    import ray

    from actors.engine import RolloutEngine

    class FailingSecond(RolloutEngine):
        def __init__(self, cfg, model_path, seed=0):
            if seed == 1:
                raise RuntimeError("engine 1 cannot start: not_an_argument")
            super().__init__(cfg, model_path, seed)

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    return FailingSecond


def test_a_failed_start_leaves_no_engine_core(ray_cluster, monkeypatch):
    """Engine 1 cannot start; engine 0, which did, is stopped with its core."""
    import ray

    import actors.group as group_mod
    from actors.group import RolloutGroup
    from launch.config import to_train_config
    from launch.model.tiny_model import resolve_model_path

    cfg = to_train_config(compose(FAST))
    path = resolve_model_path(cfg.model.path, cfg.model.tiny)
    seen: list[tuple[int, float]] = []
    original = group_mod.stop_engines

    def recording_stop(actors, procs):
        for a in actors:  # engine 0 is up by now (the failed start waits for it)
            try:
                seen.extend(_engine_cores([ray.get(a.pid.remote(), timeout=5)]))
            except Exception:  # engine 1: never started
                pass
        return original(actors, procs)

    monkeypatch.setattr(group_mod, "stop_engines", recording_stop)
    with pytest.raises(Exception, match="not_an_argument"):
        # no CPU asked: in the full suite the session's roles hold the cluster's CPUs, and an
        # engine 0 left pending would never start (nothing to stop, nothing seen)
        RolloutGroup(dataclasses.replace(cfg.rollout, num_engines=2, num_cpus_per_actor=0), path, seed=0,
                     engine_cls=_failing_second_engine())
    assert len(seen) >= 1, "engine 0's vLLM engine core was never seen"
    assert _alive(seen) == [], "a failed start left engine 0's vLLM engine core running"
