"""Checks before anything heavy starts (launch/preflight.py, launch/model/hub_model.py, the warm-up
check in launch/config.py, `worker_env` in launch/ray_connect.py): paths resolved against the launch
folder and refused naming the key, a Ray job's run folder, the actors' environment under a
job, the resources asked against the cluster's, a hub model downloaded once. No Ray starts."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from conftest import compose
from launch.config import TrainConfig, to_train_config
from launch.preflight import cluster_fits, resolve_paths
from launch.ray_job import RAY_JOB_ENV


def _cfg(*overrides: str) -> TrainConfig:
    return to_train_config(compose(list(overrides)))


@pytest.fixture
def in_job(monkeypatch):
    """The environment of a Ray job's driver: the job's runtime env, as the job supervisor sets it."""
    job = {"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip",
                           "env_vars": {"WANDB_MODE": "offline", "WANDB_API_KEY": "k", "HF_TOKEN": "t"}},
           "metadata": {"job_submission_id": "raysubmit_x"}}
    monkeypatch.setenv(RAY_JOB_ENV, json.dumps(job))
    return job


@pytest.fixture(scope="module")
def tiny_folder():
    from launch.model.tiny_model import TinyModelConfig, ensure_tiny_model

    return ensure_tiny_model(TinyModelConfig(hidden_size=64, num_layers=2, num_heads=1))


# ------------------------------------------------------------------------------ paths

def test_relative_paths_are_resolved_against_the_launch_folder(tmp_path, monkeypatch, tiny_folder):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text(json.dumps({"problem": "1+1", "answer": "2"}) + "\n")
    shutil.copytree(tiny_folder, tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    cfg = _cfg("model=hf", "model.path=./model", "task.name=jsonl", "task.path=data/train.jsonl",
               "task.benchmarks_dir=data", "output_dir=runs/a", "ckpt.dir=ckpts", "ckpt.resume=ckpts/step_000002",
               "model.cache_dir=hub")
    assert cfg.model.path == str(tmp_path / "model") and cfg.model.cache_dir == str(tmp_path / "hub")
    assert cfg.task.path == str(tmp_path / "data" / "train.jsonl") and cfg.task.benchmarks_dir == str(tmp_path / "data")
    assert cfg.output_dir == str(tmp_path / "runs" / "a") and cfg.ckpt.dir == str(tmp_path / "ckpts")
    assert cfg.ckpt.resume == str(tmp_path / "ckpts" / "step_000002")
    (tmp_path / "data" / "ds").mkdir()  # a dataset folder (save_to_disk) is a task.path too
    assert _cfg("model=hf", "task.name=jsonl", "task.path=data/ds").task.path == str(tmp_path / "data" / "ds")
    # a bare preset name stays a name (launch.data.benchmarks looks it up), a hub id stays an id
    cfg = _cfg("model=hf", "task.name=jsonl", "task.path=gsm8k_test", "task.exclude_path=math500")
    assert (cfg.task.path, cfg.task.exclude_path, cfg.model.path) == ("gsm8k_test", "math500", "Qwen/Qwen2.5-7B-Instruct")


@pytest.mark.parametrize("override,key", [
    ("task.path=data/missing.jsonl", "task.path"),
    ("task.exclude_path=/nowhere/x.jsonl", "task.exclude_path"),
    ("task.benchmarks_dir=no_such_folder", "task.benchmarks_dir"),
])
def test_a_missing_input_is_refused_before_ray_naming_the_key(tmp_path, monkeypatch, override, key):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        _cfg("model=hf", "task.name=jsonl", "task.path=gsm8k_test", override)
    assert str(err.value).startswith(f"{key}=") and "no such" in str(err.value)


def test_a_revision_needs_a_hub_model(tiny_folder):
    with pytest.raises(ValueError, match=r"^model.revision='v1' pins a hub model, but model.path="):
        _cfg("model=hf", f"model.path={tiny_folder}", "model.revision=v1")
    assert _cfg("model=hf", "model.revision=v1").model.revision == "v1"


# ------------------------------------------------------------------------------ a Ray job's run folder

def test_under_a_ray_job_output_dir_is_required_and_absolute(in_job, tmp_path):
    with pytest.raises(ValueError, match=r"^output_dir is not set: under a Ray job"):
        _cfg()
    with pytest.raises(ValueError, match=r"^output_dir='runs/a' is relative: under a Ray job"):
        _cfg("output_dir=runs/a")
    with pytest.raises(ValueError, match=r"^ckpt.dir='ck' is relative"):
        _cfg(f"output_dir={tmp_path}", "ckpt.dir=ck")
    assert _cfg(f"output_dir={tmp_path}/run").output_dir == f"{tmp_path}/run"


def test_under_a_ray_job_a_missing_relative_input_says_to_use_shared_absolute_paths(in_job, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^task.path='data/x.jsonl': no such file or folder .*job's temporary "
                                                r"working directory: give absolute paths"):
        _cfg("model=hf", "task.name=jsonl", "task.path=data/x.jsonl", f"output_dir={tmp_path}")


def test_outside_a_job_the_default_run_folder_stays_hydras():
    assert _cfg().output_dir is None


# ------------------------------------------------------------------------------ warm-up only for the tiny demo

def test_warmup_on_a_users_model_is_refused_naming_the_key(tiny_folder):
    with pytest.raises(ValueError, match=r"^model.warmup.enabled=true would fine-tune model.path="):
        _cfg(f"model.path={tiny_folder}")
    cfg = _cfg("model=hf", f"model.path={tiny_folder}")  # conf/model/hf.yaml turns it off
    assert not cfg.model.warmup.enabled and cfg.model.path == tiny_folder


def test_warmup_on_another_task_is_refused_naming_the_key():
    for overrides in (["task=math"], ["task.name=jsonl", "task.path=gsm8k_test"]):
        with pytest.raises(ValueError, match=r"^model.warmup.enabled=true is the tiny model's warm-up .*task.name='jsonl'"):
            _cfg(*overrides)
    assert not _cfg("task=math", "model.warmup.enabled=false").model.warmup.enabled
    assert _cfg().model.warmup.enabled  # the tiny default on arithmetic keeps it


# ------------------------------------------------------------------------------ the actors' environment

def test_worker_env_leaves_out_secrets_and_the_jobs_own_variables(monkeypatch, in_job):
    from ray.runtime_env.runtime_env import _merge_runtime_env

    from launch.ray_connect import worker_env

    for k, v in {"WANDB_API_KEY": "k", "HF_TOKEN": "t", "VLLM_API_KEY": "v", "WANDB_MODE": "offline",
                 "HF_HOME": "/cache/hf", "TOKENIZERS_PARALLELISM": "false", "VLLM_CACHE_ROOT": "/cache/vllm"}.items():
        monkeypatch.setenv(k, v)
    env = worker_env()
    assert not {"WANDB_API_KEY", "HF_TOKEN", "VLLM_API_KEY"} & env.keys()  # secrets: never re-sent
    assert "WANDB_MODE" not in env  # the job sets it: the workers inherit it from the job
    assert env["HF_HOME"] == "/cache/hf" and env["TOKENIZERS_PARALLELISM"] == "false"
    # what ray.init does with the job's runtime env and ours: None would be Ray's conflict error
    merged = _merge_runtime_env(in_job["runtime_env"], {"env_vars": env})
    assert merged is not None and merged["env_vars"]["VLLM_CACHE_ROOT"] == "/cache/vllm"


def test_worker_env_forwards_the_collectives_settings(monkeypatch):
    """NCCL_* / GLOO_* / TORCH_NCCL_* reach every actor: the learner's groups and the weight sync
    pick their interface and timeouts from them on every node, not only on the driver's."""
    from launch.ray_connect import worker_env

    monkeypatch.delenv(RAY_JOB_ENV, raising=False)
    wanted = {"NCCL_SOCKET_IFNAME": "ib0", "NCCL_IB_HCA": "mlx5_0,mlx5_1", "NCCL_DEBUG": "WARN",
              "GLOO_SOCKET_IFNAME": "eth1", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "TORCH_DISTRIBUTED_DEBUG": "DETAIL",
              "TORCHINDUCTOR_CACHE_DIR": "/tmp/u-oreal-cache/inductor"}
    for k, v in {**wanted, "CUDA_VISIBLE_DEVICES": "0,1", "MASTER_ADDR": "10.0.0.1", "NCCL_PROXY_AUTH": "u:p"}.items():
        monkeypatch.setenv(k, v)
    env = worker_env()
    assert {k: env.get(k) for k in wanted} == wanted
    # Ray sets each actor's GPUs, the learner its own rendezvous; a secret stays a secret
    assert not {"CUDA_VISIBLE_DEVICES", "MASTER_ADDR", "NCCL_PROXY_AUTH"} & env.keys()


def test_outside_a_job_worker_env_still_leaves_out_secrets(monkeypatch):
    from launch.ray_connect import worker_env

    monkeypatch.delenv(RAY_JOB_ENV, raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "k")
    monkeypatch.setenv("WANDB_MODE", "offline")
    env = worker_env()
    assert "WANDB_API_KEY" not in env and env["WANDB_MODE"] == "offline"


def test_worker_env_uses_the_grading_childs_secret_rule(monkeypatch):
    """`verifier.worker.scrub_secrets`: *_PASS, *_AUTH and URLs with user info are secrets too."""
    from launch.ray_connect import worker_env

    monkeypatch.delenv(RAY_JOB_ENV, raising=False)
    for k, v in {"OREAL_DB_PASS": "p", "WANDB_PROXY_AUTH": "u:p", "HF_ENDPOINT": "https://u:p@mirror.example",
                 "OREAL_KEYBOARD_LAYOUT": "us", "HF_HOME": "/cache/hf", "OMP_NUM_THREADS": "2"}.items():
        monkeypatch.setenv(k, v)
    env = worker_env()
    assert not {"OREAL_DB_PASS", "WANDB_PROXY_AUTH", "HF_ENDPOINT"} & env.keys()
    assert env["OREAL_KEYBOARD_LAYOUT"] == "us" and env["HF_HOME"] == "/cache/hf" and env["OMP_NUM_THREADS"] == "2"


# ------------------------------------------------------------------------------ resources against the cluster

def _node(cpus: float, gpus: float = 0.0) -> dict[str, float]:
    return {"CPU": cpus, **({"GPU": gpus} if gpus else {}), "memory": 1e10}


def test_the_paper_preset_on_too_few_gpus_names_the_difference():
    cfg = _cfg("+experiment=paper_7b")
    problems = cluster_fits(cfg, {"CPU": 128, "GPU": 8}, [_node(128, 8)])
    assert problems == ["the config asks for 12 GPUs (learner 8 x 1, rollout 4 x 1), the cluster has 8 (keys: "
                        "learner.world_size x learner.num_gpus_per_rank, rollout.num_engines x rollout.num_gpus_per_actor)"]
    assert cluster_fits(cfg, {"CPU": 128, "GPU": 16}, [_node(64, 8), _node(64, 8)]) == []
    # the learner ranks' 8 cores each (optimizer offload's threads: conf/learner/gpu_zero3.yaml)
    (cpus,) = cluster_fits(cfg, {"CPU": 64, "GPU": 16}, [_node(32, 8), _node(32, 8)])
    assert cpus.startswith("the config asks for 68 CPUs (learner 8 x 8, rollout 4 x 1), the cluster has 64")


def test_the_cpu_default_fits_four_cpus_and_not_one():
    cfg = _cfg("verifier.actor_num_cpus=0.25")
    assert cluster_fits(cfg, {"CPU": 4}, [_node(4)]) == []
    (problem,) = cluster_fits(cfg, {"CPU": 1}, [_node(1)])
    assert problem.startswith("the config asks for 2 CPUs (learner 2 x 0.5, rollout 1 x 0.5, verifier 2 x 0.25), "
                              "the cluster has 1")


def test_a_bundle_larger_than_any_node_is_named():
    cfg = _cfg("rollout=gpu", "learner=gpu_zero3", "learner.world_size=2", "rollout.num_engines=1",
               "rollout.tensor_parallel_size=8", "rollout.num_gpus_per_actor=8")
    problems = cluster_fits(cfg, {"CPU": 32, "GPU": 16}, [_node(8, 4)] * 4)
    assert problems == ["a rollout engine needs {CPU: 1, GPU: 8} on one node; the largest node has {CPU: 8, GPU: 4}"]


# ------------------------------------------------------------------------------ a hub model, downloaded once

def _fake_hub_cache(cache: Path, repo: str, folder: str, commit: str = "a" * 40, ref: str = "main") -> Path:
    """The Hugging Face cache layout of `repo` at `commit` (what snapshot_download leaves)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / commit
    shutil.copytree(folder, snap)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    return snap


def test_a_cached_hub_model_resolves_offline_to_its_snapshot(tmp_path, tiny_folder):
    from launch.model.hub_model import resolve_hub_model

    snap = _fake_hub_cache(tmp_path / "hub", "org/tiny", tiny_folder)
    cfg = resolve_hub_model(_cfg("model=hf", "model.path=org/tiny", f"model.cache_dir={tmp_path}/hub"))
    assert cfg.model.path == str(snap) and (Path(cfg.model.path) / "config.json").is_file()
    pinned = resolve_hub_model(_cfg("model=hf", "model.path=org/tiny", f"model.revision={'a' * 40}",
                                    f"model.cache_dir={tmp_path}/hub"))
    assert pinned.model.path == str(snap)
    with pytest.raises(ValueError, match=r"^model.path='org/tiny' model.revision='v9': cannot download it into "):
        resolve_hub_model(_cfg("model=hf", "model.path=org/tiny", "model.revision=v9", f"model.cache_dir={tmp_path}/hub"))
    with pytest.raises(ValueError, match=r"^model.path='org/absent': cannot download it into "):
        resolve_hub_model(_cfg("model=hf", "model.path=org/absent", f"model.cache_dir={tmp_path}/hub"))


def test_the_driver_downloads_once_with_revision_and_cache_dir(tmp_path, monkeypatch, tiny_folder):
    import huggingface_hub

    from launch.model.hub_model import resolve_hub_model

    calls = []

    def fake_snapshot_download(repo_id, *, revision=None, cache_dir=None, **kw):  # the network part only
        calls.append((repo_id, revision, cache_dir))
        return str(_fake_hub_cache(Path(cache_dir), repo_id, tiny_folder, commit="b" * 40, ref=revision or "main"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    cfg = _cfg("model=hf", "model.path=org/tiny", "model.revision=v2", f"model.cache_dir={tmp_path}/shared")
    resolved = resolve_hub_model(cfg)
    assert calls == [("org/tiny", "v2", f"{tmp_path}/shared")]
    assert resolved.model.path == f"{tmp_path}/shared/models--org--tiny/snapshots/{'b' * 40}"
    # every role is then given this folder: nothing left for them to download
    assert dataclasses.replace(resolved.model).path == resolved.model.path
    # the tiny model and a local folder are not touched
    assert resolve_hub_model(_cfg()) == _cfg() and len(calls) == 1
    local = _cfg("model=hf", f"model.path={tiny_folder}")
    assert resolve_hub_model(local) == local and len(calls) == 1


def test_on_a_cluster_a_hub_model_needs_a_shared_cache_dir(monkeypatch):
    from launch.model.hub_model import resolve_hub_model

    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    with pytest.raises(ValueError, match=r"^model.path='org/tiny' is a hub model and this run joins a Ray cluster: "
                                         r"set model.cache_dir"):
        resolve_hub_model(_cfg("model=hf", "model.path=org/tiny"))


def test_resolve_paths_is_idempotent(tmp_path):
    cfg = _cfg(f"output_dir={tmp_path}/x", "model=hf")
    assert resolve_paths(cfg) == cfg


def test_under_a_ray_job_a_missing_benchmark_says_where_to_put_it(in_job, tmp_path, monkeypatch):
    from launch.data.benchmarks import load_problems

    monkeypatch.setenv("OREAL_BENCHMARKS", str(tmp_path))  # the folder beside the repository, inside the job
    with pytest.raises(FileNotFoundError, match=r"point task.benchmarks_dir.*under a Ray job.*absolute path"):
        load_problems("math500")
