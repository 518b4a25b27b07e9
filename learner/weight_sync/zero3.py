"""The learner's side of the sync: ZeRO-3 parameters as a bucket plan, either read as each
rank's own partitions (sync_mode shards) or gathered one bucket at a time (sync_mode gather,
and the colocated path), and the policy reset from the model's own files.

Under ZeRO-3 each rank holds 1/world of every parameter (`p.ds_shape` is the full shape,
`p.ds_tensor` this rank's flat partition: layout in `shards`). `partition_reader` is local:
no collective. `GatheredParameters` over one bucket is a collective of the learner's world:
every rank enters it for every bucket, and only rank 0 packs and sends (`group.send_buckets`).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from learner.weight_sync.buckets import ALIGN, Bucket, BucketPlan, plan_buckets
from learner.weight_sync.shards import split


def bucket_bytes(mb: float) -> int:
    """`learner.sync_bucket_mb` in bytes, a multiple of the plan's alignment."""
    return max(ALIGN, int(mb * (1 << 20)) // ALIGN * ALIGN)


def policy_plan(module: torch.nn.Module, bucket_bytes: int, version: int = 0) -> BucketPlan:
    """The bucket plan of a (ZeRO-3 partitioned or plain) module's parameters, HF names."""
    params = [(n, tuple(getattr(p, "ds_shape", p.shape)), p.dtype) for n, p in module.named_parameters()]
    return plan_buckets(params, bucket_bytes, version)


def bucket_gatherer(module: torch.nn.Module):
    """gather(bucket) for `send_buckets`: a context in which the bucket's parameters are whole
    on every rank (freed again on exit, so at most one gathered bucket per rank at a time)."""
    params = dict(module.named_parameters())

    @contextmanager
    def gather(bucket: Bucket) -> Iterator[dict[str, torch.Tensor]]:
        from deepspeed import zero

        chosen = [params[spec.name] for spec in bucket.tensors]
        with zero.GatheredParameters(chosen, modifier_rank=None):
            yield {spec.name: p.data for spec, p in zip(bucket.tensors, chosen)}

    return gather


def partition_reader(module: torch.nn.Module, rank: int, world: int):
    """partitions(part_bucket) for `shards.send_shards`: this rank's ZeRO-3 partition of each
    parameter (`p.ds_tensor` itself, packed from there: no collective). A parameter that is not
    partitioned (ZeRO stage < 3) is whole on every rank: its rank-th chunk is cut locally."""
    params = dict(module.named_parameters())

    def partitions(bucket: Bucket) -> dict[str, torch.Tensor]:
        out = {}
        for spec in bucket.tensors:
            p = params[spec.name]
            part = getattr(p, "ds_tensor", None)
            if part is None:
                out[spec.name] = split(p.data, world)[rank]
                continue
            if tuple(part.shape) != spec.shape:  # e.g. hpZ / MiCS partition over a subgroup
                raise ValueError(
                    f"{spec.name}: ZeRO-3 partition of {tuple(part.shape)} elements, the shards sync expects "
                    f"{spec.shape} (ceil({p.ds_numel} / {world} ranks)); use learner.sync_mode=gather")
            out[spec.name] = part
        return out

    return partitions


def load_from_path(module: torch.nn.Module, model_path: str, rank: int) -> int:
    """Overwrite every parameter with the model's own safetensors files (rank 0 reads, ZeRO-3
    scatters into the partitions); the weights never pass through Ray. Returns tensors set."""
    from deepspeed import zero
    from safetensors import safe_open

    files = _safetensors_files(model_path)
    where = {}
    for f in files:
        with safe_open(f, framework="pt") as st:
            where.update({k: f for k in st.keys()})
    loaded = 0
    for name, p in module.named_parameters():
        if name not in where:
            raise KeyError(f"cannot reset the policy from {model_path}: {name} is in none of its safetensors files")
        with zero.GatheredParameters([p], modifier_rank=0):
            if rank == 0:
                with safe_open(where[name], framework="pt") as st:
                    p.data.copy_(st.get_tensor(name).to(p.device, p.dtype))
        loaded += 1
    return loaded


def _safetensors_files(model_path: str) -> list[str]:
    folder = Path(model_path)
    if not folder.is_dir():  # a hub name: its files are in the local cache (HF_HOME)
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(model_path, allow_patterns=["*.safetensors", "*.json"]))
    files = sorted(str(f) for f in folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {folder}")
    return files
