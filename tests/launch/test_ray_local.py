"""A local cluster started by `connect_ray` starts no idle workers nobody uses, and an actor
still gets a worker at once (fresh interpreter: one Ray per process)."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys, time
import psutil, ray
from launch.config import RayConfig
from launch.ray_connect import connect_ray

assert connect_ray(RayConfig(num_cpus=2, temp_dir=sys.argv[1]))
time.sleep(4)  # Ray's prestart happens as the driver joins

def titles():
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            out.append(" ".join(p.cmdline()))
        except psutil.Error:
            pass
    return out

print("idle", sum(t.startswith("ray::IDLE") for t in titles()))

@ray.remote(num_cpus=1)
class Echo:
    def ping(self):
        return "pong"

print("actor", ray.get(Echo.remote().ping.remote(), timeout=120))
ray.shutdown()
"""


def test_local_cluster_prestarts_no_idle_workers():
    with tempfile.TemporaryDirectory(prefix="oreal-rl-", dir="/tmp") as tmp:
        out = subprocess.run([sys.executable, "-c", PROBE, tmp], cwd=ROOT, env=os.environ.copy(),
                             capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.split(" ")[0] in ("idle", "actor"))
    assert lines == {"idle": "0", "actor": "pong"}
