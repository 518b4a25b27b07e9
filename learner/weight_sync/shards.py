"""The "shards" sync (`learner.sync_mode=shards`, the default): every learner rank broadcasts its
own ZeRO-3 partitions on its own group; no learner-side gather, no single sending NIC.

ZeRO-3's layout (DeepSpeed 0.19.8, `partition_parameters.Init._partition_param`): a parameter
of n elements is flattened and padded to W * ceil(n / W) elements; rank r holds elements
[r * s, (r + 1) * s), s = ceil(n / W), as the 1-d `p.ds_tensor` (`ds_tensor.ds_numel == s`).
The padding (the last rank's tail, or a whole partition when n < W) is never read::

    p.view(-1)    | rank 0: s elements | rank 1: s elements | ... | rank W-1: s - pad | pad |
    full tensor   = cat(partitions)[:n].view(shape)

Groups: W stateless groups (`group.init_group`); group r = {learner rank r (group rank 0), every
vLLM worker (group rank 1 + engine * TP + tp_rank)}; every worker joins all W, in order.
One sync, for the same `BucketPlan` everywhere (full names, shapes, dtypes: the one that
travels through Ray) and its derived `shard_layout(plan, W)`: part bucket i = the partitions
of full bucket i's tensors, each at an aligned offset, the same offsets on every rank::

    learner rank r (group r)                        each vLLM worker
                                                    post recv of part 0 on groups 0..W-1
    for i in range(len(plan)):                      for i in range(len(plan)):
        buf = pack(part i, my partitions)               wait the W parts of bucket i
        work_i = group_r.broadcast(buf, 0) =======>     post the W recvs of bucket i+1
        work_{i-1}.wait()                               for each tensor of bucket i:
    (= `group.send_buckets` on the part layout)             copy its W chunks into a fresh
                                                            tensor, cut to n, view as shape;
                                                            yield it (vLLM's loader takes it)

A sender packs part i+1 while part i is in flight and holds two packed parts (1/W bucket each).
A receiver holds two slots of W parts (bucket i being reassembled, bucket i+1 arriving: about
two buckets), reused across buckets because every yielded tensor is a fresh copy (vLLM's
layerwise reload keeps tensors until their layer is complete), plus the tensor being handed
over and what the consumer keeps. The rebuild (a fresh allocation's page faults and one copy
per parameter) is the receiver's cost over the gather path, on the consumer's thread: on a
GPU it is one device copy; on a busy 2-core CPU a helper thread doing it gained nothing.
Counting: a bucket counts (`broadcasts`, `bytes` += its full `nbytes`) once all W parts arrived,
so reports compare with `plan.total_bytes` as in the gather path. With W == 1 the one part
is the bucket itself byte for byte (`shard_layout(plan, 1)` has the plan's offsets): that
case, and the gather path's single group, receive through `group.receive_buckets`.

torch only.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Container, Iterator, Sequence

import torch
from torch.distributed import ProcessGroup

from learner.weight_sync.buckets import Bucket, BucketPlan, TensorSpec, _round_up
from learner.weight_sync.group import SyncStats, _settle, receive_buckets, send_buckets

Tensors = dict[str, torch.Tensor]


def partition_numel(numel: int, world: int) -> int:
    """Elements of one rank's ZeRO-3 partition of an `numel`-element parameter: ceil(numel / W)."""
    return -(-numel // world)


def split(t: torch.Tensor, world: int) -> list[torch.Tensor]:
    """`t` as W ZeRO-3 partitions (flat, `partition_numel` elements each, zero-padded at the end;
    DeepSpeed leaves that padding uninitialised): rank r's is element r. Fresh tensors."""
    flat = t.detach().reshape(-1)
    s = partition_numel(flat.numel(), world)
    padded = torch.zeros(world * s, dtype=t.dtype, device=t.device)
    padded[:flat.numel()] = flat
    return [padded[r * s:(r + 1) * s].clone() for r in range(world)] if world > 1 else [padded]


def shard_layout(plan: BucketPlan, world: int) -> BucketPlan:
    """The part plan: bucket i holds one rank's partitions (shape (ceil(n / W),)) of plan bucket
    i's tensors, in order, aligned as the plan is. Never larger than the full bucket; equal to
    the plan's offsets when W == 1. A pure function of (plan, W): senders and receivers agree."""
    if world < 1:
        raise ValueError(f"world must be >= 1, got {world}")
    buckets = []
    for b in plan.buckets:
        specs, end = [], 0
        for t in b.tensors:
            start = _round_up(end, plan.align)
            specs.append(TensorSpec(t.name, (partition_numel(math.prod(t.shape), world),), t.dtype, start))
            end = start + specs[-1].nbytes
        buckets.append(Bucket(b.index, _round_up(end, plan.align), tuple(specs)))
    return BucketPlan(plan.version, plan.bucket_bytes, plan.align, tuple(buckets))


def send_shards(group: ProcessGroup, plan: BucketPlan, partitions: Callable[[Bucket], Tensors], world: int, *,
                device: torch.device | str = "cpu") -> SyncStats:
    """One learner rank: broadcast its partitions of every bucket of `plan` (root 0 of its own
    group), packing part i+1 while part i is in flight. `partitions(part_bucket)` maps each
    name to this rank's flat partition. `bytes` counts the parts sent (padding included)."""
    return send_buckets(group, shard_layout(plan, world), partitions, device=device)


def receive_shards(groups: Sequence[ProcessGroup], plan: BucketPlan, device: torch.device | str = "cpu", *,
                   root: int = 0, skip: Container[int] = (), stats: SyncStats | None = None
                   ) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, full tensor) of every bucket in plan order, group r carrying learner rank r's
    partitions; the W receives of bucket i+1 are posted before bucket i is reassembled. Buckets
    in `skip` are received and counted but not yielded (test hook). Pass `stats` to read counts."""
    world = len(groups)
    if world == 1:
        yield from receive_buckets(groups[0], plan, device, root=root, skip=skip, stats=stats)
        return
    stats = stats if stats is not None else SyncStats()
    t0 = time.perf_counter()
    parts = shard_layout(plan, world)
    slots: list[torch.Tensor | None] = [None, None]

    def post(i: int):
        n = parts.buckets[i].nbytes
        if slots[i % 2] is None or slots[i % 2].numel() < world * n:
            slots[i % 2] = None  # free the smaller slot before allocating a bigger one
            slots[i % 2] = torch.empty(world * n, dtype=torch.uint8, device=device)
        buf = slots[i % 2][:world * n].view(world, n)  # row r: learner rank r's part
        return buf, [g.broadcast(buf[r], root) for r, g in enumerate(groups)]

    pending = post(0) if len(plan) else None
    for i, bucket in enumerate(plan.buckets):
        buf, works = pending
        for work in works:
            work.wait()
        stats.broadcasts += 1
        stats.bytes += bucket.nbytes
        pending = post(i + 1) if i + 1 < len(plan) else None  # into bucket i-1's slot: fully copied out
        if i in skip:
            stats.skipped += 1
        else:
            for spec, part in zip(bucket.tensors, parts.buckets[i].tensors):
                yield spec.name, _reassemble(buf, spec, part)
        del buf
    _settle(device)
    stats.seconds = time.perf_counter() - t0


def _reassemble(buf: torch.Tensor, spec: TensorSpec, part: TensorSpec) -> torch.Tensor:
    """The full tensor from its W chunks (rows of `buf` at the part's offset): one copy into a
    fresh tensor, then a view cut to the element count and shaped (the padding stays behind)."""
    world, n = buf.shape[0], part.nbytes
    out = torch.empty(world * n, dtype=torch.uint8, device=buf.device)
    out.view(world, n).copy_(buf[:, part.offset:part.offset + n])
    return out.view(spec.torch_dtype)[:math.prod(spec.shape)].view(spec.shape)
