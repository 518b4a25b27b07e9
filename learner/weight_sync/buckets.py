"""Bucket plans: the policy's tensors laid out in flat byte buffers of bounded size.

Why: one broadcast per tensor pays a collective's latency ~340 times for a 7B model, and one
blob of the whole model does not fit the transports (4 GiB msgpack limit, 2x memory). A plan
is computed once from (name, shape, dtype) and travels as small metadata (a Ray call
argument); the bytes then move bucket by bucket over the weight-sync process group.

Layout of bucket b (a uint8 buffer of `b.nbytes` bytes)::

    | t0 | pad | t1 | pad | ... | tk | pad |     each t_j at offset_j, offset_j % align == 0
    0                                  nbytes  nbytes <= bucket_bytes, unless k == 0 (a single
                                               tensor larger than a bucket gets its own)

torch only (the learner and the GPU test machine have no vLLM).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterable, Iterator, Mapping, Sequence

import torch

ALIGN = 64  # bytes: every dtype view of an offset is aligned; cache-line / NCCL friendly


def dtype_name(dtype: torch.dtype | str) -> str:
    """'bfloat16' for torch.bfloat16 (a short string pickles smaller than a torch.dtype)."""
    name = str(dtype).removeprefix("torch.")
    if not isinstance(getattr(torch, name, None), torch.dtype):
        raise ValueError(f"not a torch dtype: {dtype!r}")
    return name


def _round_up(n: int, align: int) -> int:
    return -(-n // align) * align


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a bucket: bytes [offset, offset + nbytes) of the bucket's buffer."""

    name: str  # the receiver's (Hugging Face) parameter name
    shape: tuple[int, ...]  # () for a 0-d tensor
    dtype: str  # torch dtype name, e.g. "bfloat16"
    offset: int  # byte offset in the bucket, a multiple of the plan's align

    def __post_init__(self):
        if not all(isinstance(d, int) and d >= 0 for d in self.shape):
            raise ValueError(f"{self.name}: bad shape {self.shape}")
        dtype_name(self.dtype)
        if self.offset < 0:
            raise ValueError(f"{self.name}: negative offset {self.offset}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.torch_dtype.itemsize


@dataclass(frozen=True)
class Bucket:
    """The tensors of one broadcast, in order, packed into `nbytes` bytes."""

    index: int  # position in the plan = broadcast number
    nbytes: int  # buffer size: end of the last tensor rounded up to the align
    tensors: tuple[TensorSpec, ...]

    def __post_init__(self):
        if not self.tensors:
            raise ValueError(f"bucket {self.index} is empty")
        end = 0
        for t in self.tensors:
            if t.offset < end:
                raise ValueError(f"bucket {self.index}: {t.name} overlaps the tensor before it")
            end = t.offset + t.nbytes
        if end > self.nbytes:
            raise ValueError(f"bucket {self.index}: tensors end at {end} > nbytes {self.nbytes}")


@dataclass(frozen=True)
class BucketPlan:
    """Every tensor exactly once, in order, in buckets of at most `bucket_bytes` bytes
    (oversize single tensors excepted). len(plan) == number of broadcasts."""

    version: int  # policy version the bytes belong to
    bucket_bytes: int
    align: int
    buckets: tuple[Bucket, ...]

    def __post_init__(self):
        if self.align <= 0 or self.bucket_bytes < self.align or self.bucket_bytes % self.align:
            raise ValueError(f"bucket_bytes {self.bucket_bytes} must be a positive multiple of align {self.align}")
        names = set()
        for i, b in enumerate(self.buckets):
            if b.index != i:
                raise ValueError(f"bucket {i} has index {b.index}")
            if b.nbytes > self.bucket_bytes and len(b.tensors) > 1:
                raise ValueError(f"bucket {i}: {b.nbytes} bytes > bucket_bytes {self.bucket_bytes}")
            if b.nbytes % self.align:
                raise ValueError(f"bucket {i}: nbytes {b.nbytes} not aligned to {self.align}")
            for t in b.tensors:
                if t.offset % self.align:
                    raise ValueError(f"{t.name}: offset {t.offset} not aligned to {self.align}")
                if t.name in names:
                    raise ValueError(f"{t.name} appears twice")
                names.add(t.name)

    def __len__(self) -> int:
        return len(self.buckets)

    @property
    def total_bytes(self) -> int:
        return sum(b.nbytes for b in self.buckets)

    def specs(self) -> Iterator[TensorSpec]:
        for b in self.buckets:
            yield from b.tensors

    def with_version(self, version: int) -> "BucketPlan":
        return replace(self, version=version)


def specs_of(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(name, shape, dtype) of plain tensors. Under ZeRO-3 pass `p.ds_shape` instead of `p.shape`."""
    return [(n, tuple(t.shape), t.dtype) for n, t in named_tensors]


def plan_buckets(params: Iterable[tuple[str, Sequence[int], torch.dtype | str]], bucket_bytes: int,
                 version: int = 0, align: int = ALIGN) -> BucketPlan:
    """Greedy, order-preserving: a tensor opens a new bucket when it does not fit the current one."""
    buckets: list[Bucket] = []
    cur: list[TensorSpec] = []
    end = 0

    def close():
        buckets.append(Bucket(len(buckets), _round_up(end, align), tuple(cur)))

    for name, shape, dtype in params:
        spec = TensorSpec(name, tuple(int(d) for d in shape), dtype_name(dtype), 0)
        start = _round_up(end, align)
        if cur and start + spec.nbytes > bucket_bytes:
            close()
            cur, start = [], 0
        cur.append(replace(spec, offset=start))
        end = start + spec.nbytes
    if cur:
        close()
    return BucketPlan(version, bucket_bytes, align, tuple(buckets))


def _view(buf: torch.Tensor, spec: TensorSpec) -> torch.Tensor:
    return buf[spec.offset:spec.offset + spec.nbytes].view(spec.torch_dtype).view(spec.shape)


def pack(bucket: Bucket, tensors: Mapping[str, torch.Tensor], device: torch.device | str = "cpu",
         out: torch.Tensor | None = None) -> torch.Tensor:
    """The bucket's tensors copied (any source device/layout) into a uint8 buffer: the first
    `nbytes` of `out` if given, else a fresh one. Dtype and shape must match the plan
    exactly: a silent cast would hide a plan mismatch."""
    if out is None:
        buf = torch.empty(bucket.nbytes, dtype=torch.uint8, device=device)
    elif out.dtype != torch.uint8 or out.dim() != 1 or out.numel() < bucket.nbytes:
        raise ValueError(f"bucket {bucket.index}: out must be a 1-d uint8 buffer of >= {bucket.nbytes} bytes")
    else:
        buf = out[:bucket.nbytes]
    for spec in bucket.tensors:
        t = tensors[spec.name]
        if t.dtype != spec.torch_dtype or tuple(t.shape) != spec.shape:
            raise ValueError(f"{spec.name}: got {t.dtype} {tuple(t.shape)}, plan says {spec.dtype} {spec.shape}")
        _view(buf, spec).copy_(t.detach())
    return buf


def unpack(bucket: Bucket, buf: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) views into `buf`, in bucket order; they keep `buf` alive."""
    if buf.dtype != torch.uint8 or buf.numel() != bucket.nbytes:
        raise ValueError(f"bucket {bucket.index}: buffer {buf.dtype} x {buf.numel()}, expected uint8 x {bucket.nbytes}")
    return [(spec.name, _view(buf, spec)) for spec in bucket.tensors]
