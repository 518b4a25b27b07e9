"""`make install` on a fresh machine: the commands the Makefile would run (`make -n`) fetch torch's
`+cpu` build from PyPI's CPU wheel index of PyTorch, with short network timeouts, and name
nothing that only one machine has (a local wheel folder or index)."""
from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from conftest import ROOT

TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def _make_n(tmp_path, *extra: str) -> list[str]:
    venv = tmp_path / "venv"          # no venv there: every step of the recipe is printed
    r = subprocess.run(["make", "-n", "install", f"VENV={venv}", f"STAMP={tmp_path / 'stamp'}", *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _lock_torch() -> str:
    (pin,) = [line.strip() for line in (ROOT / "requirements" / "cpu.lock").read_text().splitlines()
              if line.startswith("torch==")]
    return pin


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_install_fetches_torch_from_pytorchs_cpu_index(tmp_path):
    lines = _make_n(tmp_path)
    pins = [i for i, line in enumerate(lines) if " install " in line and _lock_torch() in shlex.split(line)]
    assert len(pins) == 1, "\n".join(lines)
    argv = shlex.split(lines[pins[0]])
    assert argv[0].endswith("/bin/pip") and str(tmp_path) in argv[0]
    assert _option(argv, "--extra-index-url") == TORCH_INDEX or _option(argv, "--index-url") == TORCH_INDEX
    assert "--no-deps" in argv
    # Where that index cannot be reached, pip gives up on it in seconds, not minutes.
    assert int(_option(argv, "--retries")) <= 2
    assert float(_option(argv, "--timeout")) <= 30
    # Then the whole lock (torch already satisfied), then the project.
    lock = [i for i, line in enumerate(lines) if "-r requirements/cpu.lock" in line]
    assert len(lock) == 1 and lock[0] > pins[0], "\n".join(lines)


def test_install_names_nothing_only_this_machine_has(tmp_path):
    printed = "\n".join(_make_n(tmp_path))
    makefile = (ROOT / "Makefile").read_text()
    for text in (printed, makefile):
        assert "/opt/" not in text
        assert "file://" not in text
        assert "find-links" not in text


def test_torch_index_can_be_pointed_at_a_mirror(tmp_path):
    mirror = "https://mirror.example.org/pytorch/whl/cpu"
    printed = "\n".join(_make_n(tmp_path, f"TORCH_INDEX={mirror}"))
    assert mirror in printed and TORCH_INDEX not in printed


def test_ci_still_runs_make_test():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)


@pytest.mark.parametrize("target", ["test", "demo"])
def test_targets_install_first(tmp_path, target):
    r = subprocess.run(["make", "-n", target, f"VENV={tmp_path / 'venv'}", f"STAMP={tmp_path / 'stamp'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert TORCH_INDEX in r.stdout
