"""DeepSpeed's just-in-time C++ ops, built once per machine, not at every learner start."""
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
