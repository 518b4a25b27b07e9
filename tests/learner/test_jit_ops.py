"""The learner's start compiles no DeepSpeed op it never calls, and builds the ones it does
with the interpreter's own ninja (a second ninja rebuilt them at alternate starts)."""
import os
import sys


def test_learner_start_skips_the_inference_shm_op_and_uses_the_venv_ninja(monkeypatch):
    import deepspeed.ops
    from deepspeed.comm.torch import build_shm_op

    from learner.jit_ops import steady_jit_builds

    bin_dir = os.path.dirname(sys.executable)
    monkeypatch.setenv("PATH", "/usr/bin" + os.pathsep + os.environ.get("PATH", ""))
    steady_jit_builds()
    assert deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] is False
    assert build_shm_op() is None  # DeepSpeed's TorchBackend then never compiles or loads it
    if os.path.exists(os.path.join(bin_dir, "ninja")):
        assert os.environ["PATH"].split(os.pathsep)[0] == bin_dir
        steady_jit_builds()  # idempotent: the entry is not added twice
        assert os.environ["PATH"].split(os.pathsep)[1] != bin_dir
