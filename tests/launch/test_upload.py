"""What `ray job submit --working-dir .` uploads, built with Ray's own packaging code (no cluster):
a copy of the checkout with run folders, checkpoints and weights in it stays small, because
.gitignore and .rayignore leave them out."""
from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

# Each a 60 MiB file, where runs put them: a run folder of each kind, a checkpoint, bare weights.
LARGE = ["runs/a/ckpt/step_000010/learner/policy/state/zero_pp_rank_0_mp_rank_00_optim_states.pt",
         "outputs/2026-01-01/12-00-00/metrics.big",
         "multirun/2026-01-01/12-00-00/0/policy/model.safetensors",
         "results/runs/ablation_x/oreal-seed0/rollouts.big",
         "my-run/ckpt/step_000002/driver.big",
         "model.safetensors",
         "wandb/offline-run-x/run.wandb",
         ".cache/hf/hub/blob.big"]
LARGE_MIB = 60
# Under Ray's warning threshold and far under its 512 MiB limit.
LIMIT_MIB = 50


def _tree_files() -> list[str]:
    """The files git sees (tracked and untracked, not ignored); where the tree is not a git
    checkout of its own (`make test-clone`'s copy, a tarball), every file but the local
    environment's (.venv, caches)."""
    top = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode == 0 and Path(top.stdout.strip()).resolve() == ROOT.resolve():
        return subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                              capture_output=True, text=True, check=True).stdout.split("\0")
    skip = {".git", ".venv", ".cache", "__pycache__", ".pytest_cache"}
    return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
            if p.is_file() and not skip.intersection(p.relative_to(ROOT).parts)]


def checkout_copy(dest: Path) -> Path:
    """The tree's files (`_tree_files`), copied as they are."""
    for rel in filter(None, _tree_files()):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def ray_job_package(working_dir: Path, zip_path: Path, include_gitignore: bool = True) -> Path:
    """The zip `ray job submit --working-dir <working_dir>` uploads: Ray's job client passes the
    working dir, its default excludes (.git, .venv, ...) and the .gitignore switch
    (RAY_RUNTIME_ENV_IGNORE_GITIGNORE) to `create_package`, which also reads every .rayignore."""
    from ray._private.runtime_env.packaging import create_package
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    calls = []
    upload_working_dir_if_needed({"working_dir": str(working_dir)}, include_gitignore=include_gitignore,
                                 upload_fn=lambda path, excludes, is_file=False: calls.append((path, excludes)))
    ((path, excludes),) = calls
    create_package(path, zip_path, include_gitignore=include_gitignore, include_parent_dir=False, excludes=excludes)
    return zip_path


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = checkout_copy(tmp_path_factory.mktemp("checkout"))
    for rel in LARGE:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        with (root / rel).open("wb") as f:  # sparse: no disk used; Ray stores files uncompressed
            f.truncate(LARGE_MIB * 2**20)
    (root / "launch" / "probe_not_ignored.txt").write_text("a file of the code: uploaded")
    return root


@pytest.mark.parametrize("include_gitignore", [True, False], ids=["gitignore+rayignore", "rayignore-alone"])
def test_run_output_checkpoints_and_weights_stay_out_of_the_upload(tree, tmp_path, include_gitignore):
    pkg = ray_job_package(tree, tmp_path / "pkg.zip", include_gitignore)
    size_mib = pkg.stat().st_size / 2**20
    names = zipfile.ZipFile(pkg).namelist()
    print(f"\nray job package ({'with' if include_gitignore else 'without'} .gitignore): {size_mib:.2f} MiB, "
          f"{len(names)} files")
    assert "launch/probe_not_ignored.txt" in names and "launch/train.py" in names
    assert "results/runs/ablation_rm/bc-seed0/metrics.jsonl" not in names  # run output, even tracked
    leaked = [n for n in names if n in LARGE or n.startswith((".git/", ".venv/", ".cache/"))]
    assert not leaked, leaked
    assert size_mib < LIMIT_MIB, f"{size_mib:.1f} MiB"


def test_gitignore_keeps_run_folders_and_weights_out_of_git(tree):
    # the copy's own repository: the tree under test may be a copy with none (make test-clone)
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    probe = [*LARGE, "runs/b/summary.json", "outputs/x/y/policy/pytorch_model.bin", "deep/er/ckpt/step_1/x"]
    ignored = subprocess.run(["git", "-C", str(tree), "check-ignore", "--no-index", "--stdin"], input="\n".join(probe),
                             capture_output=True, text=True).stdout.split()
    assert sorted(ignored) == sorted(probe)
    # ... while the ablations' kept records are still tracked
    kept = "results/runs/ablation_rm/bc-seed0/metrics.jsonl"
    assert subprocess.run(["git", "-C", str(tree), "check-ignore", "--no-index", "-q", kept]).returncode == 1
