"""Run folders and checkpoints as untrusted input: one run per folder, one-line checkpoint
errors, the SHA-256 manifest checked on resume, and shards loaded without pickle's code."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from launch.state.checkpoint import COMPLETE, CheckpointError, find_resume, open_checkpoint
from launch.state.manifest import MANIFEST, read_manifest, verify_manifest, write_manifest
from launch.state.run_folder import record_in, set_aside
from learner import ckpt_io
from test_checkpoint import FakeRoles, _cfg, _log_steps, _save


# ------------------------------------------------------------------- one run per run folder

def test_a_fresh_run_into_a_folder_holding_another_run_is_refused(tmp_path):
    _log_steps(tmp_path, [1, 2, 3])
    with pytest.raises(CheckpointError) as err:
        find_resume(_cfg(tmp_path, "ckpt.enabled=false"), tmp_path)
    text = str(err.value)
    assert "\n" not in text
    assert text == (f"output_dir={tmp_path} holds another run (metrics.jsonl (steps 1-3)): give this run another "
                    "output_dir, or continue that one with ckpt.resume=auto")


def test_what_counts_as_a_record(tmp_path):
    # Hydra's files are written before the run starts: a folder holding only them is fresh
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("a: 1\n")
    (tmp_path / "train.log").write_text("started\n")
    (tmp_path / "metrics.jsonl").write_text("")  # created, nothing logged
    (tmp_path / "rollouts").mkdir()
    assert record_in(tmp_path) == []
    assert find_resume(_cfg(tmp_path), tmp_path) is None
    (tmp_path / "rollouts" / "step_00001.jsonl").write_text("{}\n")
    (tmp_path / "rm_heldout_pairs.jsonl").write_text("{}\n")  # a fresh run would read these back
    assert record_in(tmp_path) == ["rollouts/", "rm_heldout_pairs.jsonl"]


def test_auto_with_no_checkpoint_sets_the_attempt_aside_and_starts_fresh(tmp_path, caplog):
    cfg = _cfg(tmp_path, "ckpt.resume=auto")
    for attempt in (1, 2):  # killed before its first checkpoint, twice
        _log_steps(tmp_path, [1, 2])
        (tmp_path / "rollouts").mkdir()
        (tmp_path / "rollouts" / "step_00001.jsonl").write_text(f"attempt {attempt}\n")
        assert find_resume(cfg, tmp_path) is None
        aside = tmp_path / f"previous_attempt_{attempt}"
        assert record_in(tmp_path) == [] and record_in(aside) == ["metrics.jsonl (steps 1-2)", "rollouts/"]
        assert (aside / "rollouts" / "step_00001.jsonl").read_text() == f"attempt {attempt}\n"  # nothing lost
        assert f"moved to {aside}" in caplog.text
    # the retry after a checkpoint resumes as before
    _save(cfg, tmp_path, 4)
    _log_steps(tmp_path, [1, 2, 3, 4])
    assert find_resume(cfg, tmp_path).step == 4
    assert set_aside(tmp_path / "empty") is None


@pytest.mark.slow
def test_the_cli_refuses_a_used_folder_in_one_line_before_ray_starts(tmp_path):
    run = tmp_path / "run"
    _log_steps(run.mkdir() or run, [1])
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "launch.train", f"output_dir={run}", f"hydra.run.dir={tmp_path / 'h'}",
                          "ray.address=ray://127.0.0.1:1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    last = [x for x in out.stderr.splitlines() if x.strip()][-1]
    assert last == (f"error: output_dir={run} holds another run (metrics.jsonl (steps 1-1)): give this run another "
                    "output_dir, or continue that one with ckpt.resume=auto"), out.stderr[-2000:]
    assert "Traceback" not in out.stderr and time.perf_counter() - t0 < 60


# ------------------------------------------------------------------ driver.json, one line

@pytest.mark.parametrize("edit,named", [
    (lambda m: m["state"].pop("step"), "state.step"),
    (lambda m: m.pop("learner_models"), "learner_models"),
    (lambda m: m["config"]["learner"].update(world_size="2"), "config.learner.world_size"),
    (lambda m: m["state"].update(drawn=True), "state.drawn"),
    (lambda m: m.update(state=[]), "state, state.step"),
])
def test_a_driver_json_missing_a_key_is_one_checkpoint_error(tmp_path, edit, named):
    path = _save(_cfg(tmp_path), tmp_path, 2)
    meta = json.loads((path / "driver.json").read_text())
    edit(meta)
    (path / "driver.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(path)
    assert str(err.value).startswith(f"{path}: driver.json lacks {named}")
    (path / "driver.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="checkpoint format 'list'"):
        open_checkpoint(path)


# ---------------------------------------------------------------------- the SHA-256 manifest

def test_every_checkpoint_carries_a_manifest_sha256sum_can_check(tmp_path):
    path = _save(_cfg(tmp_path), tmp_path, 2)
    listed = read_manifest(path)
    assert set(listed) == {p.relative_to(path).as_posix() for p in path.rglob("*")
                           if p.is_file() and p.name not in (COMPLETE, MANIFEST)}
    assert "driver.json" in listed and "learner/rng_rank0.pt" in listed
    assert verify_manifest(path, skip=(COMPLETE,)) == []
    if shutil.which("sha256sum"):
        out = subprocess.run(["sha256sum", "--quiet", "-c", MANIFEST], cwd=path, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_the_learner_ranks_hashes_are_used_not_recomputed(tmp_path):
    class HashingLearner(FakeRoles().learner.__class__):
        def save_checkpoint(self, folder, step):
            super().save_checkpoint(folder, step)
            return {"rng_rank0.pt": "0" * 64}  # what rank 0 reports for its file

    roles = FakeRoles()
    roles.learner = HashingLearner()
    path = _save(_cfg(tmp_path), tmp_path, 2, roles=roles)
    assert read_manifest(path)["learner/rng_rank0.pt"] == "0" * 64
    assert verify_manifest(path, skip=(COMPLETE,)) == ["learner/rng_rank0.pt changed (sha256 "
                                                       f"{ckpt_io.sha256_file(path / 'learner/rng_rank0.pt')[:12]}, "
                                                       "saved 000000000000)"]


@pytest.mark.parametrize("tamper,says", [
    (lambda p: (p / "learner" / "rng_rank1.pt").write_bytes(b"other"), "learner/rng_rank1.pt changed"),
    (lambda p: (p / "policy" / "extra.pt").write_bytes(b"x"), "policy/extra.pt is not in the manifest"),
    (lambda p: os.remove(p / "policy" / "config.json"), "the newest checkpoint is damaged: "),
])
def test_resume_refuses_a_checkpoint_changed_since_it_was_saved(tmp_path, tamper, says):
    cfg = _cfg(tmp_path, "ckpt.resume=auto")
    path = _save(cfg, tmp_path, 2)
    _log_steps(tmp_path, [1, 2])
    assert find_resume(cfg, tmp_path).step == 2
    tamper(path)
    with pytest.raises(CheckpointError) as err:
        find_resume(cfg, tmp_path)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_checkpoint_without_manifest_is_refused_unless_verify_is_off(tmp_path):
    cfg = _cfg(tmp_path, "ckpt.resume=auto")
    path = _save(cfg, tmp_path, 2)
    _log_steps(tmp_path, [1, 2])
    os.remove(path / MANIFEST)
    with pytest.raises(CheckpointError, match=r"no manifest.sha256: .*resume only checkpoints you trust, and skip "
                                              r"the check with ckpt.verify=false"):
        find_resume(cfg, tmp_path)
    assert find_resume(_cfg(tmp_path, "ckpt.resume=auto", "ckpt.verify=false"), tmp_path).step == 2
    (path / MANIFEST).write_text(f"{'a' * 64}  ../../etc/passwd\n")
    with pytest.raises(CheckpointError, match="names a path outside the checkpoint"):
        find_resume(cfg, tmp_path)


def test_write_manifest_covers_the_folder_and_skips_stale_known_entries(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"12345")
    got = write_manifest(tmp_path, known={"gone.pt": "f" * 64})
    assert got == {"a/x.bin": ckpt_io.sha256_file(tmp_path / "a" / "x.bin")}


# ------------------------------------------------------------- shards loaded without code

class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_shard_that_pickles_code_is_refused_naming_the_global(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    torch.save({"x": _RunsCode(str(marker))}, path)
    with pytest.raises(ValueError) as err:
        ckpt_io.load_weights_only(str(path))
    assert not marker.exists()
    assert "refused to load, it pickles" in str(err.value) and "system" in str(err.value)
    assert "resume only checkpoints you trust" in str(err.value)


def test_deepspeed_optimizer_state_loads_weights_only(tmp_path):
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    path = tmp_path / "optim.pt"
    torch.save({"loss_scaler": LossScaler(1.0), "zero_stage": ZeroStageEnum.weights,
                "fp32": torch.arange(4.0), "param_groups": [{"lr": 1e-3}]}, path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # plain weights-only load: DeepSpeed's classes are not allowed
    got = ckpt_io.load_weights_only(str(path))
    assert got["zero_stage"] == ZeroStageEnum.weights and torch.equal(got["fp32"], torch.arange(4.0))


def test_deepspeed_engines_read_through_the_weights_only_loader(tmp_path):
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

    class Engine:
        checkpoint_engine = TorchCheckpointEngine()

    engine = Engine()
    ckpt_io.use_weights_only(engine)
    path = tmp_path / "x.pt"
    with open(path, "wb") as f:
        pickle.dump(_RunsCode(str(tmp_path / "ran")), f)
    with pytest.raises(ValueError, match="refused to load"):
        engine.checkpoint_engine.load(str(path), map_location="cpu")
    assert not (tmp_path / "ran").exists()


def test_each_rank_hashes_the_files_it_wrote(tmp_path):
    for rel in ("policy/state/zero_pp_rank_0_mp_rank_00_model_states.pt",
                "policy/state/zero_pp_rank_1_mp_rank_00_optim_states.pt",
                "policy/state/zero_pp_rank_10_mp_rank_00_optim_states.pt", "rng_rank0.pt", "rng_rank1.pt",
                "rng_rank10.pt", "policy/zero_to_fp32.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    assert ckpt_io.own_files(str(tmp_path), 1) == ["policy/state/zero_pp_rank_1_mp_rank_00_optim_states.pt",
                                                   "rng_rank1.pt"]
    assert list(ckpt_io.hash_own_files(str(tmp_path), 0)) == [
        "policy/state/zero_pp_rank_0_mp_rank_00_model_states.pt", "rng_rank0.pt"]


def test_auto_never_falls_back_past_a_damaged_newest_checkpoint(tmp_path):
    cfg = _cfg(tmp_path, "ckpt.resume=auto")
    _save(cfg, tmp_path, 2)
    newest = _save(cfg, tmp_path, 4)
    _log_steps(tmp_path, [1, 2, 3, 4])
    os.remove(newest / "policy" / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        find_resume(cfg, tmp_path)
    assert str(err.value).startswith(f"ckpt.resume=auto: the newest checkpoint is damaged: {newest}: incomplete")
    assert "ckpt.resume=<its folder>" in str(err.value)
    assert record_in(tmp_path) == ["metrics.jsonl (steps 1-4)"]  # nothing moved aside
