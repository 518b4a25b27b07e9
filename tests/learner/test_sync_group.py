"""The weight-sync group (`learner.weight_sync.group.init_group`): vLLM's stateless group where
vLLM is installed, its torch-only twin elsewhere, both stateless (no default world) and able
to share one group; and the GPU machine's 8-group script (`tests/gpu/test_gpu_sync_groups.py`)
run here over gloo, so it works when a GPU machine finally runs it. No Ray, no vLLM engine.
"""
from __future__ import annotations

import importlib.util
import socket
import sys
import traceback
from datetime import timedelta

import pytest
import torch

from conftest import run_spawned

from learner.weight_sync.group import group_impl, init_group

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_bad_backend_or_impl_fails_before_any_socket():
    with pytest.raises(ValueError, match="backend must be 'gloo' or 'nccl'"):
        init_group("127.0.0.1", 1, 1, 2, "mpi")
    with pytest.raises(ValueError, match="impl must be 'vllm' or 'torch'"):
        init_group("127.0.0.1", 1, 1, 2, "gloo", impl="pynccl")


def test_vllm_is_used_where_installed_and_torch_elsewhere(monkeypatch):
    assert group_impl() == ("vllm" if HAS_VLLM else "torch")
    monkeypatch.setitem(sys.modules, "vllm.distributed.utils", None)  # as if vLLM were not installed
    assert group_impl() == "torch"


def _mixed_rank(me: int, impls: tuple[str, str], ports, out) -> None:
    """Process `me` of two, using `impls[me]` for both groups. Group 0 is rooted by process 0,
    which serves the store from a socket it bound (the learner's way); group 1 by process 1,
    which binds the port it announced itself. Ports cross over queues; 1 MB crosses each group."""
    torch.set_num_threads(1)
    try:
        timeout, impl = timedelta(seconds=60), impls[me]
        if me == 0:
            listen = socket.create_server(("127.0.0.1", 0))
            ports[0].put(listen.getsockname()[1])
            groups = [init_group("127.0.0.1", 0, 0, 2, "gloo", timeout, listen_socket=listen, impl=impl),
                      init_group("127.0.0.1", ports[1].get(timeout=60), 1, 2, "gloo", timeout, impl=impl)]
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                mine = s.getsockname()[1]
            ports[1].put(mine)
            groups = [init_group("127.0.0.1", ports[0].get(timeout=60), 1, 2, "gloo", timeout, impl=impl),
                      init_group("127.0.0.1", mine, 0, 2, "gloo", timeout, impl=impl)]
        got = []
        for g in (0, 1):
            buf = torch.arange(1 << 20, dtype=torch.uint8) if g == me else torch.zeros(1 << 20, dtype=torch.uint8)
            groups[g].broadcast(buf, 0).wait()
            got.append(torch.equal(buf, torch.arange(1 << 20, dtype=torch.uint8)))
        out.put((me, "ok", (got, torch.distributed.is_initialized(), "vllm" in sys.modules)))
    except BaseException:
        out.put((me, "error", traceback.format_exc()))


@pytest.mark.parametrize("impls", [pytest.param(("torch", "vllm"), marks=pytest.mark.slow),  # vLLM's import: ~5 s
                                   pytest.param(("vllm", "torch"), marks=pytest.mark.slow), ("torch", "torch")])
def test_both_impls_form_one_stateless_group(impls):
    """A torch-twin process and a vLLM one meet in one group either way round, as root or
    member, the root's store on a pre-bound socket or on a port it binds (same store prefix,
    same rendezvous counting, same backend); no default world is made."""
    if "vllm" in impls and not HAS_VLLM:
        pytest.skip("vLLM is not installed")
    import torch.multiprocessing as tmp

    ctx = tmp.get_context("spawn")
    ports = [ctx.Queue(), ctx.Queue()]
    res = run_spawned(_mixed_rank, [(me, impls, ports) for me in (0, 1)], timeout=90)
    for me in (0, 1):
        got, default_world, imported_vllm = res[me]
        assert got == [True, True]  # each group moved its root's bytes
        assert default_world is False
        assert imported_vllm == (impls[me] == "vllm")


@pytest.mark.slow
def test_the_gpu_machines_8_group_script_runs_over_gloo():
    """`run_sync` and `check` of the GPU script, 2 groups x 1 receiver, 6 MB: the sender
    processes, the receiver joining every group, the checks it makes on GPUs."""
    from tests.gpu.test_gpu_sync_groups import check, run_sync

    res = run_sync("gloo", groups=2, receivers=1, mb=6, bucket_mb=1, syncs=2, timeout_s=90)
    line = check(res, 2)
    assert res[("receiver", 0)]["syncs"][0][0].broadcasts > 2  # several buckets, each from both groups
    assert f"({group_impl()} stateless groups)" in line
    print("\n" + line)
