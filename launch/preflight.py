"""Checks before anything heavy starts: where the run reads and writes, and where it runs.

`resolve_paths` (called by `launch.config.to_train_config`, so before Ray or any process
starts) makes every path key absolute, resolved against the folder the run was launched
from, and refuses an input that does not exist, naming its key:

    key                   kind     refused when
    model.path            input    a local-looking path (/, ., ~) that is not a model folder
                                   (checked by ModelConfig); a hub id is kept as is
    model.cache_dir       output   -
    task.path             input    a path (with a "/") that is not there (a JSONL or Parquet
    task.exclude_path              file, a dataset folder); a bare name ("math500") is a
                                   preset, looked up by launch.data.benchmarks
    task.benchmarks_dir   input    not a folder
    output_dir, ckpt.dir  output   under a Ray job: relative (see below)
    ckpt.resume           input    (launch.state.checkpoint.find_resume names a missing one)
    ray.temp_dir          output   -

Under a Ray job (`ray job submit`; the job supervisor sets RAY_JOB_CONFIG_JSON_ENV_VAR for
the driver) the launch folder is the job's unpacked working directory, a temporary folder
on the head node. So there `output_dir` is required and, like `ckpt.dir`, must be absolute:
the run folder (and `policy/`, written by learner rank 0 on whatever node it runs, and the
checkpoints, written by every rank) must be on storage every node shares.

`check_reward_fn` (called by `to_train_config` too) imports `verifier.reward_fn` and refuses,
in one line naming the key, a module that cannot be imported, a name that is missing or not
callable, or a function that does not take (completion, gold, question): otherwise every
sample of every step would be graded `error`.

`cluster_fits` (called by `launch.ray_connect.init_ray` once Ray is up, before any placement group
is requested) compares the resources the config asks for with what the cluster has.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

from launch.ray_job import in_ray_job

if TYPE_CHECKING:
    from launch.config import TrainConfig


def on_cluster(cfg: TrainConfig) -> bool:
    """Whether the run joins an existing Ray cluster (ray.address, RAY_ADDRESS or a job)
    rather than starting a local one on this machine."""
    return bool(cfg.ray.address or os.environ.get("RAY_ADDRESS") or in_ray_job())


def resolve_paths(cfg: TrainConfig, cwd: str | os.PathLike | None = None) -> TrainConfig:
    """`cfg` with every path key absolute (see the module docstring); raises ValueError or
    FileNotFoundError, one line naming the key, for a missing input or, under a Ray job, a
    run folder that would be lost."""
    from launch.model.tiny_model import is_local_path

    base = Path(cwd or os.getcwd())

    def absolute(value: str | None) -> str | None:
        return None if value is None else str((base / Path(value).expanduser()).resolve())

    model, task, ckpt, ray = cfg.model, cfg.task, cfg.ckpt, cfg.ray
    hub = model.path not in (None, "tiny") and not is_local_path(model.path) and not (base / model.path).is_dir()
    if model.revision is not None and not hub:
        raise ValueError(f"model.revision={model.revision!r} pins a hub model, but model.path={model.path!r} "
                         "is not one: drop model.revision")
    model = dataclasses.replace(model, path=model.path if model.path in (None, "tiny") or hub else absolute(model.path),
                                cache_dir=absolute(model.cache_dir))
    task = dataclasses.replace(task, path=_input_file(task.path, "task.path", absolute),
                               exclude_path=_input_file(task.exclude_path, "task.exclude_path", absolute),
                               benchmarks_dir=_input_dir(task.benchmarks_dir, "task.benchmarks_dir", absolute),
                               passrate_file=absolute(task.passrate_file), hf_cache_dir=absolute(task.hf_cache_dir))
    if in_ray_job():
        _check_job_outputs(cfg, base)
    resume = ckpt.resume if ckpt.resume in (None, "auto") else absolute(ckpt.resume)
    ckpt = dataclasses.replace(ckpt, dir=absolute(ckpt.dir), resume=resume)
    ray = dataclasses.replace(ray, temp_dir=absolute(ray.temp_dir))
    return dataclasses.replace(cfg, model=model, task=task, ckpt=ckpt, ray=ray, output_dir=absolute(cfg.output_dir))


def check_reward_fn(verifier_cfg) -> None:
    """`verifier.reward_fn` (a `VerifierConfig`'s) loads here, in the driver, before Ray starts;
    ValueError, one line naming the key, when it does not (`verifier.plugins.reward_fn.load`)."""
    if verifier_cfg.reward_fn:
        from verifier.plugins.reward_fn import load

        load(verifier_cfg.reward_fn)


def _input_file(value: str | None, key: str, absolute) -> str | None:
    """A path (it has a "/": a file or a dataset folder) made absolute and checked; a bare
    preset name, or a Hugging Face dataset by name (hf:<name>, launch.data.benchmarks), as is."""
    if value is None or "/" not in value or value.startswith("hf:"):
        return value
    path = absolute(value)
    if not Path(path).exists():
        raise FileNotFoundError(f"{key}={value!r}: no such file or folder (resolved to {path}){_job_hint()}")
    return path


def _input_dir(value: str | None, key: str, absolute) -> str | None:
    if value is None:
        return None
    path = absolute(value)
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{key}={value!r}: no such folder (resolved to {path}){_job_hint()}")
    return path


def _job_hint() -> str:
    if not in_ray_job():
        return ""
    return ("; under a Ray job relative paths are resolved against the job's temporary working directory: "
            "give absolute paths on storage every node reads")


def _check_job_outputs(cfg: TrainConfig, base: Path) -> None:
    if cfg.output_dir is None:
        raise ValueError(
            "output_dir is not set: under a Ray job the default run folder (Hydra's outputs/ in the job's "
            f"temporary working directory {base}) is deleted with the job's files and exists on the head node "
            "only. Give output_dir=<absolute path on storage every node shares>")
    for key, value in (("output_dir", cfg.output_dir), ("ckpt.dir", cfg.ckpt.dir)):
        if value is not None and not Path(value).expanduser().is_absolute():
            raise ValueError(f"{key}={value!r} is relative: under a Ray job it would land in the job's temporary "
                             f"working directory {base}. Give an absolute path on storage every node shares")


# ---------------------------------------------------------------------------------------
# Resources: what the config asks for against what the cluster has
# ---------------------------------------------------------------------------------------

def asked_resources(cfg: TrainConfig) -> dict[str, list[tuple[str, int, float]]]:
    """{resource: [(role, count, per-item amount), ...]} for CPU and GPU, as the placement
    groups (launch.placement) and the verifier actors will ask for them."""
    from launch.placement import engine_bundles, learner_bundles

    asked: dict[str, list[tuple[str, int, float]]] = {"CPU": [], "GPU": []}
    bundles, _ = learner_bundles(cfg.rollout, cfg.learner)
    colocated = cfg.learner.colocate
    for res in asked:
        learner = bundles[0].get(res, 0.0)
        asked[res].append(("learner+rollout (colocated)" if colocated else "learner", len(bundles), learner))
        if not colocated:
            engine = sum(b.get(res, 0.0) for b in engine_bundles(cfg.rollout)[0])
            asked[res].append(("rollout", cfg.rollout.num_engines, engine))
    asked["CPU"].append(("verifier", cfg.verifier.num_workers, cfg.verifier.actor_num_cpus))
    return asked


def largest_bundles(cfg: TrainConfig) -> list[tuple[str, dict[str, float]]]:
    """The single bundle of each role that must fit on one node."""
    from launch.placement import engine_bundles, learner_bundles

    out = [("a learner rank", learner_bundles(cfg.rollout, cfg.learner)[0][0])]
    if not cfg.learner.colocate:
        out += [("a rollout engine", b) for b in engine_bundles(cfg.rollout)[0][:1]]
    return out


def cluster_fits(cfg: TrainConfig, total: dict[str, float], nodes: list[dict[str, float]]) -> list[str]:
    """One line per shortfall (empty when the config fits): e.g. "the config asks for 16 GPUs
    (learner 8 x 1, rollout 8 x 1), the cluster has 8". `total` is ray.cluster_resources(),
    `nodes` the resources of each alive node."""
    keys = {"CPU": ("learner.world_size x learner.num_cpus_per_rank, rollout.num_engines x "
                    "rollout.num_cpus_per_actor, verifier.num_workers x verifier.actor_num_cpus"),
            "GPU": "learner.world_size x learner.num_gpus_per_rank, rollout.num_engines x rollout.num_gpus_per_actor"}
    problems = []
    for res, parts in asked_resources(cfg).items():
        need = sum(n * each for _, n, each in parts)
        have = total.get(res, 0.0)
        if need > have + 1e-9:
            terms = ", ".join(f"{role} {n} x {each:g}" for role, n, each in parts if each)
            problems.append(f"the config asks for {need:g} {res}s ({terms}), the cluster has {have:g} "
                            f"(keys: {keys[res]})")
    for what, bundle in largest_bundles(cfg):
        if nodes and not any(all(node.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items()) for node in nodes):
            biggest = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)))
            problems.append(f"{what} needs {_text(bundle)} on one node; the largest node has "
                            f"{_text({k: biggest.get(k, 0.0) for k in ('CPU', 'GPU')})}")
    return problems


def check_cluster(cfg: TrainConfig) -> None:
    """Raise (one line per shortfall) when the connected Ray cluster cannot hold the run;
    `ray.preflight_check=false` skips it (an autoscaling cluster that adds nodes on demand)."""
    import ray

    if not cfg.ray.preflight_check:
        return
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    problems = cluster_fits(cfg, ray.cluster_resources(), nodes)
    if problems:
        raise ClusterTooSmall("; ".join(problems) + ". Change those keys, use a larger cluster, or skip this "
                              "check with ray.preflight_check=false on a cluster that autoscales")


class ClusterTooSmall(RuntimeError):
    """The Ray cluster has fewer resources than the config asks for (before any actor starts)."""


def _text(res: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(res.items()) if v) + "}"
