"""RolloutGroup: the driver's handle on the vLLM rollout actors.

An engine that dies while generating is restarted in its place (`rollout.max_engine_restarts`
per run): the new engine starts from the model path, `on_restart` (set by the driver's roles)
re-forms the weight-sync groups and sends it the current weights with the probe check, and
the dead engine's queries not yet returned are sent again, with their own sampling seeds, so
the step's samples are those an unbroken step would have drawn (`rollout.seeded_sampling`).
Engines stream (`stream`): each query's K samples come back the moment its last one ends.
Every path that ends engines (a restart, `shutdown` after a run or sweep point, a failed
start, the driver's exit) goes through `stop_engines`, which also kills their vLLM engine cores.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import ray

from actors.config import RolloutConfig
from actors.engine import RolloutEngine, reap_processes, request_seeds
from actors.types import Rollout

if TYPE_CHECKING:
    from launch.placement import Placement

log = logging.getLogger("oreal")

# An engine still starting when another failed is waited for this long before it is stopped.
START_WAIT_S = 300


class EngineFailure(RuntimeError):
    """Rollout engines keep dying: more restarts than `rollout.max_engine_restarts`."""


class RolloutGroup:
    def __init__(self, cfg: RolloutConfig, model_path: str, seed: int, env_vars: dict[str, str] | None = None,
                 placement: Placement | None = None, engine_cls: type = RolloutEngine,
                 engine_kwargs: Sequence[dict] | None = None):
        """`placement` puts engine i in its placement group (launch/placement.py); without it
        Ray schedules the engines wherever they fit. `engine_cls` / `engine_kwargs[i]`: a
        stand-in engine with the same methods (scheduling benchmarks and tests)."""
        self.cfg, self.model_path, self.seed, self.placement = cfg, model_path, seed, placement
        self._actor_cls = ray.remote(engine_cls)
        self._engine_kwargs = list(engine_kwargs or [{}] * cfg.num_engines)
        self._opts = dict(num_cpus=cfg.num_cpus_per_actor, num_gpus=cfg.num_gpus_per_actor)
        if env_vars:
            self._opts["runtime_env"] = {"env_vars": env_vars}
        self.actors = [self._start(i) for i in range(cfg.num_engines)]
        # each engine's (node, its processes): its vLLM engine core, killed with it (`stop_engines`)
        self._procs: list[tuple[str, list[tuple[int, float]]] | None] = [None] * len(self.actors)
        try:
            ray.get([a.ready.remote() for a in self.actors])
            self._procs = ray.get([a.processes.remote() for a in self.actors])
        except BaseException as e:
            self._stop_failed_start(wait=isinstance(e, Exception))  # Ctrl-C: stop what is up, now
            raise
        atexit.register(self._stop_at_exit)  # after ray.init's own hook, so it runs while Ray is up
        self.version = 0  # the policy version the engines hold (the last one sent)
        # Called after an engine was restarted: re-form the sync groups, send the current
        # weights, check the probe (launch.roles.Roles). None: the engine keeps the model path.
        self.on_restart: Callable[[], None] | None = None
        self.restarts = 0  # this run
        self._faults: Counter[str] = Counter()  # since the last take_faults()

    def _stop_failed_start(self, wait: bool = True) -> None:
        """An engine failed to start: stop the others and their engine cores before the error
        ends the run. One still starting is waited for (its engine core is known once vLLM's
        `LLM` returns), up to START_WAIT_S (`wait`). A failed actor's own process exits, and
        Ray's default (RAY_kill_child_processes_on_worker_exit) kills its direct children."""
        if wait:
            log.warning("a rollout engine failed to start; stopping the others once their start-up returns "
                        "(up to %d s)", START_WAIT_S)
        deadline = time.monotonic() + (START_WAIT_S if wait else 0)
        refs = [a.processes.remote() for a in self.actors]
        for e, ref in enumerate(refs):
            with contextlib.suppress(Exception):  # dead, or still starting at the deadline
                self._procs[e] = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
        stop_engines(self.actors, self._procs)

    def _stop_at_exit(self) -> None:
        """The driver exits with the engines running (a run that raised): stop them while Ray is
        still up (on a cluster Ray would kill the actors, not their engine cores)."""
        with contextlib.suppress(Exception):
            if ray.is_initialized():
                stop_engines(self.actors, self._procs)

    def _start(self, i: int):
        opts = {**self._opts, **(self.placement.engine_options(i) if self.placement else {})}
        return self._actor_cls.options(**opts).remote(self.cfg, self.model_path, self.seed + i, **self._engine_kwargs[i])

    @property
    def num_workers(self) -> int:
        """vLLM workers over all engines (tensor-parallel ranks): the sync group's receivers."""
        return len(self.actors) * self.cfg.tensor_parallel_size

    def generate(self, query_ids: Sequence[str], prompts: Sequence[str], *, n: int | None = None,
                 greedy: bool = False, seed_key: Sequence[int] | None = None) -> list[list[Rollout]]:
        """K samples per prompt (or `n`; `greedy` for evaluation), in query order (`stream`,
        collected)."""
        out: list[list[Rollout] | None] = [None] * len(query_ids)
        for i, group in self.stream(query_ids, prompts, n=n, greedy=greedy, seed_key=seed_key):
            out[i] = group
        return out  # type: ignore[return-value]

    def stream(self, query_ids: Sequence[str], prompts: Sequence[str], *, n: int | None = None,
               greedy: bool = False, seed_key: Sequence[int] | None = None,
               prefixes: Sequence[Sequence[Rollout] | None] | None = None,
               partial_budget: float | None = None) -> Iterator[tuple[int, list[Rollout]]]:
        """(query index, its K samples) as each query finishes, whichever engine it is on:
        each query goes to the least-loaded engine, every engine streams (`generate_stream`).
        `seed_key` (the driver's run seed and step): with `rollout.seeded_sampling`, query i
        samples with `request_seeds(seed_key)[i]` on whichever engine it lands, so the samples
        do not depend on the routing, the order of arrival or what the engines ran before
        (exact resume; a dead engine's queries re-issued elsewhere draw the same samples).
        `prefixes` / `partial_budget`: partial rollouts (`RolloutEngine.generate_stream`; the
        budget holds on each engine's share)."""
        seeds = (request_seeds(seed_key, query_ids) if seed_key is not None and self.cfg.seeded_sampling
                 and not greedy else None)
        shares = assign_least_loaded([len(p) for p in prompts], len(self.actors))
        pending = {e: idx for e, idx in enumerate(shares) if idx}
        while pending:  # more than one round only when an engine died
            streams = {self.actors[e].generate_stream.options(num_returns="streaming").remote(
                [query_ids[i] for i in idx], [prompts[i] for i in idx], n=n, greedy=greedy,
                seeds=None if seeds is None else [seeds[i] for i in idx],
                **({} if prefixes is None else {"prefixes": [prefixes[i] for i in idx]}),
                **({} if partial_budget is None else {"partial_budget": partial_budget})): e
                for e, idx in pending.items()}
            left = {e: set(range(len(idx))) for e, idx in pending.items()}  # not yet yielded, per engine
            dead: dict[int, BaseException] = {}
            while streams:
                (ready,), _ = ray.wait(list(streams), num_returns=1)
                e = streams[ready]
                try:
                    local, group = ray.get(next(ready))
                except StopIteration:
                    del streams[ready]
                    continue
                except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as err:
                    if isinstance(err, ray.exceptions.RayTaskError) and "EngineDead" not in str(err):
                        raise  # a bug, not a death
                    dead[e] = err
                    del streams[ready]
                    continue
                left[e].discard(local)
                yield pending[e][local], group
            pending = {e: [pending[e][j] for j in sorted(left[e])] for e in dead if left[e]}
            for e, err in dead.items():
                self._faults["reissued_queries"] += len(left[e])
                self.restart(e, err)
            if dead and self.on_restart is not None:
                self.on_restart()

    def restart(self, e: int, err: BaseException | None = None) -> None:
        """Engine e in its place: a new actor from the model path (the caller then sends it the
        current weights). Past `rollout.max_engine_restarts` this run, `EngineFailure`."""
        self.restarts += 1
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}" if err else "asked"
        if self.restarts > self.cfg.max_engine_restarts:
            raise EngineFailure(f"rollout engine {e} died ({reason}); {self.restarts} engine deaths in this run, "
                                f"more than rollout.max_engine_restarts={self.cfg.max_engine_restarts}")
        log.warning("rollout engine %d died (%s); restarting it (%d of rollout.max_engine_restarts=%d)",
                    e, reason, self.restarts, self.cfg.max_engine_restarts)
        stop_engines([self.actors[e]], [self._procs[e]])  # its orphaned engine core would keep the memory
        self.actors[e] = self._start(e)
        ray.get(self.actors[e].ready.remote())
        self._procs[e] = ray.get(self.actors[e].processes.remote())
        self._faults["rollout_engine_restarts"] += 1

    def take_faults(self) -> dict[str, float]:
        """Faults since the last call, as metrics (every key present, zeros included)."""
        out = {f"faults/{k}": float(self._faults[k]) for k in ("rollout_engine_restarts", "reissued_queries")}
        self._faults.clear()
        return out

    def pids(self) -> list[int]:
        """Each engine actor's process id (tests kill them)."""
        return ray.get([a.pid.remote() for a in self.actors])

    # ---- weight sync (learner.weight_sync): metadata through Ray, bytes over the sync group
    def async_join_weight_sync(self, endpoints: list[tuple[str, int]], world_size: int, backend: str,
                               first_rank: int = 1, colocated: bool = False) -> list[ray.ObjectRef]:
        """Every worker of engine e joins every group of `endpoints` (in order; one per learner
        rank in sync_mode shards) as rank first_rank + e * tensor_parallel_size + (its TP rank);
        colocated, engine e takes its weights from learner rank e (same GPU)."""
        tp = self.cfg.tensor_parallel_size
        return [a.join_weight_sync.remote(endpoints, first_rank + e * tp, world_size, backend,
                                          e if colocated else None)
                for e, a in enumerate(self.actors)]

    def async_receive_weights(self, plan_bytes: bytes, version: int,
                              skip_buckets: dict[int, tuple[int, ...]] | None = None) -> list[ray.ObjectRef]:
        """Every engine receives the coming broadcasts into its workers; `skip_buckets` maps an
        engine to buckets it receives but does not load (a test hook)."""
        skip = skip_buckets or {}
        self.version = version
        return [a.receive_weights.remote(plan_bytes, version, skip.get(e, ())) for e, a in enumerate(self.actors)]

    @staticmethod
    def wait(refs: list[ray.ObjectRef]) -> list:
        return ray.get(refs)

    def load_weights(self, blob_ref: ray.ObjectRef, version: int) -> None:
        """The object-store baseline (`bench.bench_sync`), not the run's sync."""
        ray.get([a.load_weights.remote(blob_ref, version) for a in self.actors])

    def probe_logprobs(self, token_ids: Sequence[int]) -> list[list[float]]:
        return ray.get([a.probe_logprobs.remote(list(token_ids)) for a in self.actors])

    def shutdown(self) -> None:
        """Stop every engine and its vLLM engine core (`stop_engines`), as a restart does."""
        atexit.unregister(self._stop_at_exit)
        stop_engines(self.actors, self._procs)


def stop_engines(actors: Sequence, procs: Sequence[tuple[str, list[tuple[int, float]]] | None]) -> int:
    """Kill each engine actor, then SIGKILL its processes (`procs[i]`: engine i's Ray node and
    its (pid, start time)s from `RolloutEngine.processes`, None if unknown): `ray.kill` ends the
    actor's own process only, and vLLM's engine core (its own process unless
    `rollout.in_process_engine`) would live on holding its memory, a GPU's on a cluster. One
    reaping task per node, run there. Returns how many processes were killed."""
    for a in actors:
        with contextlib.suppress(Exception):  # already dead
            ray.kill(a)
    by_node: dict[str, list[tuple[int, float]]] = {}
    for entry in procs:
        if entry and entry[1]:
            by_node.setdefault(entry[0], []).extend(entry[1])
    if not by_node:
        return 0
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    reaper = ray.remote(reap_processes)
    return sum(ray.get([reaper.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=True))
                        .remote(pids) for node, pids in by_node.items()]))


def assign_least_loaded(prompt_lengths: Sequence[int], engines: int) -> list[list[int]]:
    """Query indices per engine: each query, longest prompt first, goes to the engine with the
    least work so far (prompt tokens; every query asks for the same K and max length).

    >>> assign_least_loaded([5, 1, 1, 1, 1, 1], 2)
    [[0, 4], [1, 2, 3, 5]]
    """
    load = [0] * engines
    shares: list[list[int]] = [[] for _ in range(engines)]
    for i in sorted(range(len(prompt_lengths)), key=lambda i: -prompt_lengths[i]):
        e = min(range(engines), key=lambda e: (load[e], len(shares[e])))
        shares[e].append(i)
        load[e] += prompt_lengths[i] + 1
    return [sorted(s) for s in shares]
