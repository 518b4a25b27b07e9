"""How a learner rank reads and fingerprints its checkpoint files.

Loading: DeepSpeed's TorchCheckpointEngine reads its shards with `torch.load(weights_only=False)`,
i.e. full pickle: a checkpoint someone else wrote could run code on every rank. The engine
here reads with `weights_only=True` and allows, by name, the two DeepSpeed classes a ZeRO-3
optimizer shard holds (found with `torch.serialization.get_unsafe_globals_in_checkpoint` on
a real one); any other global in a shard stops the load naming the file and the global.

Hashing: each rank hashes the files it wrote (their names carry its rank), right after
writing them, so the checkpoint's SHA-256 manifest (launch/state/manifest.py) costs the
driver only the small files.
"""
from __future__ import annotations

import hashlib
import os
import re

import torch

CHUNK = 8 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def own_files(folder: str, rank: int) -> list[str]:
    """Files under `folder` that rank `rank` wrote (relative, '/'-separated): DeepSpeed's
    `*_rank_<r>_*` shards and `rng_rank<r>.pt`."""
    mine = re.compile(rf"(?:^|_)rank_?{rank}(?:_|\.pt$)")
    out = []
    for dirpath, _, names in os.walk(folder):
        for name in names:
            if mine.search(name):
                out.append(os.path.relpath(os.path.join(dirpath, name), folder).replace(os.sep, "/"))
    return sorted(out)


def hash_own_files(folder: str, rank: int) -> dict[str, str]:
    return {rel: sha256_file(os.path.join(folder, rel)) for rel in own_files(folder, rank)}


def allowed_globals() -> list:
    """The non-tensor classes a DeepSpeed ZeRO checkpoint pickles (and nothing else)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    return [LossScaler, ZeroStageEnum]


def load_weights_only(path: str, map_location=None):
    """`torch.load` that cannot run code: tensors, containers, numbers and `allowed_globals()`."""
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        if type(e).__name__ == "UnpicklingError" or "Weights only load failed" in str(e):
            unsafe = _unsafe_globals(path) or sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(e))))
            raise ValueError(f"{path}: refused to load, it pickles {', '.join(unsafe) or 'code'} "
                             "(only tensors and DeepSpeed's optimizer state are loaded: resume only "
                             "checkpoints you trust)") from None
        raise


def _unsafe_globals(path: str) -> list[str]:
    try:
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in allowed_globals()}
        return [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in allowed]
    except Exception:
        return []


def use_weights_only(engine) -> None:
    """Make a DeepSpeed engine read its checkpoints with `load_weights_only` (an engine with a
    checkpoint engine other than DeepSpeed's torch one, e.g. Nebula, is left as it is)."""
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

    ckpt_engine = getattr(engine, "checkpoint_engine", None)
    if type(ckpt_engine) is TorchCheckpointEngine:
        ckpt_engine.load = lambda path, map_location=None: load_weights_only(path, map_location)
