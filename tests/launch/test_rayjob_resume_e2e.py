"""End to end: the KubeRay RayJob's own entrypoint recovers a killed run. Its command line, with
the cluster's paths swapped for a temporary folder and the tiny default's settings, runs until a
checkpoint exists, is SIGKILLed mid-run with every process it started (a lost node), and the same
command line, run again as KubeRay's retry (backoffLimit) runs it, resumes and completes.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from test_resume_e2e import _kill_tree, _rows

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RAYJOB = ROOT / "launch" / "cluster" / "rayjob.yaml"
# The entrypoint's overrides that need the GPU cluster, left out here (the tiny default, a local
# Ray); every other override is kept as written, output_dir moved to the temporary folder.
CLUSTER_ONLY = ("+experiment", "model.path", "task.benchmarks_dir", "ray.address")
# The tiny default, small: 3 steps, a checkpoint after each.
TINY = ["prompts_per_step=4", "rollout.n_samples=4", "rollout.max_new_tokens=48", "eval_size=8", "eval_every=0",
        "model.warmup.steps=400", "algo.actor_freeze_steps=0", "algo.rm_eval_every=0", "steps=3", "ckpt.every=1"]


def entrypoint_here(out: Path, ray_dir: str) -> list[str]:
    """The RayJob's entrypoint as an argv for this machine."""
    argv = shlex.split(yaml.safe_load(RAYJOB.read_text())["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "launch.train"], argv
    kept = []
    for override in argv[3:]:
        key, value = override.split("=", 1)
        if key == "output_dir":
            kept.append(f"output_dir={out}")
        elif key not in CLUSTER_ONLY:
            kept.append(override)
    assert "ckpt.resume=auto" in kept, kept
    return [sys.executable, "-m", "launch.train", *kept, *TINY, f"ray.temp_dir={ray_dir}",
            f"hydra.run.dir={out.parent / 'hydra'}"]


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_SERVICE", "RAY_ADDRESS"))}
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT,
                            start_new_session=True)


@pytest.fixture
def ray_dir():
    path = tempfile.mkdtemp(prefix="oreal-rj-", dir="/tmp")  # short: Ray's socket paths
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_rayjob_entrypoint_resumes_a_run_killed_mid_step(tmp_path, ray_dir):
    out, log = tmp_path / "run", tmp_path / "run.log"
    argv = entrypoint_here(out, ray_dir)
    print(f"\n{shlex.join(argv)}")

    first = _start(argv, log)  # a first attempt: nothing to resume, it starts at step 0
    deadline = time.monotonic() + 600
    while not (out / "ckpt" / "step_000001" / "COMPLETE").is_file():
        assert first.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
        time.sleep(0.05)
    _kill_tree(first)
    assert not (out / "summary.json").exists(), "the first attempt finished before it was killed"
    killed_at = max((r["step"] for r in _rows(out) if "rollout/samples" in r), default=0)
    assert killed_at < 3

    second = _start(argv, log)  # the retry: the same command line
    assert second.wait(timeout=600) == 0, log.read_text()[-4000:]
    rows = _rows(out)
    marks = [r for r in rows if "resume/from_step" in r]
    assert len(marks) == 1 and marks[0]["resume/from_step"] >= 1, marks
    assert [r["step"] for r in rows if "rollout/samples" in r][-1] == 3
    assert json.loads((out / "summary.json").read_text())
    assert "resumed from" in log.read_text()
