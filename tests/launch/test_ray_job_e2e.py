"""End to end on loopback: the tiny default submitted as a Ray job, as docs/cluster.md ("Ray jobs")
section does it.

A cluster of its own is started with `ray start --head` (its own temp dir, short for Ray's
socket paths, its own ports, token authentication with a token of its own) so it never
touches the test session's cluster; it is stopped in a `finally` by ending the processes of
that temp dir only (never `ray stop`, which stops every Ray process on the machine). The job
is submitted with `ray job submit --working-dir .` and a runtime env that sets W&B and hub
variables, secrets included; the test waits for SUCCEEDED, checks the run folder at the given
`output_dir` (summary, metrics, policy) and that no file the run wrote holds a secret.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from conftest import ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Values that must not appear in any file the run writes.
SECRETS = {"WANDB_API_KEY": "oreal-e2e-wandb-key-" + secrets.token_hex(8),
           "HF_TOKEN": "hf_oreal_e2e_" + secrets.token_hex(8)}
# The tiny default, small and short (as test_resume_e2e's RUN): B=4 x K=4, 2 steps, the policy saved.
FAST = ["prompts_per_step=4", "rollout.n_samples=4", "rollout.max_new_tokens=48", "eval_size=8",
        "model.warmup.steps=400", "algo.actor_freeze_steps=0", "steps=2", "save_policy=true"]


def _env(temp_dir: str) -> dict[str, str]:
    """`ray start`'s and the client's environment: the venv's python first on PATH (the job's
    `python`), the test session's caches (the tiny model and its warm-up are cached there), a
    token of this cluster's own, and nothing that points at another cluster."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "WANDB_SERVICE"))}
    env.update(PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}", RAY_TMPDIR=temp_dir,
               RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    return env


def _run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _stop_cluster(temp_dir: str) -> None:
    """End the processes of the cluster in `temp_dir` (their command lines name it) and all
    their children (workers, actors, the job's driver, vLLM's engine processes): this cluster
    only, never the test session's own."""
    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    roots = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid not in me and any(temp_dir in arg for arg in p.info["cmdline"] or []):
                roots.append(p)
        except psutil.Error:
            pass
    procs = {p.pid: p for p in roots}
    for p in roots:
        try:
            procs.update({c.pid: c for c in p.children(recursive=True) if c.pid not in me})
        except psutil.Error:
            pass
    for p in procs.values():
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=20)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def _files_with(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits += [f"{path} holds {n[:12]}..." for n in needles if n.encode() in data]
    return hits


def test_ray_job_submit_runs_the_tiny_default(tmp_path):
    # Ray's longest socket path is its temp dir + ~72 bytes (launch.ray_connect.ray_temp_dir): keep it short.
    temp_dir = tempfile.mkdtemp(prefix="oreal-rj-", dir="/tmp")
    env = _env(temp_dir)
    dashboard = free_port()
    ports = ["--port", str(free_port()), "--dashboard-port", str(dashboard),
             "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
             "--dashboard-agent-grpc-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
             "--metrics-export-port", str(free_port())]
    out, wandb_dir = tmp_path / "run", tmp_path / "wandb"
    runtime_env = {"env_vars": {"WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir), "HF_HUB_OFFLINE": "1",
                                **SECRETS}}
    job_id = f"oreal-e2e-{secrets.token_hex(4)}"
    times = {}
    try:
        t0 = time.perf_counter()
        start = _run(["ray", "start", "--head", "--num-cpus", "4", "--include-dashboard=true", "--temp-dir", temp_dir,
                      "--disable-usage-stats", *ports], env, timeout=120)
        assert start.returncode == 0, start.stdout[-3000:] + start.stderr[-3000:]
        times["ray_start_s"] = time.perf_counter() - t0
        # The README's line, with this cluster's address and the fast overrides.
        t0 = time.perf_counter()
        submit = _run(["ray", "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir", ".",
                       "--submission-id", job_id, "--runtime-env-json", json.dumps(runtime_env), "--",
                       "python", "-m", "launch.train", f"output_dir={out}", *FAST], env, timeout=600)
        times["job_s"] = time.perf_counter() - t0
        status = _run(["ray", "job", "status", "--address", f"http://127.0.0.1:{dashboard}", job_id], env, timeout=60)
        assert f"Job '{job_id}' succeeded" in status.stdout + status.stderr, (  # the CLI's words for SUCCEEDED
            f"{status.stdout[-1000:]}\n--- job output:\n{submit.stdout[-6000:]}\n{submit.stderr[-3000:]}")
        assert submit.returncode == 0
        # the upload: the repository as git sees it (.venv, .cache ignored), far under Ray's limit
        pkgs = [p for p in Path(temp_dir).glob("session_latest/runtime_resources/working_dir_files/_ray_pkg_*")
                if p.is_dir()]
        assert len(pkgs) == 1 and not (pkgs[0] / ".venv").exists() and not (pkgs[0] / ".cache").exists()
        upload_mb = sum(f.stat().st_size for f in pkgs[0].rglob("*") if f.is_file()) / 2**20
        assert upload_mb < 50, upload_mb

        summary = json.loads((out / "summary.json").read_text())
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert max(r["step"] for r in rows) == 2 and summary["heldout_pass1_after"] is not None
        assert (out / "policy" / "config.json").is_file() and list((out / "policy").glob("*.safetensors"))
        assert list(out.glob("ckpt/step_000002/driver.json"))
        # secrets: none in the run folder (config dumps, checkpoints, W&B record), the W&B
        # offline run, or Hydra's own folder in the job's working directory
        hydra_dirs = [p / "outputs" for p in pkgs if (p / "outputs").is_dir()]
        assert hydra_dirs, "Hydra's outputs/ not found in the job's working directory"
        leaks = [hit for root in (out, wandb_dir, *hydra_dirs) for hit in _files_with(root, list(SECRETS.values()))]
        assert not leaks, leaks
        # Ray itself keeps the job's runtime env (dashboard job info, its logs): reported, not ours to change
        ray_files = sorted({h.split(" holds ")[0] for h in _files_with(Path(temp_dir), list(SECRETS.values()))})
        print(f"\nray job e2e: {times} upload {upload_mb:.2f} MiB; Ray's own files holding the runtime env's "
              f"secrets: {[Path(f).name for f in ray_files]}")
    finally:
        _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
