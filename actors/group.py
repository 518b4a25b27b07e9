"""RolloutGroup: the driver's handle on the vLLM rollout actors."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import ray

from actors.config import RolloutConfig
from actors.engine import RolloutEngine, request_seeds
from actors.types import Rollout

if TYPE_CHECKING:
    from launch.placement import Placement


class RolloutGroup:
    def __init__(self, cfg: RolloutConfig, model_path: str, seed: int, env_vars: dict[str, str] | None = None,
                 placement: Placement | None = None):
        """`placement` puts engine i in its placement group (launch/placement.py); without it
        Ray schedules the engines wherever they fit."""
        self.cfg = cfg
        actor = ray.remote(RolloutEngine)
        opts = dict(num_cpus=cfg.num_cpus_per_actor, num_gpus=cfg.num_gpus_per_actor)
        if env_vars:
            opts["runtime_env"] = {"env_vars": env_vars}
        self.actors = [actor.options(**{**opts, **(placement.engine_options(i) if placement else {})})
                       .remote(cfg, model_path, seed + i) for i in range(cfg.num_engines)]
        ray.get([a.ready.remote() for a in self.actors])

    @property
    def num_workers(self) -> int:
        """vLLM workers over all engines (tensor-parallel ranks): the sync group's receivers."""
        return len(self.actors) * self.cfg.tensor_parallel_size

    def generate(self, query_ids: Sequence[str], prompts: Sequence[str], *, n: int | None = None,
                 greedy: bool = False, seed_key: Sequence[int] | None = None) -> list[list[Rollout]]:
        """K samples per prompt (or `n`; `greedy` for evaluation), each query sent to the
        least-loaded engine; results in query order. `seed_key` (the driver's run seed and
        step): with `rollout.seeded_sampling`, query i samples with `request_seeds(seed_key)[i]`
        on whichever engine it lands, so the samples do not depend on the routing or on
        what the engines ran before (exact resume)."""
        seeds = (request_seeds(seed_key, query_ids) if seed_key is not None and self.cfg.seeded_sampling
                 and not greedy else None)
        shares = assign_least_loaded([len(p) for p in prompts], len(self.actors))
        refs = {e: self.actors[e].generate.remote([query_ids[i] for i in idx], [prompts[i] for i in idx],
                                                  n=n, greedy=greedy,
                                                  seeds=None if seeds is None else [seeds[i] for i in idx])
                for e, idx in enumerate(shares) if idx}
        out: list[list[Rollout] | None] = [None] * len(query_ids)
        for e, part in zip(refs, ray.get(list(refs.values()))):
            for i, group in zip(shares[e], part):
                out[i] = group
        return out  # type: ignore[return-value]

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
        for a in self.actors:
            ray.kill(a)


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
