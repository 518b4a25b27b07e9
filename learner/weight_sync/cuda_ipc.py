"""Colocated weight sync: learner rank e lends each packed bucket to engine e's vLLM worker on
the same device by handle (CUDA IPC on GPUs, as verl does) instead of broadcasting it.

Group (`group.init_group`, gloo even on GPUs: only handles and acks cross it): ranks 0..L-1 =
learner ranks, rank L+e = engine e's worker (tensor_parallel_size 1), whose source is learner
rank e. Under ZeRO-3 every rank holds the whole gathered bucket, so every rank serves its own
engine from its own GPU: no cross-GPU traffic. One sync, bucket i (slot s = i % 2)::

    every learner rank                                    engine e's worker, ONE iterator:
                                                          reload_weights(weights_iterator=
                                                            receive_colocated(pg, plan, source_rank=e))
    with gather(bucket i) as ts:   (ZeRO-3, learner world)
        buf = pack(bucket i, ts, out=slot[s])
    h = transport.share(buf)
    wait ack i-1 (check its sum)
    allgather(pickled (i, h, error)) <================>  allgather(empty payload); h = payload[e]
                                                          buf = transport.open(h)  (a copy it owns)
    post ack i: allreduce([0])       <================>  allreduce([1 if opened else 0]), waited
                                                          yield unpack(bucket i, buf)  (vLLM loads it)
    wait the last ack; free both slots

A learner rank packs bucket i+1 while the workers copy and load bucket i: at most two packed
buffers per rank (`Transport.peak`). A worker has no collective pending while it yields.
Failures stay in step: a learner rank that cannot pack or share sends its error in the
allgather, a worker that cannot open acks 0, and every rank raises at that same collective.
Only a crashed process (or a consumer that abandons the iterator) leaves peers waiting until
the group's timeout. After a failed sync the engine is partly reloaded: the run must stop.

Transports: `CudaIpc` (GPU; found by UUID, so the processes may number their GPUs differently)
and `SharedMemory` (a /dev/shm file: CUDA IPC's stand-in on CPU, for tests and CPU runs).
"""
from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import time
import uuid
from typing import Container, Iterator

import torch
from torch.distributed import ProcessGroup

from learner.weight_sync.buckets import ALIGN, BucketPlan, pack, unpack
from learner.weight_sync.group import Gather, SyncStats, _enter, _settle

HANDLE_BYTES = 4096  # one rank's slot in the handle allgather: 8-byte length + pickled payload


class Transport:
    """Lends a uint8 buffer to another process on the same device. Learner side: `alloc`, `share`
    (a small picklable handle), `free` (after the ack); worker side: `open` -> a copy it owns."""

    def __init__(self):
        self.live = self.peak = 0  # buffers allocated and not yet freed, and the most at once

    def alloc(self, nbytes: int, device: torch.device | str) -> torch.Tensor:
        buf = self._alloc(max(nbytes, ALIGN), torch.device(device))
        self.live += 1
        self.peak = max(self.peak, self.live)
        return buf

    def free(self, buf: torch.Tensor) -> None:
        self.live -= 1
        self._free(buf)

    def _alloc(self, nbytes: int, device: torch.device) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, device=device)

    def _free(self, buf: torch.Tensor) -> None:
        pass

    def share(self, buf: torch.Tensor):  # -> a picklable handle of buf, well under HANDLE_BYTES
        raise NotImplementedError

    def open(self, handle, device: torch.device | str) -> torch.Tensor:  # -> a uint8 copy it owns
        raise NotImplementedError


_DEVICE_ARG = 6  # position of storage_device in rebuild_cuda_tensor's arguments


def device_uuid(device: torch.device | str | int) -> str:
    return str(torch.cuda.get_device_properties(torch.device(device)).uuid)


class CudaIpc(Transport):
    def share(self, buf):
        from torch.multiprocessing.reductions import reduce_tensor

        # The IPC event is recorded when a storage is first shared only, and slots are reused:
        # the worker must not need it. Block until the pack has landed instead.
        torch.cuda.current_stream(buf.device).synchronize()
        return device_uuid(buf.device), tuple(reduce_tensor(buf)[1])

    def open(self, handle, device):
        from torch.multiprocessing.reductions import rebuild_cuda_tensor

        uuid_, args = handle
        index = next((i for i in range(torch.cuda.device_count()) if device_uuid(i) == uuid_), None)
        if index is None:
            raise RuntimeError(f"GPU {uuid_} is not visible in this process: the engine is not colocated")
        args = list(args)
        args[_DEVICE_ARG] = index
        with torch.cuda.device(index):
            shared = rebuild_cuda_tensor(*args)
            buf = shared.clone()
            torch.cuda.current_stream().synchronize()  # copied before the learner may reuse it
        del shared  # drops the IPC mapping and torch's producer-side reference count
        return buf.to(device)


class SharedMemory(Transport):
    """CPU stand-in for CUDA IPC: each buffer is a file in /dev/shm that the learner rank maps
    (`torch.from_file`) and packs into; the worker reads the bytes into memory it owns; `free`
    unlinks it (a crash can leave `oreal_sync_*` files behind)."""

    def __init__(self, folder: str | None = None):
        super().__init__()
        self.folder = folder or ("/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir())

    def _alloc(self, nbytes, device):
        st = os.statvfs(self.folder)  # writing past a full tmpfs is a SIGBUS, not an error
        if st.f_bavail * st.f_frsize < nbytes:
            raise OSError(f"{self.folder} has {st.f_bavail * st.f_frsize} bytes free, a bucket needs {nbytes}: "
                          "lower learner.sync_bucket_mb or enlarge it (docker --shm-size)")
        path = os.path.join(self.folder, f"oreal_sync_{os.getpid()}_{uuid.uuid4().hex}")
        return torch.from_file(path, shared=True, size=nbytes, dtype=torch.uint8)

    def _free(self, buf):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(buf.untyped_storage().filename)

    def share(self, buf):
        return buf.untyped_storage().filename, buf.storage_offset(), buf.numel()

    def open(self, handle, device):
        path, offset, nbytes = handle
        mapped = torch.from_file(path, shared=False, size=offset + nbytes, dtype=torch.uint8)
        return mapped[offset:].clone().to(device)  # the private mapping goes with `mapped`


def transport_for(device: torch.device | str) -> Transport:
    return CudaIpc() if torch.device(device).type == "cuda" else SharedMemory()


def _exchange(group: ProcessGroup, payload: bytes) -> list[bytes]:
    """Every rank's payload (b"" from workers), through one allgather of fixed-size slots."""
    mine = torch.zeros(HANDLE_BYTES, dtype=torch.uint8)
    mine[:8 + len(payload)] = torch.frombuffer(bytearray(len(payload).to_bytes(8, "little") + payload),
                                               dtype=torch.uint8)
    out = [torch.empty_like(mine) for _ in range(group.size())]
    group.allgather([out], [mine]).wait()
    return [bytes(t[8:8 + int.from_bytes(bytes(t[:8]), "little")]) for t in out]


def _raise_errors(payloads: list[bytes], index: int, mine: BaseException | None) -> None:
    errors = [f"learner rank {r}: {e}" for r, p in enumerate(payloads) if p and (e := pickle.loads(p)[2])]
    if errors:
        raise RuntimeError(f"colocated sync failed at bucket {index}: " + "; ".join(errors)) from mine


def _ack(group: ProcessGroup, value: int):
    t = torch.tensor([value], dtype=torch.int64)
    return t, group.allreduce([t])  # sum: the receivers that opened the bucket


def _check_ack(ack) -> None:
    if ack is not None:
        index, receivers, t, work = ack
        work.wait()
        if int(t) != receivers:
            raise RuntimeError(f"colocated sync failed at bucket {index}: {receivers - int(t)} of "
                               f"{receivers} receivers could not open it (their own errors say why)")


def send_colocated(group: ProcessGroup, plan: BucketPlan, gather: Gather, *,
                   device: torch.device | str = "cpu", transport: Transport | None = None) -> SyncStats:
    """Every learner rank calls this (group rank = learner rank) for every sync: lends each
    bucket of `plan` to its own engine's worker. `broadcasts` counts buckets moved."""
    transport = transport or transport_for(device)
    stats, t0 = SyncStats(), time.perf_counter()
    slots: list[torch.Tensor | None] = [None, None]
    ack = None  # (index, receivers, tensor, work) of the previous bucket
    try:
        for i, bucket in enumerate(plan.buckets):
            s, error = i % 2, None
            try:
                if slots[s] is None or slots[s].numel() < bucket.nbytes:
                    if slots[s] is not None:  # free it before allocating a bigger one
                        transport.free(slots[s])
                        slots[s] = None
                    slots[s] = transport.alloc(bucket.nbytes, device)
                with _enter(gather(bucket)) as tensors:
                    buf = pack(bucket, tensors, out=slots[s])
                payload = pickle.dumps((bucket.index, transport.share(buf), None))
                if len(payload) > HANDLE_BYTES - 8:
                    raise ValueError(f"a handle of {len(payload)} bytes does not fit HANDLE_BYTES={HANDLE_BYTES}")
            except Exception as e:  # tell every rank at the allgather instead of leaving them waiting
                error, payload = e, pickle.dumps((bucket.index, None, f"{type(e).__name__}: {e}"[:800]))
            _check_ack(ack)  # bucket i-1 was opened everywhere (slot s held bucket i-2: done before)
            payloads = _exchange(group, payload)
            _raise_errors(payloads, bucket.index, error)
            ack = (bucket.index, sum(not p for p in payloads), *_ack(group, 0))
            stats.broadcasts += 1
            stats.bytes += bucket.nbytes
        _check_ack(ack)
    finally:
        if ack is not None:
            ack[3].wait()  # leave no collective pending, even when raising
        for slot in slots:
            if slot is not None:
                transport.free(slot)
    _settle(device)
    stats.seconds = time.perf_counter() - t0
    return stats


def receive_colocated(group: ProcessGroup, plan: BucketPlan, *, source_rank: int,
                      device: torch.device | str = "cpu", skip: Container[int] = (),
                      stats: SyncStats | None = None, transport: Transport | None = None
                      ) -> Iterator[tuple[str, torch.Tensor]]:
    """Engine e's worker (source_rank = e): yield (name, tensor) of every bucket in plan order,
    each bucket copied into memory this process owns, no collective pending at a yield. Buckets
    in `skip` are moved and counted but not yielded (test hook). Pass `stats` to read the counts."""
    transport = transport or transport_for(device)
    stats = stats if stats is not None else SyncStats()
    t0 = time.perf_counter()
    for bucket in plan.buckets:
        payloads = _exchange(group, b"")
        _raise_errors(payloads, bucket.index, None)  # a learner rank failed: every rank stops here
        buf = error = None
        try:
            if not payloads[source_rank]:
                raise RuntimeError(f"group rank {source_rank} shared nothing: it is not a learner rank")
            index, handle, _ = pickle.loads(payloads[source_rank])
            if index != bucket.index:
                raise RuntimeError(f"got bucket {index}'s handle for bucket {bucket.index}")
            buf = transport.open(handle, device)
            if buf.numel() != bucket.nbytes:
                raise RuntimeError(f"bucket {bucket.index}: {buf.numel()} bytes, plan says {bucket.nbytes}")
        except Exception as e:  # still ack (0): every rank learns of it at the same collective
            error = e
        receivers = sum(not p for p in payloads)
        t, work = _ack(group, int(error is None))
        work.wait()
        if error is not None:
            raise error
        if int(t) != receivers:
            raise RuntimeError(f"colocated sync failed at bucket {bucket.index}: {receivers - int(t)} "
                               f"other receiver(s) could not open it")
        stats.broadcasts += 1
        stats.bytes += bucket.nbytes
        if bucket.index in skip:
            stats.skipped += 1
        else:
            yield from unpack(bucket, buf)
        del buf
    _settle(device)
    stats.seconds = time.perf_counter() - t0
