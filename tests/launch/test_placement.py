"""Placement of the learner ranks and rollout engines (launch/placement.py).

The cluster checks run once, in a subprocess, on a fake two-node cluster
(`ray.cluster_utils.Cluster`, 4 logical GPUs and 2 CPUs per node) with light stand-ins for
the engine and the rank (the real `RolloutGroup`/`LearnerGroup` constructors and the real
`LearnerWorker.master_address`). A subprocess keeps that cluster apart from the session's
`ray_cluster` (the driver can join one cluster at a time) and `RAY_TMPDIR` keeps its address
file apart from any other `ray.init()` on the machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from actors.config import RolloutConfig
from launch.placement import check_placement, engine_bundles, learner_bundles
from learner.config import LearnerConfig

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- config checks (no Ray)
def test_contradicting_tp_and_gpus_is_refused_naming_both_keys():
    with pytest.raises(ValueError, match=r"rollout\.num_gpus_per_actor=1 .*rollout\.tensor_parallel_size=2"):
        RolloutConfig(tensor_parallel_size=2, num_gpus_per_actor=1)
    with pytest.raises(ValueError, match=r"rollout\.num_gpus_per_actor=0.5 .*rollout\.tensor_parallel_size=1"):
        check_placement(RolloutConfig(num_gpus_per_actor=0.5), LearnerConfig())
    check_placement(RolloutConfig(tensor_parallel_size=2, num_gpus_per_actor=2), LearnerConfig())
    check_placement(RolloutConfig(tensor_parallel_size=2, num_gpus_per_actor=0), LearnerConfig())


def test_colocate_needs_paired_engines_and_shares_of_one_gpu():
    paired = dict(num_engines=2, num_gpus_per_actor=0.4)
    check_placement(RolloutConfig(**paired), LearnerConfig(world_size=2, num_gpus_per_rank=0.5, colocate=True))
    with pytest.raises(ValueError, match=r"rollout\.num_engines=1 must equal learner\.world_size=2"):
        check_placement(RolloutConfig(num_gpus_per_actor=0.4), LearnerConfig(num_gpus_per_rank=0.5, colocate=True))
    with pytest.raises(ValueError, match=r"rollout\.num_gpus_per_actor=0.4 and learner\.num_gpus_per_rank=0.7"):
        check_placement(RolloutConfig(**paired), LearnerConfig(world_size=2, num_gpus_per_rank=0.7, colocate=True))


def test_config_check_fires_from_the_hydra_composition():
    from conftest import compose
    from launch.config import to_train_config

    with pytest.raises(ValueError, match=r"rollout\.num_gpus_per_actor.*rollout\.tensor_parallel_size"):
        to_train_config(compose(["rollout=gpu", "rollout.tensor_parallel_size=2"]))
    with pytest.raises(ValueError, match=r"learner\.colocate=true"):
        to_train_config(compose(["rollout.num_gpus_per_actor=0.5"]))
    cfg = to_train_config(compose(["rollout=gpu", "rollout.tensor_parallel_size=2", "rollout.num_gpus_per_actor=2"]))
    assert cfg.rollout.executor_backend == "mp" and cfg.ray.placement_timeout_s == 300


def test_bundle_shapes():
    tp2 = RolloutConfig(tensor_parallel_size=2, num_gpus_per_actor=2, num_cpus_per_actor=1)
    assert engine_bundles(tp2) == ([{"CPU": 1, "GPU": 2}], "PACK")
    # vLLM's ray executor wants one bundle per GPU (none over 1) and the actor's node in it.
    ray_tp2 = RolloutConfig(tensor_parallel_size=2, num_gpus_per_actor=2, num_cpus_per_actor=1,
                            distributed_executor_backend="ray")
    assert engine_bundles(ray_tp2) == ([{"CPU": 1, "GPU": 1}, {"GPU": 1}], "STRICT_PACK")
    assert engine_bundles(RolloutConfig()) == ([{"CPU": 0.5}], "PACK")
    learner = LearnerConfig(world_size=2, num_gpus_per_rank=1, num_cpus_per_rank=1)
    assert learner_bundles(tp2, learner) == ([{"CPU": 1, "GPU": 1}] * 2, "PACK")
    colocated = LearnerConfig(world_size=2, num_gpus_per_rank=0.5, colocate=True)
    assert learner_bundles(RolloutConfig(num_engines=2, num_gpus_per_actor=0.4), colocated) == (
        [{"CPU": 1.0, "GPU": 1.0}] * 2, "PACK")


# ---------------------------------------------------------------- the fake two-node cluster
@pytest.fixture(scope="module")
def cluster_report():
    """Runs this file as a script (below) and returns what it saw, as JSON."""
    tmp = ROOT / ".cache" / "rpl"  # short: Ray's Unix socket paths live under it
    tmp.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=str(tmp), PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run([sys.executable, __file__], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_learner_ranks_share_one_node_when_they_fit(cluster_report):
    ranks = cluster_report["split"]["ranks"]
    assert len(ranks) == 4 and len({r["node"] for r in ranks}) == 1
    assert sorted(g for r in ranks for g in r["gpus"]) == ["0", "1", "2", "3"]


@pytest.mark.slow
def test_learner_ranks_spill_to_a_second_node_only_when_they_do_not_fit(cluster_report):
    ranks = cluster_report["spill"]["ranks"]
    assert sorted(Counter(r["node"] for r in ranks).values()) == [2, 4]


@pytest.mark.slow
def test_each_engine_holds_its_tp_gpus_on_one_node(cluster_report):
    split = cluster_report["split"]
    for engine in split["engines"]:
        assert len(engine["gpus"]) == 2 and engine["node"] != split["ranks"][0]["node"]
        # inside a placement group vLLM would pick its ray executor for TP: "mp" is explicit
        assert engine["executor"] == "mp"
    for nodes in split["engine_bundle_nodes"]:
        assert len(set(nodes)) == 1


@pytest.mark.slow
def test_ray_executor_finds_one_gpu_bundle_per_tp_rank_on_one_node(cluster_report):
    engine = cluster_report["spill"]["engines"][0]
    # vLLM's initialize_ray_cluster reads ray.util.get_current_placement_group()
    assert engine["pg_bundles"] == [{"CPU": 0.25, "GPU": 1}, {"GPU": 1}] and engine["gpus"] == []
    assert engine["executor"] == "ray"
    assert len(set(cluster_report["spill"]["engine_bundle_nodes"][0])) == 1


@pytest.mark.slow
def test_colocated_engine_and_rank_share_node_and_gpu(cluster_report):
    co = cluster_report["colocate"]
    for rank, engine in zip(co["ranks"], co["engines"], strict=True):
        assert (rank["node"], rank["gpus"]) == (engine["node"], engine["gpus"]) and len(rank["gpus"]) == 1
    assert len({tuple(r["gpus"]) + (r["node"],) for r in co["ranks"]}) == 2


@pytest.mark.slow
def test_rendezvous_address_is_the_ray_node_ip_not_loopback(cluster_report):
    seen = cluster_report["rendezvous"]
    host, port = seen["address"]
    assert host == seen["node_ip"] and not host.startswith("127.") and port > 0


@pytest.mark.slow
def test_unsatisfiable_placement_fails_in_one_line_naming_ask_and_cluster(cluster_report):
    fail = cluster_report["unsatisfiable"]
    msg = fail["error"]
    assert fail["type"] == "TimeoutError" and "\n" not in msg and fail["elapsed_s"] < 10
    assert "engine 0 placement group not ready after 2s" in msg and "asked 1 x {CPU: 0.25, GPU: 8} PACK" in msg
    assert "{CPU: 4, GPU: 8} in all" in msg and "2 node(s): {CPU: 2, GPU: 4}, {CPU: 2, GPU: 4}" in msg
    assert fail["gpus_free_after"] == 8  # the learner's group, made first, is removed too


# ---------------------------------------------------------------- the subprocess
class FakeEngine:
    """Stands in for RolloutEngine: reports where it runs."""

    def __init__(self, cfg: RolloutConfig, model_path: str, seed: int):
        self.executor = cfg.executor_backend  # what RolloutEngine passes to vLLM

    def ready(self) -> int:
        return 0

    def processes(self):  # no vLLM engine core to reap on a restart
        import ray

        return ray.get_runtime_context().get_node_id(), []

    def where(self) -> dict:
        return {**_where(), "executor": self.executor}


class FakeRank:
    """Stands in for LearnerWorker (no torch import: learner.worker takes ~8 s to import)."""

    def __init__(self, rank, cfg, algo, model_path, seed, total_steps):
        pass

    def master_address(self) -> tuple[str, int]:
        return "stand-in", 0

    def setup(self, addr: str, port: int) -> int:
        return 0

    def where(self) -> dict:
        return _where()


class Rendezvous:
    """The real LearnerWorker.master_address inside a Ray actor, beside its node's IP."""

    def address(self) -> dict:
        import ray

        from learner.config import AlgoConfig, LearnerConfig
        from learner.worker import LearnerWorker

        worker = LearnerWorker(0, LearnerConfig(), AlgoConfig(), "unused", seed=0, total_steps=1)
        return {"address": worker.master_address(), "node_ip": ray.util.get_node_ip_address()}


def _where() -> dict:
    import ray
    from ray.util import get_current_placement_group

    pg = get_current_placement_group()
    return {"node": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
            "gpus": [str(g) for g in ray.get_gpu_ids()], "pg_bundles": pg.bundle_specs if pg else None}


def _scenario(rollout: RolloutConfig, learner: LearnerConfig, timeout_s: float = 60) -> dict:
    """Start the real groups (stand-in actors) on a placement; report where each one ran."""
    import ray
    from ray.util import placement_group_table

    from actors import group as rollout_group
    from launch.placement import build_placement
    from learner import group as learner_group

    learner_group.LearnerWorker = FakeRank
    placement = build_placement(rollout, learner, timeout_s)
    ranks = learner_group.LearnerGroup(learner, None, "unused", 0, 1, placement=placement)
    engines = rollout_group.RolloutGroup(rollout, "unused", 0, placement=placement, engine_cls=FakeEngine)
    out = {"ranks": ray.get([w.where.remote() for w in ranks.workers]),
           "engines": ray.get([a.where.remote() for a in engines.actors]),
           "engine_bundle_nodes": [list(placement_group_table(pg)["bundles_to_node_id"].values())
                                   for pg in placement.engine_pgs]}
    ranks.shutdown()
    engines.shutdown()
    placement.remove()
    _wait_all_gpus_free()
    return out


def _wait_all_gpus_free() -> float:
    import ray

    for _ in range(100):
        free = ray.available_resources().get("GPU", 0)
        if free == 8:
            break
        time.sleep(0.1)
    return free


def _run_cluster() -> dict:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=2, num_gpus=4, include_dashboard=False))
    try:
        cluster.add_node(num_cpus=2, num_gpus=4)
        ray.init(address=cluster.address)
        cluster.wait_for_nodes()
        # Started first: its torch import overlaps the scenarios.
        rendezvous = ray.remote(Rendezvous).options(num_cpus=0).remote().address.remote()
        cpu = dict(num_cpus_per_actor=0.25)
        ranks = dict(num_cpus_per_rank=0.25, num_gpus_per_rank=1)
        report = {
            "split": _scenario(RolloutConfig(num_engines=2, tensor_parallel_size=2, num_gpus_per_actor=2, **cpu),
                               LearnerConfig(world_size=4, **ranks)),
            # 6 ranks fill one node and spill 2; the engine's two 1-GPU bundles (vLLM's ray
            # executor) stay together on the node with 2 GPUs left.
            "spill": _scenario(RolloutConfig(tensor_parallel_size=2, num_gpus_per_actor=2,
                                             distributed_executor_backend="ray", **cpu),
                               LearnerConfig(world_size=6, **ranks)),
            "colocate": _scenario(RolloutConfig(num_engines=2, num_gpus_per_actor=0.4, **cpu),
                                  LearnerConfig(world_size=2, num_cpus_per_rank=0.25, num_gpus_per_rank=0.5,
                                                colocate=True)),
        }
        from launch.placement import build_placement

        start = time.monotonic()
        try:
            build_placement(RolloutConfig(tensor_parallel_size=8, num_gpus_per_actor=8, **cpu),
                            LearnerConfig(world_size=2, **ranks), timeout_s=2)
            report["unsatisfiable"] = {"type": None, "error": ""}
        except Exception as e:  # noqa: BLE001 - reported to the test
            report["unsatisfiable"] = {"type": type(e).__name__, "error": str(e),
                                       "elapsed_s": time.monotonic() - start, "gpus_free_after": _wait_all_gpus_free()}
        report["rendezvous"] = ray.get(rendezvous)
        return report
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print(json.dumps(_run_cluster()))
