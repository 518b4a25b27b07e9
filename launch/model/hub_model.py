"""A hub `model.path` downloaded once, by the driver, before any role starts.

Without this every rollout engine and every learner rank would fetch the model itself, each
into its own node's cache. Instead the driver calls `huggingface_hub.snapshot_download`
once, into `model.cache_dir` (Hugging Face's cache layout; null: the driver's own cache,
`$HF_HOME/hub`), pinned to `model.revision` when one is given, and every role then loads the
local snapshot folder, `<cache_dir>/models--<org>--<name>/snapshots/<commit>/`. On a Ray
cluster that folder must be on storage every node reads, so there `model.cache_dir` is
required. A snapshot already in the cache is not fetched again (offline, with
HF_HUB_OFFLINE=1, only the cache is read). The hub token (HF_TOKEN) is read from the
driver's environment by `huggingface_hub` and written nowhere.

The run's config then names the snapshot folder as `model.path`: its commit is the exact
weights the run started from.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from launch.config import TrainConfig

# Other frameworks' copies of the weights, never loaded by transformers or vLLM here.
IGNORE_PATTERNS = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "*.tflite", "*.gguf", "original/*", "*.pth"]


def is_hub_model(path: str | None) -> bool:
    """Whether `model.path` names a hub model (not null/"tiny", not an existing folder; a
    local-looking path was already checked by ModelConfig)."""
    from launch.model.tiny_model import is_local_path

    return path not in (None, "tiny") and not is_local_path(path) and not Path(path).is_dir()


def resolve_hub_model(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with a hub `model.path` replaced by its downloaded snapshot folder (unchanged for
    the tiny model or a local folder). Raises ValueError, one line naming the keys, when the
    model cannot be had, or when a cluster run leaves `model.cache_dir` unset."""
    m = cfg.model
    if not is_hub_model(m.path):
        return cfg
    check_cache_dir(cfg)
    local = download(m.path, m.revision, m.cache_dir)
    return dataclasses.replace(cfg, model=dataclasses.replace(m, path=local))


def check_cache_dir(cfg: TrainConfig) -> None:
    """A hub model on a Ray cluster needs `model.cache_dir` (storage every node reads)."""
    from launch.preflight import on_cluster

    if is_hub_model(cfg.model.path) and cfg.model.cache_dir is None and on_cluster(cfg):
        raise ValueError(f"model.path={cfg.model.path!r} is a hub model and this run joins a Ray cluster: set "
                         "model.cache_dir to a folder on storage every node reads (the driver downloads the "
                         "model there once; every role loads it from there)")


def download(repo_id: str, revision: str | None, cache_dir: str | None) -> str:
    """The local snapshot folder of `repo_id` at `revision`, fetched into `cache_dir` unless
    it is there already."""
    from huggingface_hub import snapshot_download

    where = cache_dir or "the Hugging Face cache ($HF_HOME/hub)"
    pinned = f" model.revision={revision!r}" if revision else ""
    print(f"model.path={repo_id!r}{pinned}: downloading once into {where}", flush=True)
    try:
        local = snapshot_download(repo_id=repo_id, revision=revision, cache_dir=cache_dir,
                                  ignore_patterns=IGNORE_PATTERNS)
    except Exception as e:  # offline and not cached, unknown repo or revision, no access, network
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ValueError(f"model.path={repo_id!r}{pinned}: cannot download it into {where} "
                         f"({type(e).__name__}: {first})") from e
    if not (Path(local) / "config.json").is_file():
        raise ValueError(f"model.path={repo_id!r}{pinned}: the snapshot {local} has no config.json; "
                         "expected a Hugging Face model")
    return str(local)
