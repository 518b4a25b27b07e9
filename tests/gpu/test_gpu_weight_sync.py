"""The weight-sync protocol's GPU transports, torch only (no Ray, no vLLM): bucketed broadcast
over a stateless NCCL group (sender cuda:0, receiver cuda:1) and the colocated CUDA-IPC path
(a learner-rank process and a receiver process on one GPU, handles and acks over a gloo group).
Each moves a ~220 MB mixed-dtype state dict in 32 MB buckets, checks that it arrives
bit-identical and prints GB/s. On a GPU machine:
`pytest -m gpu tests/gpu/test_gpu_weight_sync.py -s` (well under 5 minutes)."""
from __future__ import annotations

import pickle
import socket
import traceback
from datetime import timedelta

import pytest
import torch

pytestmark = [pytest.mark.gpu]

MB = 1 << 20
BUCKET = 32 * MB


def state_dict(device) -> dict[str, torch.Tensor]:
    """~220 MB, the same bits in every process (seeded on the CPU): an oversize embedding,
    odd-shaped bf16/fp16/fp32/int64 'layers', a 0-d scalar and an empty tensor."""
    g = torch.Generator().manual_seed(0)
    sd = {"embed.weight": torch.randn(10007, 1001, generator=g)}
    for i in range(6):
        p = f"layers.{i}."
        sd[p + "attn.weight"] = torch.randn(1536, 4099, generator=g).bfloat16()
        sd[p + "mlp.weight"] = torch.randn(2048, 1027, generator=g).half()
        sd[p + "proj.weight"] = torch.randn(3001, 997, generator=g)
        sd[p + "ids"] = torch.randint(-(2**62), 2**62, (123457,), generator=g)
        sd[p + "norm.weight"] = torch.randn(4099, generator=g)
    sd["scale"] = torch.randn((), generator=g)
    sd["empty"] = torch.randn(0, 16, generator=g).half()
    return {n: t.to(device) for n, t in sd.items()}


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    flat = lambda t: t.contiguous().reshape(-1).view(torch.uint8)  # noqa: E731
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(flat(a), flat(b))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(target, args_per_rank, timeout=240):
    import torch.multiprocessing as tmp

    ctx = tmp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, out)) for args in args_per_rank]
    for p in procs:
        p.start()
    try:
        results = {r: (status, res) for r, status, res in (out.get(timeout=timeout) for _ in procs)}
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    for r, (status, res) in results.items():
        assert status == "ok", f"rank {r}:\n{res}"
    return {r: res for r, (_, res) in results.items()}


def _nccl_rank(rank: int, port: int, backend: str, out) -> None:
    from learner.weight_sync.buckets import plan_buckets, specs_of
    from learner.weight_sync.group import SyncStats, destroy_group, init_group, raw_broadcast, receive_buckets, send_buckets

    try:
        device = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
        if backend == "nccl":
            torch.cuda.set_device(device)
        sd = state_dict(device)
        plan = plan_buckets(specs_of(sd.items()), BUCKET)
        pg = init_group("127.0.0.1", port, rank, 2, backend, timeout=timedelta(seconds=120))
        raw_broadcast(pg, MB, device)  # NCCL makes its communicator on the first collective
        if rank == 0:
            stats = send_buckets(pg, plan, lambda b: {t.name: sd[t.name] for t in b.tensors}, device=device)
            res = {"stats": stats, "n": len(plan)}
        else:
            stats = SyncStats()
            got = [(n, bit_equal(t, sd[n])) for n, t in receive_buckets(pg, plan, device, stats=stats)]
            res = {"stats": stats, "names": [n for n, _ in got], "bad": [n for n, ok in got if not ok],
                   "expected": list(sd)}
        res["raw"] = raw_broadcast(pg, plan.total_bytes, device)
        destroy_group(pg)
        out.put((rank, "ok", res))
    except BaseException:
        out.put((rank, "error", traceback.format_exc()))


def test_nccl_bucketed_broadcast_is_bit_identical():
    if torch.cuda.device_count() < 2:
        pytest.skip(f"the NCCL path needs 2 GPUs (sender cuda:0, receiver cuda:1); "
                    f"this machine has {torch.cuda.device_count()}")
    port = _free_port()
    res = _run(_nccl_rank, [(0, port, "nccl"), (1, port, "nccl")])
    sent, got = res[0]["stats"], res[1]["stats"]
    assert res[1]["bad"] == [] and res[1]["names"] == res[1]["expected"]
    assert sent.broadcasts == got.broadcasts == res[0]["n"] and sent.bytes == got.bytes
    print(f"\nNCCL cuda:0 -> cuda:1, {res[0]['n']} buckets of <= 32 MB, {sent.bytes / 1e6:.0f} MB: "
          f"{sent.seconds:.3f} s = {sent.gb_per_s:.1f} GB/s; one raw broadcast of the same bytes "
          f"{res[0]['raw']:.3f} s = {sent.bytes / res[0]['raw'] / 1e9:.1f} GB/s")


def _ipc_rank(rank: int, port: int, out) -> None:
    """Group rank 0: a learner rank lending its buckets; rank 1: engine 0's worker (source 0).
    Both on cuda:0; the handles and acks cross a gloo group (`cuda_ipc` protocol)."""
    from learner.weight_sync.buckets import plan_buckets, specs_of
    from learner.weight_sync.cuda_ipc import CudaIpc, receive_colocated, send_colocated
    from learner.weight_sync.group import SyncStats, destroy_group, init_group

    class Measured(CudaIpc):  # records the pickled size of each handle
        handle_bytes = 0

        def share(self, buf):
            handle = super().share(buf)
            self.handle_bytes = max(self.handle_bytes, len(pickle.dumps(handle)))
            return handle

    try:
        torch.cuda.set_device(0)
        sd = state_dict("cuda:0")
        plan = plan_buckets(specs_of(sd.items()), BUCKET)
        pg = init_group("127.0.0.1", port, rank, 2, "gloo", timeout=timedelta(seconds=120))
        res = {"n": len(plan), "syncs": []}
        for _ in range(2):  # the second sync reopens memory the first one shared
            if rank == 0:
                transport = Measured()
                stats = send_colocated(pg, plan, lambda b: {t.name: sd[t.name] for t in b.tensors},
                                       device="cuda:0", transport=transport)
                res["syncs"].append((stats, transport.peak, transport.live, transport.handle_bytes))
            else:
                stats = SyncStats()
                got = list(receive_colocated(pg, plan, source_rank=0, device="cuda:0", stats=stats))
                # checked after every bucket arrived: the yielded tensors own their memory
                res["syncs"].append((stats, [n for n, _ in got], [n for n, t in got if not bit_equal(t, sd[n])],
                                     list(sd)))
        destroy_group(pg)
        out.put((rank, "ok", res))
    except BaseException:
        out.put((rank, "error", traceback.format_exc()))


def test_colocated_cuda_ipc_is_bit_identical():
    port = _free_port()
    res = _run(_ipc_rank, [(0, port), (1, port)])
    n = res[0]["n"]
    for (sent, peak, live, handle_bytes), (got, names, bad, expected) in zip(res[0]["syncs"], res[1]["syncs"]):
        assert bad == [] and names == expected
        assert sent.broadcasts == got.broadcasts == n and sent.bytes == got.bytes
        assert peak <= 2 and live == 0 and 0 < handle_bytes < 2048
        print(f"\nCUDA IPC on one GPU (gloo for handles), {n} buckets, {sent.bytes / 1e6:.0f} MB: "
              f"{sent.seconds:.3f} s = {sent.gb_per_s:.1f} GB/s sent, receiver {got.seconds:.3f} s; "
              f"handle {handle_bytes} bytes pickled, {peak} packed buffers at most")
