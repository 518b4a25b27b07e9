"""A sweep point's run folder, W&B group and name (launch/sweep.py), without running it."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf

from conftest import compose
from launch.config import to_train_config
from launch.sweep import place_run, point_name, sweep_group, swept_keys


def _hydra(mode: RunMode, tmp_path: Path, overrides: list[str], num: int = 1, params: dict | None = None):
    """The parts of `HydraConfig.get()` that place_run reads, as Hydra fills them for job `num`."""
    sweep = tmp_path / "multirun" / "2026-11-05" / "12-34-56"
    return OmegaConf.create({
        "mode": mode, "runtime": {"output_dir": str(sweep / str(num) if mode == RunMode.MULTIRUN else tmp_path / "run")},
        "sweep": {"dir": str(sweep), "subdir": str(num)}, "sweeper": {"params": params},
        "overrides": {"task": overrides}})


def test_sweep_group_is_the_sweep_folder_id():
    assert sweep_group("/w/multirun/2026-11-05/12-34-56") == "2026-11-05_12-34-56"  # Hydra's default layout
    assert sweep_group("multirun/2026-11-05/12-34-56") == "2026-11-05_12-34-56"
    assert sweep_group("/shared/sweeps/lr_scan") == "lr_scan"


def test_swept_keys_are_the_sweeps_of_the_command_line():
    argv = ["-m", "seed=0,1", "steps=1", "algo=choice(bc,oreal)", "algo.eta=range(1,3)", "+experiment=paper_7b",
            "hydra.sweep.dir=/x"]
    assert swept_keys(argv) == {"seed", "algo", "algo.eta"}
    assert swept_keys(["-m", "steps=1"], ["algo.beta"]) == {"algo.beta"}  # hydra.sweeper.params sweep too


def test_point_name_is_the_swept_values_sorted():
    point = ["seed=1", "steps=1", "algo.policy_lr=0.0001", "+experiment=paper_7b"]
    assert point_name(point, {"seed", "algo.policy_lr"}) == "algo.policy_lr=0.0001,seed=1"
    # nothing swept (a one-point -m): every override but where it goes and how it is logged
    assert point_name(["steps=1", "output_dir=/x", "wandb.mode=offline", "algo=bc"], set()) == "algo=bc,steps=1"
    assert point_name(["output_dir=/x"], set()) is None


def test_a_sweep_point_gets_its_folder_group_and_name(tmp_path):
    overrides = ["seed=1", "steps=1"]
    cfg = to_train_config(compose(overrides))
    hydra = _hydra(RunMode.MULTIRUN, tmp_path, overrides)
    placed, run_dir = place_run(cfg, hydra, argv=["-m", "seed=0,1", "steps=1"])
    assert run_dir == tmp_path / "multirun" / "2026-11-05" / "12-34-56" / "1"
    assert (placed.wandb.group, placed.wandb.name) == ("2026-11-05_12-34-56", "seed=1")
    assert placed.seed == cfg.seed and cfg.wandb.group is None  # the rest is untouched, cfg not mutated

    # output_dir set: the sweep's folder, one subfolder per point, grouped by its name
    overrides = ["seed=1", f"output_dir={tmp_path / 'lr_scan'}", "wandb.group=mine", "wandb.name=named"]
    cfg = to_train_config(compose(overrides))
    placed, run_dir = place_run(cfg, _hydra(RunMode.MULTIRUN, tmp_path, overrides), argv=["-m", "seed=0,1"])
    assert run_dir == tmp_path / "lr_scan" / "1"
    assert (placed.wandb.group, placed.wandb.name) == ("mine", "named")  # as given
    cfg = to_train_config(compose(overrides[:2]))
    assert place_run(cfg, _hydra(RunMode.MULTIRUN, tmp_path, overrides[:2]), argv=[])[0].wandb.group == "lr_scan"


@pytest.mark.parametrize("output_dir", [None, "elsewhere"])
def test_a_single_run_stays_ungrouped(tmp_path, output_dir):
    overrides = ["seed=1"] + ([f"output_dir={tmp_path / output_dir}"] if output_dir else [])
    cfg = to_train_config(compose(overrides))
    placed, run_dir = place_run(cfg, _hydra(RunMode.RUN, tmp_path, overrides), argv=overrides)
    assert run_dir == tmp_path / (output_dir or "run")
    assert placed.wandb.group is None and placed.wandb.name is None  # W&B names it
