"""Test session set-up: keep every cache inside the work tree's ignored `.cache/`."""
import contextlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
for key, sub in {
    "VLLM_CACHE_ROOT": "vllm",
    "TORCH_EXTENSIONS_DIR": "torch_extensions",
    "HF_HOME": "hf",
    "TRITON_CACHE_DIR": "triton",
    "WANDB_DIR": "wandb",
    "WANDB_CACHE_DIR": "wandb/cache",
    "WANDB_CONFIG_DIR": "wandb/config",
    "WANDB_DATA_DIR": "wandb/data",
    "OREAL_CACHE": "oreal",
}.items():
    os.environ.setdefault(key, str(CACHE / sub))
for key in ("VLLM_NO_USAGE_STATS", "DO_NOT_TRACK", "HF_HUB_OFFLINE"):
    os.environ.setdefault(key, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")

# A few hand-written rows in each benchmark format: loading logic is tested in any clone.
FIXTURE_BENCHMARKS = ROOT / "tests" / "fixtures" / "benchmarks"
# Set (CI does, where ../shared exists) to fail instead of skip when the full files are absent.
REQUIRE_BENCHMARKS_ENV = "OREAL_REQUIRE_BENCHMARKS"
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

import pytest  # noqa: E402

# Overrides of the embedded default that keep the shared e2e topology small and fast.
E2E_OVERRIDES = [
    "prompts_per_step=4",
    "rollout.n_samples=4",
    "rollout.max_new_tokens=48",
    "eval_size=8",
    "steps=50",
    "algo.actor_freeze_steps=0",
    # the shared learner's RM LR schedule is built once, so the tests that freeze a step must not
    # change that step's RM passes; nor draw the demo's 96 queries in it
    "algo.rm_only_epochs=null",
    "algo.rm_only_prompts_per_step=null",
    # no held-out RM set sampled at each short run's start (tests/launch/test_rm_e2e.py turns it on)
    "algo.rm_eval_every=0",
    # a shorter warm-up than the demo's (enough for mixed queries; ~40 s on a fresh clone)
    "model.warmup.steps=400",
    # two engines, both updated by every broadcast; 64 KiB buckets: the tiny policy (~0.5 MB)
    # crosses in several buckets, as a real model does
    "rollout.num_engines=2",
    "learner.sync_bucket_mb=0.0625",
    f"ray.temp_dir={CACHE / 'ray'}",
]


def compose(overrides: list[str] | None = None):
    """The real Hydra composition of conf/train.yaml (as `python -m launch.train` does)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from launch.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=list(overrides or []))


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (a rendezvous for spawned test processes)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_spawned(target, args_list, timeout: float) -> dict:
    """Run `target(*args, queue)` in one spawned process per tuple of `args_list`; each puts
    `(key, status, result)` on the queue, status "ok" or the traceback. Returns {key: result}
    after asserting that every process reported "ok"; every process is joined (killed if stuck)."""
    import torch.multiprocessing as tmp

    ctx = tmp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, out)) for args in args_list]
    for p in procs:
        p.start()
    try:
        results = {key: (status, res) for key, status, res in (out.get(timeout=timeout) for _ in procs)}
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    for key, (status, res) in results.items():
        assert status == "ok", f"{key}:\n{res}"
    return {key: res for key, (_, res) in results.items()}


@contextlib.contextmanager
def in_process_learners(algos: dict, total_steps: int):
    """One in-process learner rank (gloo, ZeRO-3, no Ray) on the tiny model per AlgoConfig of
    `algos` (same keys out), RM LR 1e-3 with no warm-up; the process group and the environment
    are put back afterwards."""
    import torch

    from launch.model.tiny_model import TinyModelConfig, ensure_tiny_model
    from learner.config import LearnerConfig, OptimConfig
    from learner.worker import LearnerWorker

    saved = dict(os.environ)
    path = ensure_tiny_model(TinyModelConfig())
    cfg = LearnerConfig(world_size=1, backend="gloo", micro_batch_size=4,
                        rm_optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=0))
    out = {}
    try:
        for key, algo in algos.items():
            w = LearnerWorker(0, cfg, algo, path, seed=0, total_steps=total_steps)
            w.setup(*w.master_address())  # a later one finds the process group already up
            out[key] = w
        yield out
    finally:
        if torch.distributed.is_initialized():
            import deepspeed.comm

            deepspeed.comm.destroy_process_group()  # DeepSpeed's call: releases its group references too
        os.environ.clear()
        os.environ.update(saved)


def separable_group(vocab: int = 512, response_len: int = 24):
    """K=8 responses to one prompt for in-process learner tests: 4 correct ones built from
    one block of tokens, 4 wrong ones from another (RLOO advantages, p = 1/2), so the token
    RM and the policy have something to separate. Returns (samples, GlobalCounts)."""
    import random

    from learner.batch import GlobalCounts, TrainSample

    rng = random.Random(0)
    prompt = tuple(rng.randrange(10, vocab) for _ in range(12))
    good, bad = list(range(100, 140)), list(range(300, 340))
    samples = []
    for i in range(8):
        pool = good if i < 4 else bad
        response = tuple(rng.choice(pool) for _ in range(response_len)) + (2,)
        # A+ = 2K(1-p)/(K-1) = 8/7, A- = -2Kp/(K-1) = -8/7.
        r = 1.0 if i < 4 else -1.0
        samples.append(TrainSample(prompt, response, reward=r, advantage=r * 8 / 7))
    return samples, GlobalCounts.of(samples)


class RecordingLearner:
    """A learner role for driver tests (`launch.loop.rl_step` with stand-in roles): records
    each step's samples, trains nothing."""

    def __init__(self):
        self.trained = []  # (step, samples)

    def train_step(self, samples, step, rm_batches=None, rm_fresh=()):
        self.trained.append((step, samples))
        return {"learner/loss": 0.0}


@pytest.fixture
def versioned_sync(monkeypatch):
    """The stand-in weight sync of driver tests: the engines take the learner's new version."""
    import learner.weight_sync as ws

    def sync(learner, rollout, version, *a, **k):
        rollout.version = version
        return ws.SyncReport(version, 0.0, 10, 1, 0.0)

    monkeypatch.setattr(ws, "sync_weights", sync)


@pytest.fixture(scope="session")
def full_benchmarks():
    """The folder of the full benchmark files (`launch.data.benchmarks.benchmarks_dir()`: the
    OREAL_BENCHMARKS variable, else ../shared/data/benchmarks). Tests that need them skip,
    saying where they looked, when they are absent (a user's clone); with
    OREAL_REQUIRE_BENCHMARKS=1 (CI) a missing file fails instead."""
    from launch.data.benchmarks import BENCHMARKS_ENV, PRESETS, benchmarks_dir

    folder = benchmarks_dir()
    missing = [f"{name}.jsonl" for name in PRESETS if not (folder / f"{name}.jsonl").is_file()]
    if missing:
        reason = (f"full benchmark files not found in {folder} (missing {', '.join(missing)}); "
                  f"set {BENCHMARKS_ENV}=<folder> (the task config key is task.benchmarks_dir) to run these")
        if os.environ.get(REQUIRE_BENCHMARKS_ENV) == "1":
            pytest.fail(f"{REQUIRE_BENCHMARKS_ENV}=1 but {reason}")
        pytest.skip(reason)
    return folder


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole test session."""
    import ray

    from launch.ray_connect import LOCAL_SYSTEM_CONFIG, ray_temp_dir, worker_env

    if not ray.is_initialized():
        # logical CPUs: the shared e2e roles and a second topology (colocated test) fit at once
        ray.init(num_cpus=4, include_dashboard=False, _temp_dir=ray_temp_dir(str(CACHE / "ray")),
                 runtime_env={"env_vars": worker_env()}, _system_config=LOCAL_SYSTEM_CONFIG)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def e2e_cfg():
    from launch.config import to_train_config

    return to_train_config(compose(E2E_OVERRIDES))


@pytest.fixture(scope="session")
def e2e_roles(ray_cluster, e2e_cfg):
    """Verifier pool, two vLLM rollout engines and a 2-rank ZeRO-3 learner (policy, reference
    and token RM) joined by the weight-sync group, started once and shared by every e2e test."""
    from launch.roles import Roles, prepare_policy
    from launch.data.tasks import load_task

    splits = load_task(e2e_cfg.task)
    roles = Roles(e2e_cfg, prepare_policy(e2e_cfg, splits), [p.answer for p in splits.train])
    yield roles
    roles.shutdown()


@pytest.fixture
def fresh_policy(e2e_roles):
    """The shared roles with the policy reset to the warmed-up initial weights (learner and
    rollout engine), so one test's updates do not leak into the next."""
    e2e_roles.reset_policy()
    return e2e_roles


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA: skipped (not failed) on CPU machines such as CI."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
