"""The sync at 8 groups: `learner.sync_mode=shards` with W = 8 learner ranks over NCCL, torch
only (no Ray, no vLLM), for the first machine with 2 GPUs or more.

The production shape: W sender processes (learner ranks), each holding only its ZeRO-3
partitions of a mixed-dtype state dict and rooting its own group (`shards.send_shards`); R
receiver processes (vLLM workers' stand-ins) join all W groups in order, post the W broadcasts
of each bucket at once (W NCCL communicators busy side by side on one GPU) and rebuild every
tensor (`shards.receive_shards`). Every tensor must arrive bit-identical, every group must carry
one broadcast per bucket; the GB/s are printed. NCCL refuses two ranks of one communicator on
one GPU, so the receivers take the last R GPUs and the senders share the others round-robin
(on 2 GPUs: 8 senders on cuda:0, which is what a receiver sees from 8 nodes' ranks anyway).

Which group implementation runs (`group.group_impl()`, printed): vLLM's
`stateless_init_torch_distributed_process_group` where vLLM is installed (a cluster node's
image), else its torch-only twin `group._torch_group` (the project's GPU check machine has no
vLLM): there this covers the protocol, NCCL and the twin, not vLLM's function itself.
On one GPU only `test_nccl_groups_build_on_one_gpu` runs (8 one-rank NCCL groups: the group
is built and broadcasts with this machine's torch and NCCL; no bytes cross a link).

    pytest -m gpu tests/gpu/test_gpu_sync_groups.py -s           # about a minute
    python tests/gpu/test_gpu_sync_groups.py --groups 8 --mb 1024 --receivers 2
"""
from __future__ import annotations

import socket
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, when run as a script too
from conftest import run_spawned  # noqa: E402

pytestmark = [pytest.mark.gpu]

MB = 1 << 20


def state_dict(mb: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """About `mb` MB on the CPU, the same bits in every process: an embedding of ~15% of it,
    then 'layers' of odd-shaped bf16 / fp16 / fp32 / int64 tensors (3.8 MB each), a 0-d
    scalar and an empty tensor."""
    g = torch.Generator().manual_seed(seed)
    sd = {"embed.weight": torch.randn(max(1, int(0.15 * mb * MB / (2053 * 4))), 2053, generator=g)}
    for i in range(max(1, round(0.85 * mb / 3.8))):
        p = f"layers.{i}."
        sd[p + "attn.weight"] = torch.randn(512, 1027, generator=g).bfloat16()
        sd[p + "mlp.weight"] = torch.randn(1027, 333, generator=g).half()
        sd[p + "proj.weight"] = torch.randn(997, 501, generator=g)
        sd[p + "ids"] = torch.randint(-(2**62), 2**62, (12347,), generator=g)
    sd["scale"] = torch.randn((), generator=g)
    sd["empty"] = torch.randn(0, 16, generator=g).half()
    return sd


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    flat = lambda t: t.contiguous().reshape(-1).view(torch.uint8)  # noqa: E731
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(flat(a), flat(b))


def devices(backend: str, groups: int, receivers: int) -> tuple[list[str], list[str]]:
    """(sender devices, receiver devices): receivers on the last GPUs, senders round-robin on
    the others, so no group has two ranks on one GPU; everything on the CPU for gloo."""
    if backend == "gloo":
        return ["cpu"] * groups, ["cpu"] * receivers
    n = torch.cuda.device_count()
    if n < receivers + 1:
        raise ValueError(f"{receivers} receivers and the senders need {receivers + 1} GPUs at least; {n} here")
    return [f"cuda:{r % (n - receivers)}" for r in range(groups)], [f"cuda:{n - receivers + j}" for j in range(receivers)]


def _rank(role: str, index: int, device: str, backend: str, ports: list[int], receivers: int, mb: float,
          bucket_mb: float, syncs: int, timeout_s: float, out) -> None:
    """role "sender": learner rank `index`, root of group `index`; "receiver": group rank
    1 + index in every group."""
    try:
        from learner.weight_sync.buckets import plan_buckets, specs_of
        from learner.weight_sync.group import SyncStats, destroy_group, group_impl, init_group
        from learner.weight_sync.shards import receive_shards, send_shards, shard_layout, split

        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(1)
        full, world, timeout = state_dict(mb), len(ports), timedelta(seconds=timeout_s)
        plan = plan_buckets(specs_of(full.items()), int(bucket_mb * MB), version=1)
        res = {"impl": group_impl(), "device": device, "syncs": []}
        t0 = time.perf_counter()
        if role == "sender":
            mine = {n: split(t, world)[index].to(device) for n, t in full.items()}  # only its partitions
            del full
            groups = [init_group("127.0.0.1", ports[index], 0, 1 + receivers, backend, timeout)]
            res["join_s"] = time.perf_counter() - t0
            for _ in range(syncs):
                res["syncs"].append(send_shards(groups[0], plan, lambda b: {t.name: mine[t.name] for t in b.tensors},
                                                world, device=device))
        else:
            ref = {n: t.to(device) for n, t in full.items()}
            groups = [init_group("127.0.0.1", port, 1 + index, 1 + receivers, backend, timeout) for port in ports]
            res["join_s"] = time.perf_counter() - t0
            for _ in range(syncs):
                stats = SyncStats()
                got = [(n, bit_equal(t, ref[n])) for n, t in receive_shards(groups, plan, device, stats=stats)]
                res["syncs"].append((stats, [n for n, _ in got], [n for n, ok in got if not ok]))
            res["expected"] = list(ref)
        res["plan"] = (len(plan), plan.total_bytes, shard_layout(plan, world).total_bytes)
        for g in groups:
            destroy_group(g)
        out.put(((role, index), "ok", res))
    except BaseException:
        out.put(((role, index), "error", traceback.format_exc()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sync(backend: str = "nccl", groups: int = 8, receivers: int = 1, mb: float = 256, bucket_mb: float = 32,
             syncs: int = 2, timeout_s: float = 300) -> dict:
    """Run `syncs` shards syncs (the first one warms NCCL's communicators up) from `groups`
    sender processes to `receivers` receiver processes; {(role, index): its results}."""
    send_dev, recv_dev = devices(backend, groups, receivers)
    ports = [_free_port() for _ in range(groups)]
    common = (backend, ports, receivers, mb, bucket_mb, syncs, timeout_s)
    args = [("sender", r, d, *common) for r, d in enumerate(send_dev)] + \
           [("receiver", j, d, *common) for j, d in enumerate(recv_dev)]
    return run_spawned(_rank, args, timeout=timeout_s + 60)


def check(res: dict, groups: int) -> str:
    """Assert that every receiver got every tensor bit-identical in every sync, one broadcast
    per bucket per group, and each sender only its share; returns the last sync as a line."""
    senders = [v for (role, _), v in res.items() if role == "sender"]
    receivers = [v for (role, _), v in res.items() if role == "receiver"]
    n, total, part = receivers[0]["plan"]
    assert total / groups <= part <= total
    for r in receivers:
        for stats, names, bad in r["syncs"]:
            assert bad == [] and names == r["expected"]
            assert (stats.broadcasts, stats.bytes, stats.skipped) == (n, total, 0)
    for s in senders:
        for stats in s["syncs"]:
            assert (stats.broadcasts, stats.bytes) == (n, part)  # its partitions only
    impls = {v["impl"] for v in res.values()}
    assert len(impls) == 1
    last = max(r["syncs"][-1][0].seconds for r in receivers)
    return (f"{groups} groups ({impls.pop()} stateless groups), {len(senders)} senders on "
            f"{sorted({s['device'] for s in senders})} -> {len(receivers)} receivers on "
            f"{[r['device'] for r in receivers]}: {n} buckets, {total / 1e6:.0f} MB in {last:.3f} s "
            f"= {total / last / 1e9:.2f} GB/s per receiver (last of {len(receivers[0]['syncs'])} syncs); "
            f"join {max(v['join_s'] for v in res.values()):.1f} s")


def test_shards_sync_at_8_groups_over_nccl():
    n = torch.cuda.device_count()
    if n < 2:
        pytest.skip(f"NCCL needs the ranks of one group on distinct GPUs: 2 GPUs at least, {n} here "
                    "(test_nccl_groups_build_on_one_gpu covers one)")
    res = run_sync("nccl", groups=8, receivers=1)
    print("\n" + check(res, 8))


def _one_gpu(groups: int, out) -> None:
    try:
        from learner.weight_sync.group import _settle, destroy_group, group_impl, init_group

        torch.cuda.set_device(0)
        pgs = [init_group("127.0.0.1", _free_port(), 0, 1, "nccl", timedelta(seconds=60)) for _ in range(groups)]
        bufs = [torch.full((MB,), float(i), device="cuda:0") for i in range(groups)]
        works = [pg.broadcast(b, 0) for pg, b in zip(pgs, bufs)]
        for w in works:
            w.wait()
        _settle("cuda:0")
        ok = all(bool((b == i).all()) for i, b in enumerate(bufs))
        for pg in pgs:
            destroy_group(pg)
        out.put(("gpu0", "ok", (group_impl(), ok, torch.__version__, torch.cuda.nccl.version())))
    except BaseException:
        out.put(("gpu0", "error", traceback.format_exc()))


def test_nccl_groups_build_on_one_gpu():
    impl, ok, version, nccl = run_spawned(_one_gpu, [(8,)], timeout=180)["gpu0"]
    assert ok
    print(f"\n8 one-rank NCCL groups ({impl}) built and broadcast on cuda:0: torch {version}, NCCL {nccl}")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="nccl", choices=["nccl", "gloo"])
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--receivers", type=int, default=1)
    ap.add_argument("--mb", type=float, default=256)
    ap.add_argument("--bucket-mb", type=float, default=32)
    ap.add_argument("--syncs", type=int, default=2)
    a = ap.parse_args()
    print(check(run_sync(a.backend, a.groups, a.receivers, a.mb, a.bucket_mb, a.syncs), a.groups))
