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


def test_learner_start_sets_up_no_compiler_for_deepspeeds_muon_kernels():
    """ZeRO-3 imports DeepSpeed's Muon module for any optimizer; imported through
    `eager_muon_kernels` its kernels stay plain functions, torch._inductor is not imported, and
    torch.compile is untouched afterwards (fresh interpreter: the import happens once)."""
    import subprocess

    probe = """
import os, sys
from learner.jit_ops import eager_muon_kernels
eager_muon_kernels()
from deepspeed.runtime.zero.muon import original_muon as m
import torch
print('inductor', 'torch._inductor.compile_fx' in sys.modules)
print('env', os.environ.get('TORCHDYNAMO_DISABLE'))
print('eager', all(not hasattr(f, '_torchdynamo_orig_callable') for f in
      (m.zeropower_via_newtonschulz5, m.zeropower_via_gram_newtonschulz, m.muon_update)))
x = torch.randn(8, 8)
print('runs', bool(torch.isfinite(m.zeropower_via_newtonschulz5(x, 2)).all()))
print('compile', hasattr(torch.compile(lambda t: t + 1), '_torchdynamo_orig_callable'))
"""
    env = {k: v for k, v in os.environ.items() if k != "TORCHDYNAMO_DISABLE"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.returncode == 0, out.stderr[-2000:]
    keys = ("inductor", "env", "eager", "runs", "compile")  # DeepSpeed logs to stdout too
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.split(" ")[0] in keys)
    assert lines == {"inductor": "False", "env": "None", "eager": "True", "runs": "True", "compile": "True"}
