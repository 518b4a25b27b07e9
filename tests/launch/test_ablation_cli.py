"""launch.ablation.paper's pure pieces: --name -> file names, the stated noise, the table's noise
line; run_ablation with a fake train_fn (no Ray, no engines)."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from launch.ablation.paper import (DEFAULT_NAME, binomial_se, markdown, noise, noise_line, output_paths,
                             run_ablation)
from launch.config import TrainConfig


def test_default_name_keeps_the_old_paths(tmp_path):
    paths = output_paths(tmp_path)
    assert DEFAULT_NAME == "ablation"
    assert paths == {"json": tmp_path / "ablation.json", "md": tmp_path / "ablation.md",
                     "png": tmp_path / "ablation.png", "runs": tmp_path / "runs"}


def test_a_name_gives_its_own_files_and_run_folders(tmp_path):
    paths = output_paths(tmp_path, "ablation_long")
    assert paths["json"] == tmp_path / "ablation_long.json"
    assert paths["md"] == tmp_path / "ablation_long.md"
    assert paths["png"] == tmp_path / "ablation_long.png"
    assert paths["runs"] == tmp_path / "runs" / "ablation_long"


@pytest.mark.parametrize("bad", ["", "a/b", ".hidden"])
def test_a_name_that_is_not_a_file_stem_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="--name"):
        output_paths(tmp_path, bad)


def test_binomial_standard_error():
    assert binomial_se(0.8, 500) == pytest.approx(math.sqrt(0.8 * 0.2 / 500))
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    assert binomial_se(1.0, 200) == 0.0
    with pytest.raises(ValueError):
        binomial_se(0.5, 0)


def test_noise_is_at_the_mean_over_all_runs_and_shrinks_with_seeds():
    runs = [{"after": 0.7}, {"after": 0.9}, {"after": 0.8}, {"after": 0.8}]
    n = noise(runs, eval_size=400, seeds=2)
    assert n["at_pass1"] == pytest.approx(0.8)
    assert n["se_run"] == pytest.approx(0.02)  # sqrt(0.16 / 400)
    assert n["se_mean"] == pytest.approx(0.02 / math.sqrt(2))
    assert n["eval_size"] == 400 and n["seeds"] == 2
    assert noise([{"after": None}], 400, 2) is None
    assert noise(runs, 0, 2) is None


def test_noise_line_under_the_table():
    n = noise([{"after": 0.8}], eval_size=400, seeds=4)
    line = noise_line(n)
    assert "400 held-out problems" in line and "(80.0)" in line
    assert "2.0 points" in line and "over 4 seeds 1.0 points" in line
    table = [{"mode": "bc", "runs": 4, "pass1_before": 0.5, "pass1_after": 0.8, "pass1_after_std": 0.01,
              "samples": 10}]
    md = markdown(table, n)
    assert md.splitlines()[-1] == line and md.splitlines()[-2] == ""
    assert markdown(table).count("\n") == 3  # no noise given: the table alone, as before


def _fake_train(calls):
    def train_fn(cfg, out_dir, roles=None):
        calls.append((cfg.algo.mode, cfg.seed, Path(out_dir)))
        after = {"bc": 0.8, "oreal": 0.7}[cfg.algo.mode] + 0.01 * cfg.seed
        return SimpleNamespace(
            evals=[{"eval/step": 0, "eval/pass1": 0.5}, {"eval/step": cfg.steps, "eval/pass1": after}],
            summary={"heldout_pass1_before": 0.5, "heldout_pass1_after": after, "samples": 64,
                     "rl_wall_s": 1.0})
    return train_fn


def test_run_ablation_writes_named_files_with_the_stated_noise(tmp_path):
    base = TrainConfig()
    base = dataclasses.replace(base, steps=3, eval_size=300,
                               task=dataclasses.replace(base.task, num_heldout=500))
    calls = []
    out = run_ablation(base, tmp_path, seeds=[0, 1], modes=["bc", "oreal"], train_fn=_fake_train(calls),
                       name="ablation_long")
    assert [(m, s) for m, s, _ in calls] == [("bc", 0), ("oreal", 0), ("bc", 1), ("oreal", 1)]
    assert all(d.parent == tmp_path / "runs" / "ablation_long" for _, _, d in calls)
    for ext in ("json", "md", "png"):
        assert (tmp_path / f"ablation_long.{ext}").exists()
    assert not (tmp_path / "ablation.json").exists()
    saved = json.loads((tmp_path / "ablation_long.json").read_text())
    assert saved["name"] == "ablation_long"
    s = saved["settings"]
    assert s["eval_size"] == 300 and s["num_heldout"] == 500 and s["heldout_evaluated"] == 300
    p = (0.80 + 0.70 + 0.81 + 0.71) / 4
    assert s["noise"]["at_pass1"] == pytest.approx(p)
    assert s["noise"]["se_run"] == pytest.approx(math.sqrt(p * (1 - p) / 300))
    assert s["noise"]["se_mean"] == pytest.approx(math.sqrt(p * (1 - p) / 300) / math.sqrt(2))
    assert (tmp_path / "ablation_long.md").read_text().splitlines()[-1] == noise_line(s["noise"])


def test_eval_size_zero_means_the_whole_heldout_split(tmp_path):
    base = TrainConfig()
    base = dataclasses.replace(base, steps=3, eval_size=0, task=dataclasses.replace(base.task, num_heldout=250))
    out = run_ablation(base, tmp_path, seeds=[0], modes=["bc"], train_fn=_fake_train([]))
    assert out["settings"]["heldout_evaluated"] == 250
    assert out["settings"]["noise"]["eval_size"] == 250
    assert (tmp_path / "ablation.json").exists()  # the default name


def test_cli_name_reaches_the_outputs(tmp_path, monkeypatch, capsys):
    import launch.ablation.paper as ablation

    seen = {}

    def fake_run(base, out_dir, seeds, modes, name):
        seen.update(out=out_dir, seeds=seeds, modes=modes, name=name, steps=base.steps)
        return {"table": [], "settings": {"noise": None}}

    monkeypatch.setattr(ablation, "run_ablation", fake_run)
    ablation.main(["--out", str(tmp_path), "--name", "ablation_long", "--seeds", "0", "1", "--modes", "bc",
                   "--", "steps=7"])
    assert seen == {"out": tmp_path, "seeds": [0, 1], "modes": ["bc"], "name": "ablation_long", "steps": 7}
    assert str(tmp_path / "ablation_long.json") in capsys.readouterr().out
