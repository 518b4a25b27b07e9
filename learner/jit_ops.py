"""DeepSpeed's start-up work that ZeRO training never uses: just-in-time C++ ops are built once
per machine, not at every learner start; no compiler is set up for an optimizer it never runs."""
from __future__ import annotations

import os


def steady_jit_builds() -> None:
    """Keep DeepSpeed's just-in-time C++ ops from being compiled at every start.

    On the CPU, `init_distributed` compiles a shared-memory all-reduce op (deepspeed_shm_comm)
    that only inference tensor parallelism (AutoTP) calls, never ZeRO training: 70-100 s on two
    cores, the learner's whole start-up several times over. It is marked incompatible, so
    DeepSpeed skips it (`inference_all_reduce` would fall back to torch.distributed).
    Ops a run does build (cpu_adam under learner.offload_optimizer) are built by this
    interpreter's own `ninja` (requirements/*.lock): a `ninja` of another version on PATH keeps
    another build log, and the two rebuilt the op in turn whenever runs were launched with and
    without the virtualenv active (`make demo` against an activated shell)."""
    import sys

    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if os.path.exists(os.path.join(bin_dir, "ninja")) and not path.startswith(bin_dir + os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + path
    if get_accelerator().device_name() == "cpu":
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def eager_muon_kernels() -> None:
    """Import DeepSpeed's Muon optimizer with TorchDynamo off, before ZeRO-3 does.

    ZeRO-3's optimizer wrapper imports Muon whatever the optimizer is (to test whether it is
    Muon). That module decorates three kernels with `torch.compile`, whose set-up imports
    torch._inductor: 2 CPU-seconds per rank at every learner start, on two cores. With Dynamo
    off for the import, the decorators return the kernels unchanged; only Muon calls them, and
    `learner.deepspeed_config` asks for AdamW. Nothing else's `torch.compile` is affected."""
    import importlib

    from actors.engine import scoped_environ

    with scoped_environ({"TORCHDYNAMO_DISABLE": "1"}):  # read by torch._dynamo's optimize at each call
        importlib.import_module("deepspeed.runtime.zero.muon.muon_optimizer")
