"""Placement: where the learner ranks and the rollout engines run on a Ray cluster.

Ray placement groups (PGs) built from the config reserve each role's resources before any
actor starts, so a run that cannot fit fails at once, saying why:

    learner     one PG, one bundle per rank {CPU, GPU}, PACK: the ranks share one node when
                they fit, else as few nodes as possible (STRICT_PACK would refuse the split).
    engine i    its own PG. mp/uni executor: one bundle {CPU, GPU: tensor_parallel_size}, so
                the engine actor sees all its TP GPUs on one node. vLLM's ray executor: TP
                bundles {GPU: 1} under STRICT_PACK (the format vLLM's `initialize_ray_cluster`
                takes from `ray.util.get_current_placement_group()`), the engine actor in
                bundle 0 with no GPU, vLLM's workers in the GPU bundles.
    colocate    one PG of world_size bundles {CPU: both, GPU: 1}: engine i and rank i share
                bundle i, each taking its fraction of the GPU.

Example: world_size 4 on 1 GPU each, 2 engines with tensor_parallel_size 2, two nodes of
4 GPUs: the learner's 4 bundles pack on node A, each engine's {GPU: 2} bundle lands on B.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actors.config import RolloutConfig
from learner.config import LearnerConfig

if TYPE_CHECKING:
    from ray.util.placement_group import PlacementGroup

Bundles = list[dict[str, float]]


def check_placement(rollout: RolloutConfig, learner: LearnerConfig) -> None:
    """Checks that need both configs (called by TrainConfig.__post_init__, before Ray starts)."""
    gpus, tp = rollout.num_gpus_per_actor, rollout.tensor_parallel_size
    if learner.colocate:
        if rollout.num_engines != learner.world_size:
            raise ValueError(f"learner.colocate pairs engine i with rank i: rollout.num_engines={rollout.num_engines} "
                             f"must equal learner.world_size={learner.world_size}")
        if tp != 1:
            raise ValueError("learner.colocate shares one GPU per engine and rank: "
                             f"rollout.tensor_parallel_size must be 1, got {tp}")
        if rollout.distributed_executor_backend == "ray":
            raise ValueError("learner.colocate does not support rollout.distributed_executor_backend=ray")
        if (gpus > 0) != (learner.num_gpus_per_rank > 0) or gpus + learner.num_gpus_per_rank > 1:
            raise ValueError(f"learner.colocate: rollout.num_gpus_per_actor={gpus:g} and learner.num_gpus_per_rank="
                             f"{learner.num_gpus_per_rank:g} must both be 0 (CPU) or fractions summing to <= 1")
    elif 0 < gpus < 1:
        raise ValueError(f"rollout.num_gpus_per_actor={gpus:g} contradicts rollout.tensor_parallel_size={tp}: "
                         "a fraction of a GPU needs learner.colocate=true")
    if rollout.distributed_executor_backend == "ray" and gpus == 0:
        raise ValueError("rollout.distributed_executor_backend=ray needs GPUs: "
                         f"rollout.num_gpus_per_actor must be rollout.tensor_parallel_size={tp}, got 0")
    if not (learner.num_cpus_per_rank or learner.num_gpus_per_rank):
        raise ValueError("learner.num_cpus_per_rank and learner.num_gpus_per_rank are both 0: a bundle needs some")
    if not (rollout.num_cpus_per_actor or gpus):
        raise ValueError("rollout.num_cpus_per_actor and rollout.num_gpus_per_actor are both 0: a bundle needs some")


def _bundle(cpus: float, gpus: float) -> dict[str, float]:
    return {k: v for k, v in (("CPU", cpus), ("GPU", gpus)) if v}


def learner_bundles(rollout: RolloutConfig, learner: LearnerConfig) -> tuple[Bundles, str]:
    """The learner's PG: one bundle per rank; colocated, each also holds engine i."""
    if learner.colocate:
        gpu = 1.0 if learner.num_gpus_per_rank else 0.0
        bundle = _bundle(learner.num_cpus_per_rank + rollout.num_cpus_per_actor, gpu)
    else:
        bundle = _bundle(learner.num_cpus_per_rank, learner.num_gpus_per_rank)
    return [dict(bundle) for _ in range(learner.world_size)], "PACK"


def engine_bundles(rollout: RolloutConfig) -> tuple[Bundles, str]:
    """One engine's PG: all its TP GPUs on one node (one bundle per GPU for vLLM's ray executor)."""
    if rollout.executor_backend == "ray":
        tp = rollout.tensor_parallel_size
        return [_bundle(rollout.num_cpus_per_actor, 1.0)] + [{"GPU": 1.0} for _ in range(tp - 1)], "STRICT_PACK"
    return [_bundle(rollout.num_cpus_per_actor, rollout.num_gpus_per_actor)], "PACK"


def _options(pg: PlacementGroup, bundle: int, cpus: float, gpus: float) -> dict[str, Any]:
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=bundle,
                                                placement_group_capture_child_tasks=True)
    return dict(num_cpus=cpus, num_gpus=gpus, scheduling_strategy=strategy)


@dataclass
class Placement:
    """The run's PGs; `*_options` are the `.options(...)` kwargs of rank r / engine i."""

    rollout: RolloutConfig
    learner: LearnerConfig
    learner_pg: PlacementGroup
    # One PG per engine; empty when colocated (the engines share the learner's PG).
    engine_pgs: list[PlacementGroup] = field(default_factory=list)

    def learner_options(self, rank: int) -> dict[str, Any]:
        return _options(self.learner_pg, rank, self.learner.num_cpus_per_rank, self.learner.num_gpus_per_rank)

    def engine_options(self, i: int) -> dict[str, Any]:
        cpus, gpus = self.rollout.num_cpus_per_actor, self.rollout.num_gpus_per_actor
        if self.learner.colocate:
            return _options(self.learner_pg, i, cpus, gpus)
        # vLLM's ray executor places its own workers in the GPU bundles.
        return _options(self.engine_pgs[i], 0, cpus, 0 if self.rollout.executor_backend == "ray" else gpus)

    def remove(self) -> None:
        from ray.util import remove_placement_group

        for pg in [self.learner_pg, *self.engine_pgs]:
            remove_placement_group(pg)


def build_placement(rollout: RolloutConfig, learner: LearnerConfig, timeout_s: float) -> Placement:
    """Create and wait for the learner's PG, then the engines' (the learner packs first).
    Raises TimeoutError, one line, when a PG is not ready within `timeout_s` in all."""
    import ray
    from ray.util import placement_group, remove_placement_group

    deadline = time.monotonic() + timeout_s
    made: list[PlacementGroup] = []

    def make(bundles: Bundles, strategy: str) -> PlacementGroup:
        made.append(placement_group(bundles, strategy=strategy))
        return made[-1]

    def wait(what: str, pg: PlacementGroup, bundles: Bundles, strategy: str) -> None:
        ready, _ = ray.wait([pg.ready()], timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            msg = (f"{what} placement group not ready after {timeout_s:g}s (ray.placement_timeout_s): "
                   f"asked {_bundles_text(bundles)} {strategy}; cluster has {_cluster_text()}")
            for p in made:
                remove_placement_group(p)
            raise TimeoutError(msg)

    spec = learner_bundles(rollout, learner)
    what = "learner+engines (colocated)" if learner.colocate else "learner"
    learner_pg = make(*spec)
    wait(what, learner_pg, *spec)
    if learner.colocate:
        return Placement(rollout, learner, learner_pg)
    spec = engine_bundles(rollout)
    engine_pgs = [make(*spec) for i in range(rollout.num_engines)]
    for i, pg in enumerate(engine_pgs):
        wait(f"engine {i}", pg, *spec)
    return Placement(rollout, learner, learner_pg, engine_pgs)


def _res_text(res: dict[str, float]) -> str:
    """{'CPU': 4.0, 'GPU': 8.0, 'memory': ..., 'node:...': 1} -> '{CPU: 4, GPU: 8}'."""
    keep = {k: v for k, v in sorted(res.items()) if not k.startswith(("node:", "accelerator_type:"))
            and k not in ("memory", "object_store_memory") and "_group_" not in k}  # PG-internal keys
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in keep.items()) + "}"


def _bundles_text(bundles: Bundles) -> str:
    if all(b == bundles[0] for b in bundles):
        return f"{len(bundles)} x {_res_text(bundles[0])}"
    return "[" + ", ".join(_res_text(b) for b in bundles) + "]"


def _cluster_text() -> str:
    import ray

    nodes = [_res_text(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    return (f"{_res_text(ray.cluster_resources())} in all, {_res_text(ray.available_resources())} free, "
            f"{len(nodes)} node(s): {', '.join(nodes)}")
