"""Whether this process is the driver of a Ray job (`ray job submit`), and the runtime env the
job was submitted with: what the pre-flight checks, the Ray connection and the benchmark loader's
error messages depend on."""
from __future__ import annotations

import json
import os

# Set by Ray's job supervisor in the environment of a job's driver: the job's runtime env.
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def in_ray_job() -> bool:
    """Whether this process is the driver of a Ray job (`ray job submit`)."""
    return RAY_JOB_ENV in os.environ


def job_runtime_env() -> dict:
    """The runtime env the Ray job was submitted with ({} outside a job)."""
    raw = os.environ.get(RAY_JOB_ENV)
    if not raw:
        return {}
    try:
        return json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return {}
