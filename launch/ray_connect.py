"""The run's way into Ray: join the cluster (a `ray job submit` job, `ray.address`) or start a
local one, with the environment every worker needs and a temp dir Ray's sockets fit under."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from launch.ray_job import job_runtime_env
from verifier.worker import scrub_secrets

if TYPE_CHECKING:
    from launch.config import TrainConfig

# Environment every Ray worker needs (caches inside the work tree, offline hub, no telemetry), and
# the collectives' settings of the learner's and the weight sync's groups (the interface, IB,
# timeouts, debugging: NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME, TORCH_NCCL_ASYNC_ERROR_HANDLING, ...).
_ENV_PREFIXES = ("VLLM_", "HF_", "TORCH_EXTENSIONS_DIR", "TRITON_", "TORCHINDUCTOR_", "WANDB_", "OREAL_",
                 "TOKENIZERS_", "DO_NOT_TRACK", "TRANSFORMERS_", "OMP_NUM_THREADS", "NCCL_", "GLOO_", "TORCH_NCCL_",
                 "TORCH_DISTRIBUTED_DEBUG")


def worker_env() -> dict[str, str]:
    """The driver's variables every Ray worker needs (`_ENV_PREFIXES`), sent as the runtime
    env's env_vars. Left out: secrets (`verifier.worker.scrub_secrets`: the W&B key, the hub
    token, any *_PASS / *_AUTH or URL with user:password@; only the driver uses them, so they
    never enter Ray's job records) and any variable the Ray job's own runtime env already sets
    (workers inherit those; Ray refuses the same key twice)."""
    job_keys = set((job_runtime_env().get("env_vars") or {}).keys())
    return scrub_secrets({k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES) and k not in job_keys})


# What Ray appends to its temp dir for its longest socket path
# (session_YYYY-MM-DD_HH-MM-SS_ffffff_PID/sockets/plasma_store), and the AF_UNIX limit.
_RAY_SOCKET_SUFFIX = 72
_AF_UNIX_MAX = 107


def ray_temp_dir(path: str | None) -> str | None:
    """`path`, or a short stand-in under /tmp when Ray's sockets beneath it would pass the
    107-byte AF_UNIX limit (a clone in a deep folder); Ray refuses such a path at start."""
    if path is None or len(os.fsencode(os.path.abspath(path))) + _RAY_SOCKET_SUFFIX <= _AF_UNIX_MAX:
        return path
    import hashlib
    import tempfile

    digest = hashlib.sha1(os.fsencode(os.path.abspath(path))).hexdigest()[:10]
    short = os.path.join(tempfile.gettempdir(), f"oreal-ray-{digest}")
    if len(os.fsencode(short)) + _RAY_SOCKET_SUFFIX > _AF_UNIX_MAX:
        short = f"/tmp/oreal-ray-{digest}"
    print(f"ray.temp_dir {path} is too deep for Ray's sockets; using {short}", flush=True)
    return short


def connect_ray(ray_cfg) -> bool:
    """Join the cluster (`ray.address`, RAY_ADDRESS, or the Ray job's own) or start a local
    one (`ray_cfg`: a `launch.config.RayConfig`); False when Ray was already up."""
    import ray

    if ray.is_initialized():
        return False
    address = ray_cfg.address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": worker_env()}
    if address:
        ray.init(address=address, runtime_env=runtime_env)
    else:
        ray.init(num_cpus=ray_cfg.num_cpus, include_dashboard=False, _temp_dir=ray_temp_dir(ray_cfg.temp_dir),
                 runtime_env=runtime_env, log_to_driver=True, _system_config=LOCAL_SYSTEM_CONFIG)
    return True


# A local cluster's settings. Ray starts one idle worker per CPU when the first driver joins,
# for tasks; every role here is an actor, which gets a worker of its own, so those workers only
# cost start-up time (0.7 CPU-s each, while everything else is starting on the same cores).
LOCAL_SYSTEM_CONFIG = {"prestart_worker_first_driver": False}


def init_ray(cfg: TrainConfig) -> None:
    """`connect_ray`, then check that the cluster can hold the run
    (`launch.preflight.check_cluster`) before any placement group is requested."""
    from launch.preflight import check_cluster

    if connect_ray(cfg.ray):
        check_cluster(cfg)
