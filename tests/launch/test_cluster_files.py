"""The cluster way in (launch/cluster/): the KubeRay RayJob and the Slurm script hold together with
the code they launch. Fast: no Ray, no Kubernetes, no Slurm. (The RayJob against KubeRay's schema:
test_rayjob_schema.py; the container image: test_image.py.)"""
from __future__ import annotations

import configparser
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import ROOT, compose

CLUSTER = ROOT / "launch" / "cluster"
RAYJOB = CLUSTER / "rayjob.yaml"
PVC = CLUSTER / "shared-pvc.yaml"
SBATCH = CLUSTER / "oreal.sbatch"
SECRET_NAMES = ("WANDB_API_KEY", "HF_TOKEN")


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


# ------------------------------------------------------------------------------ KubeRay

@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load(RAYJOB.read_text())


def _pods(rayjob: dict) -> dict[str, dict]:
    """{"head": pod spec, "<worker group>": pod spec} of the RayJob's cluster."""
    spec = rayjob["spec"]["rayClusterSpec"]
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]}
    for group in spec["workerGroupSpecs"]:
        pods[group["groupName"]] = group["template"]["spec"]
    return pods


def _entrypoint_overrides(rayjob: dict) -> list[str]:
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "launch.train"], argv
    return argv[3:]


def test_rayjob_is_a_kuberay_rayjob_that_runs_launch_train(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["kind"] == "RayJob"
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert "+experiment=paper_7b" in _entrypoint_overrides(rayjob)
    assert spec["submitterPodTemplate"]["spec"]["containers"], "submitter pod without a container"
    assert spec["rayClusterSpec"]["rayVersion"] == re.search(
        r"ray\[default\]==(\S+)", _setup_cfg()["options"]["install_requires"]).group(1)


def test_rayjob_has_a_cpu_head_and_a_gpu_worker_group(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert str(head["rayStartParams"]["num-gpus"]) == "0"
    for c in head["template"]["spec"]["containers"]:
        assert "nvidia.com/gpu" not in (c.get("resources", {}).get("limits") or {})
    gpu_groups = [g for g in cluster["workerGroupSpecs"]
                  if any(int((c.get("resources", {}).get("limits") or {}).get("nvidia.com/gpu", 0)) > 0
                         for c in g["template"]["spec"]["containers"])]
    assert gpu_groups, "no worker group asks for nvidia.com/gpu"
    # paper_7b asks for 8 learner ranks + 4 engines of one GPU (colocate off): they must fit.
    cfg = compose(["+experiment=paper_7b"])
    wanted = (cfg.learner.world_size * cfg.learner.num_gpus_per_rank
              + cfg.rollout.num_engines * cfg.rollout.num_gpus_per_actor)
    have = sum(g["replicas"] * int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
               for g in gpu_groups)
    assert have >= wanted, f"workers have {have} GPUs, paper_7b asks for {wanted}"
    # One image everywhere, marked as a placeholder to replace.
    images = {c["image"] for pod in [*_pods(rayjob).values(), rayjob["spec"]["submitterPodTemplate"]["spec"]]
              for c in pod["containers"]}
    assert len(images) == 1, images
    assert "PLACEHOLDER" in RAYJOB.read_text()


def _cpus(quantity) -> float:
    """A Kubernetes CPU quantity ("500m", "8", 8) in cores."""
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_the_clusters_hold_the_paper_preset_cpus_and_gpus(rayjob):
    """What the pre-flight check (launch.preflight.cluster_fits) says once connected, for the
    RayJob's pods and for the Slurm script's nodes: paper_7b fits, its learner ranks' 8 cores
    each (optimizer offload's threads) included."""
    from launch.config import to_train_config
    from launch.preflight import cluster_fits

    cfg = to_train_config(compose(["+experiment=paper_7b"]))
    assert cfg.learner.num_cpus_per_rank >= 8
    spec = rayjob["spec"]["rayClusterSpec"]
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    nodes = [{"CPU": _cpus(head["cpu"]), "GPU": float(spec["headGroupSpec"]["rayStartParams"]["num-gpus"])}]
    for group in spec["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        nodes += [{"CPU": _cpus(limits["cpu"]), "GPU": float(limits["nvidia.com/gpu"])}] * group["replicas"]
    text = SBATCH.read_text()
    sbatch = {k: int(re.search(rf"^#SBATCH --{k}=(\d+)", text, re.M).group(1))
              for k in ("nodes", "cpus-per-task", "gpus-per-node")}
    slurm = [{"CPU": float(sbatch["cpus-per-task"]), "GPU": float(sbatch["gpus-per-node"])}] * sbatch["nodes"]
    for name, cluster in (("rayjob", nodes), ("sbatch", slurm)):
        total = {r: sum(n[r] for n in cluster) for r in ("CPU", "GPU")}
        assert cluster_fits(cfg, total, cluster) == [], name


def test_rayjob_mounts_one_shared_readwritemany_volume_and_dev_shm_everywhere(rayjob):
    pvc = yaml.safe_load(PVC.read_text())
    assert pvc["kind"] == "PersistentVolumeClaim"
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    for name, pod in _pods(rayjob).items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        assert "/shared" in mounts, f"{name}: /shared not mounted"
        assert volumes[mounts["/shared"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"], name
        assert "/dev/shm" in mounts, f"{name}: no /dev/shm volume"
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory", name
    # Every path the entrypoint names is on the shared volume.
    for override in _entrypoint_overrides(rayjob):
        value = override.split("=", 1)[1]
        if value.startswith("/"):
            assert value.startswith("/shared/"), override


def test_rayjob_secrets_come_only_from_a_kubernetes_secret(rayjob):
    text = RAYJOB.read_text()
    for name, pod in _pods(rayjob).items():
        env = {e["name"]: e for c in pod["containers"] for e in c.get("env", [])}
        for secret in SECRET_NAMES:
            assert secret in env, f"{name}: {secret} not given"
        for var, e in env.items():
            if re.search(r"KEY|TOKEN|SECRET|PASSWORD", var):
                assert "value" not in e, f"{name}: {var} has a literal value"
                assert e["valueFrom"]["secretKeyRef"]["name"], f"{name}: {var} not from a Secret"
    assert "runtimeEnvYAML" not in rayjob["spec"] or not any(
        s in rayjob["spec"]["runtimeEnvYAML"] for s in SECRET_NAMES)
    # Nothing that looks like a key or token value anywhere in the file (comments included).
    assert not re.search(r"\bhf_[A-Za-z0-9]{20,}|\b[0-9a-f]{40}\b", text)
    assert not re.search(r"(WANDB_API_KEY|HF_TOKEN)\s*[=:]\s*['\"]?[A-Za-z0-9_]{8,}", text)


def test_rayjob_entrypoint_overrides_are_keys_of_the_config(rayjob):
    """Hydra refuses an unknown key while composing (the schema is strict), and each value
    lands where the override says."""
    overrides = _entrypoint_overrides(rayjob)
    cfg = compose(overrides)
    for override in overrides:
        key, value = override.split("=", 1)
        if key.startswith("+"):          # a config group (+experiment=paper_7b)
            continue
        assert OmegaConf.select(cfg, key, default="<missing>") == value, override
    assert cfg.output_dir.startswith("/shared/runs/")
    assert cfg.task.benchmarks_dir == "/shared/data/benchmarks"


# ------------------------------------------------------------------------------ Slurm

SLURM_ENV = {
    "SLURM_JOB_NODELIST": "gpu[01-02]",
    "SLURM_GPUS_PER_NODE": "h100:8",
    "SLURM_CPUS_PER_TASK": "64",
    "SLURM_JOB_ID": "4242",
    "SLURM_SUBMIT_DIR": str(ROOT),
    "USER": "alice",
}
# The compile caches the script puts on each node's own disk.
NODE_CACHES = ("VLLM_CACHE_ROOT", "TRITON_CACHE_DIR", "TORCH_EXTENSIONS_DIR", "TORCHINDUCTOR_CACHE_DIR")
OVERRIDES = ["+experiment=paper_7b", "model.path=/shared/models/m", "output_dir=/shared/runs/x"]


def _bash(script_env: dict[str, str], *args: str, path: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {"HOME": os.environ.get("HOME", "/tmp"), "PATH": path, **script_env}
    return subprocess.run(["/bin/bash", str(SBATCH), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_sbatch_script_is_valid_bash():
    r = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^#SBATCH --nodes=\d+", SBATCH.read_text(), re.M)
    assert re.search(r"^#SBATCH --gpus-per-node=\d+", SBATCH.read_text(), re.M)
    # A preempted or failed node's job is queued again (and its log appended to, not replaced).
    assert re.search(r"^#SBATCH --requeue$", SBATCH.read_text(), re.M)
    assert re.search(r"^#SBATCH --open-mode=append$", SBATCH.read_text(), re.M)


def _dry_run_lines(tmp_path, extra_env: dict[str, str] | None = None) -> list[str]:
    empty = tmp_path / "empty-path"
    empty.mkdir(exist_ok=True)
    r = _bash({**SLURM_ENV, "DRY_RUN": "1", **(extra_env or {})}, *OVERRIDES, path=str(empty))
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def _exported(lines: list[str]) -> dict[str, str]:
    """NAME -> value of the dry run's `+ export NAME=value ...` lines."""
    out = {}
    for line in lines:
        if line.startswith("+ export "):
            out.update(kv.split("=", 1) for kv in shlex.split(line)[2:])
    return out


def test_sbatch_dry_run_prints_the_commands_it_would_run(tmp_path):
    """With an empty PATH: no scontrol, srun, ray or python is needed, none is run."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    r = _bash({**SLURM_ENV, "DRY_RUN": "1", "WANDB_API_KEY": "not-to-be-printed-123"}, *OVERRIDES, path=str(empty))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines and all(line.startswith("+ ") for line in lines), r.stdout
    assert "not-to-be-printed-123" not in r.stdout + r.stderr

    def index(pattern: str) -> int:
        hits = [i for i, line in enumerate(lines) if re.search(pattern, line)]
        assert len(hits) == 1, f"{pattern!r}: {len(hits)} lines in\n{r.stdout}"
        return hits[0]

    head = index(r"^\+ srun .*-w gpu01 ray start --head .*--num-gpus=8 .*--block")
    worker = index(r"^\+ srun .*-w gpu02 ray start --address=gpu01:6379 .*--num-gpus=8 .*--block")
    wait = index(r"ray\.nodes\(\)")
    submit = index(r"^\+ ray job submit --address http://gpu01:8265 .*--working-dir \. -- python -m launch\.train ")
    # ckpt.resume=auto first: a requeued job resumes; the user's own ckpt.resume would come later and win.
    assert lines[submit].endswith("-- python -m launch.train ckpt.resume=auto " + " ".join(OVERRIDES))
    stop = index(r"ray stop")
    assert head < worker < wait < submit < stop
    # Every step that starts Ray gets the task's CPUs (srun stopped inheriting them in Slurm 22.05),
    # and so does any other srun step through SRUN_CPUS_PER_TASK.
    for start in (head, worker):
        assert re.search(r"^\+ srun [^|]*--cpus-per-task=64 [^|]*-w gpu0\d ray start .*--num-cpus=64", lines[start]), \
            lines[start]
    exported = _exported(lines)
    assert exported["SRUN_CPUS_PER_TASK"] == "64"
    # Compile caches on the node's own disk (no TMPDIR here: /tmp), not in the shared $HOME.
    for var in NODE_CACHES:
        assert exported[var].startswith("/tmp/alice-oreal-cache/"), (var, exported.get(var))
    # No interface asked for: Ray picks the workers' addresses, NCCL and gloo their interface.
    assert "--node-ip-address" not in lines[worker]
    assert "NCCL_SOCKET_IFNAME" not in exported and not any(" ip -o " in line for line in lines)


def test_sbatch_dry_run_honours_tmpdir_a_set_cache_and_no_cpus(tmp_path):
    lines = _dry_run_lines(tmp_path, {"TMPDIR": "/local/scratch", "VLLM_CACHE_ROOT": "/fast/vllm"})
    exported = _exported(lines)
    assert exported["VLLM_CACHE_ROOT"] == "/fast/vllm"  # a deliberate setting is kept
    assert exported["TRITON_CACHE_DIR"] == "/local/scratch/alice-oreal-cache/triton"
    env = {k: v for k, v in SLURM_ENV.items() if k != "SLURM_CPUS_PER_TASK"}
    r = _bash({**env, "DRY_RUN": "1"}, *OVERRIDES, path=str(tmp_path / "empty-path"))
    assert r.returncode == 0, r.stderr
    assert "--cpus-per-task" not in r.stdout and "SRUN_CPUS_PER_TASK" not in r.stdout and "--num-cpus" not in r.stdout


def test_sbatch_dry_run_with_an_interface_gives_every_node_its_address_on_it(tmp_path):
    lines = _dry_run_lines(tmp_path, {"OREAL_IFACE": "ib0", "SLURM_JOB_NODELIST": "gpu[01-03]"})
    lookups = [line for line in lines if re.search(r"^\+ srun .* -w gpu0\d ip -o -4 addr show dev ib0$", line)]
    assert [re.search(r"-w (gpu0\d)", x).group(1) for x in lookups] == ["gpu01", "gpu02", "gpu03"], lines
    starts = [line for line in lines if " ray start " in line]
    assert len(starts) == 3
    # (a dry run: each node's name stands in for its address)
    assert "--node-ip-address=gpu01 " in starts[0] and "--head" in starts[0]
    for start, node in zip(starts[1:], ("gpu02", "gpu03")):
        assert f"-w {node} ray start --address=gpu01:6379 --node-ip-address={node} " in start, start
    exported = _exported(lines)
    assert exported["NCCL_SOCKET_IFNAME"] == exported["GLOO_SOCKET_IFNAME"] == "ib0"
    assert max(i for i, x in enumerate(lines) if x in lookups) < lines.index(starts[0])


def _stubs(tmp_path) -> str:
    """Stand-ins for srun (it records the node of -w as STUB_NODE), ray (it logs each call, and
    what a `ray start` step's environment holds), hostname, ip and python; returns a PATH."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "srun").write_text(
        '#!/bin/bash\necho "srun $*" >> "$STUB_LOG"\n'
        'while [[ $# -gt 0 && $1 == -* ]]; do case $1 in -w) export STUB_NODE=$2; shift 2;; *) shift;; esac; done\n'
        'exec "$@"\n')
    (stubs / "ray").write_text(
        '#!/bin/bash\necho "ray $* token=${RAY_AUTH_TOKEN:+set}" >> "$STUB_LOG"\n'
        'if [[ $1 == start ]]; then echo "env node=$STUB_NODE cpus=${SRUN_CPUS_PER_TASK:-} '
        'vllm=${VLLM_CACHE_ROOT:-} triton=${TRITON_CACHE_DIR:-} nccl=${NCCL_SOCKET_IFNAME:-}" >> "$STUB_LOG"; fi\n'
        'case "$1 ${*: -1}" in "start --block") exec sleep 97.25;; esac\n'
        'case $1 in get-auth-token) echo stub-token;; job) exit "$STUB_JOB_RC";; esac\n')
    (stubs / "hostname").write_text('#!/bin/bash\necho "10.1.2.3 fe80::1"\n')
    # `ip -o -4 addr show dev ib0` on node gpu0N: 10.9.0.N
    (stubs / "ip").write_text('#!/bin/bash\necho "4: ${*: -1}    inet 10.9.0.${STUB_NODE: -1}/16 brd 10.9.255.255 scope '
                              'global ${*: -1}\\       valid_lft forever preferred_lft forever"\n')
    (stubs / "python").write_text('#!/bin/bash\necho "${STUB_NODES:-2}"\n')   # nodes alive
    for f in stubs.iterdir():
        f.chmod(0o755)
    return f"{stubs}:/usr/bin:/bin"


def _no_stub_left() -> None:
    """The stand-ins of `ray start --block` (each a `sleep 97.25`) were stopped."""
    left = subprocess.run(["pgrep", "-f", "^sleep 97.25$"], capture_output=True, text=True)
    assert left.stdout == "", "ray start stand-ins left running"


def test_sbatch_real_path_with_stub_commands(tmp_path):
    """The non-dry path with stand-ins for srun, ray, hostname and python: the Ray processes
    start in the background with the task's CPUs and node-local caches, the job's exit status
    is the script's, the cluster is stopped and the background steps are gone, also when the
    job fails."""
    log = tmp_path / "log"
    path = _stubs(tmp_path)
    for job_rc in (0, 3):
        log.write_text("")
        r = _bash({**SLURM_ENV, "STUB_LOG": str(log), "STUB_JOB_RC": str(job_rc)}, *OVERRIDES, path=path)
        assert r.returncode == job_rc, r.stderr
        calls = log.read_text().splitlines()
        starts = [c for c in calls if c.startswith("ray start")]
        assert len(starts) == 2 and all(c.endswith("token=set") for c in starts), calls
        assert any(c.startswith("ray start --head --node-ip-address=10.1.2.3") for c in starts), calls
        assert [c for c in calls if c.startswith("srun") and " ray start " in c and "--cpus-per-task=64" in c]
        envs = sorted(c for c in calls if c.startswith("env "))
        assert envs == [f"env node={n} cpus=64 vllm=/tmp/alice-oreal-cache/vllm "
                        f"triton=/tmp/alice-oreal-cache/triton nccl=" for n in ("gpu01", "gpu02")], envs
        submit = [c for c in calls if c.startswith("ray job submit")]
        assert submit == [f"ray job submit --address http://10.1.2.3:8265 --submission-id oreal-4242 "
                          f"--working-dir . -- python -m launch.train ckpt.resume=auto {' '.join(OVERRIDES)} "
                          "token=set"], calls
        assert calls[-1].startswith("ray stop"), calls
        _no_stub_left()


def test_sbatch_real_path_with_an_interface(tmp_path):
    """OREAL_IFACE=ib0: every node's Ray address is its address on ib0, read on that node, and
    NCCL / gloo use ib0."""
    log = tmp_path / "log"
    log.write_text("")
    env = {**SLURM_ENV, "SLURM_JOB_NODELIST": "gpu[01-03]", "OREAL_IFACE": "ib0", "STUB_NODES": "3",
           "STUB_LOG": str(log), "STUB_JOB_RC": "0"}
    r = _bash(env, *OVERRIDES, path=_stubs(tmp_path))
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    starts = sorted(c for c in calls if c.startswith("ray start"))
    assert starts[0].startswith("ray start --address=10.9.0.1:6379 --node-ip-address=10.9.0.2 "), starts
    assert starts[1].startswith("ray start --address=10.9.0.1:6379 --node-ip-address=10.9.0.3 "), starts
    assert starts[2].startswith("ray start --head --node-ip-address=10.9.0.1 "), starts
    assert all(c.endswith(" nccl=ib0") for c in calls if c.startswith("env ")), calls
    assert any(c.startswith("ray job submit --address http://10.9.0.1:8265 ") for c in calls), calls
    _no_stub_left()
