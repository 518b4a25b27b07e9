"""Checkpoints without Ray: atomic writes, skipping incomplete ones, pruning, the resume checks
and their one-line errors, the driver state and the resumed metrics record."""
from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from conftest import ROOT, compose
from launch.state.checkpoint import (COMPLETE, CheckpointError, Checkpointer, DriverState, complete_checkpoints,
                               config_changes, find_resume, open_checkpoint)
from launch.config import to_train_config
from launch.state.manifest import write_manifest
from launch.state.metrics import RESUME_KEY, RunLogger, logged_steps, read_history
from launch.data.problem import Problem


class FakeLearner:
    """Writes what the learner group writes (one file per model and rank), or fails halfway."""

    def __init__(self, fail_at_policy: bool = False):
        self.fail_at_policy = fail_at_policy

    def save_checkpoint(self, folder: str, step: int) -> None:
        for model in ("policy", "rm"):
            (Path(folder) / model / "state").mkdir(parents=True)
            (Path(folder) / model / "state" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"x" * 10)
        for rank in range(2):
            (Path(folder) / f"rng_rank{rank}.pt").write_bytes(b"rng")

    def save_pretrained(self, out_dir: str) -> None:
        if self.fail_at_policy:
            raise KeyboardInterrupt("killed while writing the policy")
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "config.json").write_text("{}")
        (Path(out_dir) / "model.safetensors").write_bytes(b"w")


class FakeRoles:
    def __init__(self, **kw):
        self.learner = FakeLearner(**kw)


def _cfg(tmp_path, *overrides):
    return to_train_config(compose([f"output_dir={tmp_path}", "steps=10", *overrides]))


def _save(cfg, run_dir, step, pass1=None, roles=None):
    state = DriverState.start(cfg.seed)
    state.step = state.policy_version = step
    state.drawn = sum(cfg.prompts_at(s) for s in range(step))
    evals = [{"eval/step": float(step), "eval/pass1": pass1}] if pass1 is not None else []
    return Checkpointer(cfg.ckpt, run_dir, cfg.steps).save(state, roles or FakeRoles(), asdict(cfg), "run123", evals)


def _log_steps(run_dir, steps):
    with (Path(run_dir) / "metrics.jsonl").open("a") as f:
        for s in steps:
            f.write(json.dumps({"step": s, "rollout/samples": 16.0}) + "\n")


def test_a_checkpoint_is_complete_or_never_picked(tmp_path):
    cfg = _cfg(tmp_path)
    path = _save(cfg, tmp_path, 2)
    assert path == tmp_path / "ckpt" / "step_000002" and (path / COMPLETE).is_file()
    assert {p.name for p in path.iterdir()} == {"learner", "policy", "driver.json", "manifest.sha256", COMPLETE}
    meta = json.loads((path / "driver.json").read_text())
    assert meta["state"]["step"] == 2 and meta["wandb_run_id"] == "run123" and meta["learner_models"] == ["policy", "rm"]

    # a write killed halfway: the .tmp folder stays, nothing new is picked
    with pytest.raises(KeyboardInterrupt):
        _save(cfg, tmp_path, 4, roles=FakeRoles(fail_at_policy=True))
    assert (tmp_path / "ckpt" / "step_000004.tmp").is_dir()
    # a folder with the right name but no COMPLETE marker (e.g. copied by hand, cut short)
    (tmp_path / "ckpt" / "step_000006").mkdir()
    assert [c.step for c in complete_checkpoints(tmp_path / "ckpt")] == [2]
    _log_steps(tmp_path, [1, 2, 3])
    resumed = find_resume(_cfg(tmp_path, "ckpt.resume=auto"), tmp_path)
    assert resumed.step == 2 and resumed.wandb_run_id == "run123"

    _save(cfg, tmp_path, 4)  # the next write clears the leftovers of the interrupted one
    assert not list((tmp_path / "ckpt").glob("*.tmp"))


def test_keeps_the_newest_and_the_best(tmp_path):
    cfg = _cfg(tmp_path, "ckpt.keep=2")
    for step, pass1 in [(2, 0.5), (4, 0.9), (6, 0.7), (8, None), (10, 0.6)]:
        _save(cfg, tmp_path, step, pass1)
    assert [c.step for c in complete_checkpoints(tmp_path / "ckpt")] == [4, 8, 10]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step_000004", "step_000008", "step_000010"]
    _save(_cfg(tmp_path / "b", "ckpt.keep=1", "ckpt.keep_best=false"), tmp_path / "b", 2, 0.9)
    _save(_cfg(tmp_path / "b", "ckpt.keep=1", "ckpt.keep_best=false"), tmp_path / "b", 4, 0.1)
    assert [c.step for c in complete_checkpoints(tmp_path / "b" / "ckpt")] == [4]


def test_due_every_n_steps_and_after_the_last(tmp_path):
    due = Checkpointer(_cfg(tmp_path, "ckpt.every=4").ckpt, tmp_path, last_step=10).due
    assert [s for s in range(1, 11) if due(s)] == [4, 8, 10]
    assert [s for s in range(1, 11) if Checkpointer(_cfg(tmp_path, "ckpt.every=0").ckpt, tmp_path, 10).due(s)] == [10]
    assert not any(Checkpointer(_cfg(tmp_path, "ckpt.enabled=false").ckpt, tmp_path, 10).due(s) for s in range(11))


@pytest.mark.parametrize("make,expect", [
    (lambda d: d / "nowhere", "no such checkpoint folder"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no COMPLETE marker"),
    (lambda d: d / "run" / "ckpt", "name one of its step_"),
])
def test_a_folder_that_is_not_a_checkpoint_gives_one_line_naming_it(tmp_path, make, expect):
    _save(_cfg(tmp_path / "run"), tmp_path / "run", 2)
    path = make(tmp_path)
    with pytest.raises(CheckpointError, match=expect) as e:
        find_resume(_cfg(tmp_path / "new", f"ckpt.resume={path}"), tmp_path / "new")
    assert str(path) in str(e.value) and "\n" not in str(e.value) and "ckpt.resume=" in str(e.value)


def test_a_checkpoint_missing_a_part_is_refused(tmp_path):
    path = _save(_cfg(tmp_path), tmp_path, 2)
    os.remove(path / "learner" / "rng_rank1.pt")
    with pytest.raises(CheckpointError, match="missing learner/rng_rank1.pt"):
        open_checkpoint(path)


@pytest.mark.slow
def test_cli_names_the_bad_folder_in_one_line_before_ray_starts(tmp_path):
    bad = tmp_path / "not_a_ckpt"
    bad.mkdir()
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "launch.train", f"ckpt.resume={bad}", f"output_dir={tmp_path / 'run'}",
                          f"hydra.run.dir={tmp_path / 'hydra'}", "ray.address=ray://127.0.0.1:1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert lines[-1] == f"error: ckpt.resume={bad}: {bad}: not a complete checkpoint, no COMPLETE marker " \
                        "(its write did not finish, or it is not a checkpoint)", out.stderr[-2000:]
    assert "Traceback" not in out.stderr and time.perf_counter() - t0 < 60


def test_a_resume_that_would_repeat_or_skip_steps_stops(tmp_path):
    cfg = _cfg(tmp_path)
    two, four = _save(cfg, tmp_path, 2), _save(cfg, tmp_path, 4)
    _log_steps(tmp_path, range(1, 6))
    with pytest.raises(CheckpointError, match=r"would repeat steps 3-4"):
        find_resume(_cfg(tmp_path, f"ckpt.resume={two}"), tmp_path)
    assert find_resume(_cfg(tmp_path, f"ckpt.resume={four}"), tmp_path).step == 4
    # a run folder whose record ends before the checkpoint: steps would be missing from it
    other = tmp_path / "other"
    _log_steps(other.mkdir() or other, [1, 2])
    with pytest.raises(CheckpointError, match=r"ends at step 2: resuming here would skip steps 3-4"):
        find_resume(_cfg(other, f"ckpt.resume={four}"), other)
    with pytest.raises(CheckpointError, match=r"step 4 of steps=4: the run is complete"):
        find_resume(_cfg(tmp_path, "ckpt.resume=auto", "steps=4"), tmp_path)
    with pytest.raises(CheckpointError, match=r"differs from the checkpointed run's in prompts_per_step, rollout.top_p"):
        find_resume(_cfg(tmp_path, "ckpt.resume=auto", "prompts_per_step=3", "rollout.top_p=0.5"), tmp_path)
    # a checkpoint written in the middle of a step (its queries drawn, the step not done)
    mid = _save(_cfg(tmp_path / "mid"), tmp_path / "mid", 2)
    meta = json.loads((mid / "driver.json").read_text())
    meta["state"]["drawn"] += meta["config"]["prompts_per_step"]
    (mid / "driver.json").write_text(json.dumps(meta))
    write_manifest(mid, skip=(COMPLETE,))  # as if saved so, not edited since
    _log_steps(tmp_path / "mid", [1, 2, 3])
    with pytest.raises(CheckpointError, match="middle of a step"):
        find_resume(_cfg(tmp_path / "mid", "ckpt.resume=auto"), tmp_path / "mid")
    # more queries in the RM-only steps (algo.rm_only_prompts_per_step): 3 x 64 + 64 drawn by step 4
    more = _cfg(tmp_path / "more", "algo.actor_freeze_steps=3", "algo.rm_only_prompts_per_step=64")
    assert [more.prompts_at(s) for s in range(5)] == [64, 64, 64, more.prompts_per_step, more.prompts_per_step]
    _save(more, tmp_path / "more", 4)
    _log_steps(tmp_path / "more", [1, 2, 3, 4])
    assert find_resume(_cfg(tmp_path / "more", "ckpt.resume=auto", "algo.actor_freeze_steps=3",
                            "algo.rm_only_prompts_per_step=64"), tmp_path / "more").step == 4
    # where things are written and shown may change
    assert find_resume(_cfg(tmp_path, "ckpt.resume=auto", "wandb.mode=disabled", "ckpt.keep=5"), tmp_path).step == 4
    # a fresh run into a folder that holds checkpoints would mix two runs' checkpoints
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        find_resume(cfg, tmp_path)
    assert find_resume(_cfg(tmp_path / "fresh", "ckpt.resume=auto"), tmp_path / "fresh") is None


def test_config_changes_names_the_keys():
    saved = {"steps": 6, "learner": {"world_size": 2}, "rollout": {"engine_kwargs": {}}, "wandb": {"mode": "offline"},
             "removed_key": 1}
    now = {"steps": 6, "learner": {"world_size": 1, "new_key": 3}, "rollout": {"engine_kwargs": {"x": 1}},
           "wandb": {"mode": "online"}}
    assert config_changes(saved, now) == ["learner.world_size", "rollout.engine_kwargs.x"]


def test_driver_state_round_trip_draws_the_same_queries():
    train = [Problem(id=f"p{i}", question="q", answer="1") for i in range(10)]
    a = DriverState.start(seed=3)
    for _ in range(3):
        a.next_queries(train, 4)
    a.rng.random()  # the filter's picks draw from the same RNG
    b = DriverState.from_json(json.loads(json.dumps(a.to_json())))
    assert (b.step, b.drawn, b.order) == (a.step, 12, a.order)
    for _ in range(5):
        assert [p.id for p in a.next_queries(train, 4)] == [p.id for p in b.next_queries(train, 4)]
        assert a.rng.random() == b.rng.random()
    # the same order as before the driver state existed: rng.sample over the problems
    rng, order, c = random.Random(3), [], DriverState.start(seed=3)
    for _ in range(4):
        if len(order) < 4:
            order += rng.sample(train, len(train))
        want, order = order[:4], order[4:]
        assert c.next_queries(train, 4) == want


def test_resumed_metrics_are_appended_with_a_marker(tmp_path):
    jsonl = tmp_path / "metrics.jsonl"
    rows = [{"step": 0, "eval/step": 0.0, "eval/pass1": 0.5}] + [{"step": s, "rollout/samples": 4.0} for s in (1, 2, 3)]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "rollout/sam')  # killed mid-line
    logger = RunLogger(tmp_path, {}, mode="disabled", resume_step=2)
    assert [r["step"] for r in logger.history] == [0, 1, 2]
    logger.log(3, {"rollout/samples": 4.0, "x": 1.0})
    lines = jsonl.read_text().splitlines()
    assert lines[:4] == [json.dumps(r) for r in rows] and json.loads(lines[5]) == {"step": 2, RESUME_KEY: 2.0}
    assert [(r["step"], r.get("x")) for r in read_history(jsonl)] == [(0, None), (1, None), (2, None), (3, 1.0)]
    assert logged_steps(jsonl) == 3


def test_request_seeds_differ_by_step_position_and_query():
    from actors.engine import request_seeds

    seeds = request_seeds((0, 4), ["a", "b", "a"])
    assert len(set(seeds)) == 3 and seeds == request_seeds((0, 4), ["a", "b", "a"])
    assert set(seeds).isdisjoint(request_seeds((0, 5), ["a", "b", "a"]) + request_seeds((1, 4), ["a", "b", "a"]))
    assert all(0 <= s < 2 ** 62 for s in seeds)


def test_ckpt_keys_are_checked_by_name():
    with pytest.raises(ValueError, match="ckpt.keep"):
        to_train_config(compose(["ckpt.keep=0"]))
    with pytest.raises(ValueError, match="ckpt.every"):
        to_train_config(compose(["ckpt.every=-1"]))
    assert dataclasses.asdict(to_train_config(compose()).ckpt)["resume"] is None


def test_driver_state_copy_is_independent():
    """`train()` keeps a copy from before each step: what a verifier alarm saves."""
    from launch.state.checkpoint import DriverState

    state = DriverState.start(seed=3)
    train = [type("P", (), {"id": f"q{i}"})() for i in range(10)]
    state.next_queries(train, 4)
    before = state.copy()
    drawn = [p.id for p in state.next_queries(train, 4)]
    assert before.to_json() != state.to_json()
    assert [p.id for p in before.next_queries(train, 4)] == drawn  # the copy draws the same step again
