"""launch.ablation.rm's pieces: the rows compose as configs, a run's record from its folder, the
table with standard errors and differences, and an interrupted ablation resumed (fake runs)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from launch.ablation.rm import ROWS, compose_rows, differences, markdown, run_record, run_rows, table_row


def _write_run(run_dir: Path, after: float, rm_acc: list[float], w_pos: float, steps: int = 20):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps({
        "heldout_pass1_before": 0.5, "heldout_pass1_after": after, "heldout_pass1_by_step": {"0": 0.5, str(steps): after},
        "samples": 64, "rl_wall_s": 1.0}))
    rows = [{"step": 10 * i, "reward_model/heldout_pair_accuracy": a} for i, a in enumerate(rm_acc)]
    rows += [{"step": s, "learner/w_pos_mean": w_pos} for s in (11, 12)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_every_row_composes_with_its_own_mode_and_rm_regime():
    cfgs = compose_rows(list(ROWS), ["steps=7"])
    assert {k: (c.algo.mode, c.steps) for k, c in cfgs.items()} == {
        "bc": ("bc", 7), "wo_tokenrm": ("bc", 7), "oreal": ("oreal", 7), "oreal_rm": ("oreal", 7),
        "oreal_rm_shuffled": ("oreal", 7)}
    assert cfgs["wo_tokenrm"].algo.keep_all_correct and not cfgs["wo_tokenrm"].algo.freezes_policy
    assert not cfgs["bc"].algo.keep_all_correct
    assert cfgs["oreal_rm_shuffled"].algo.shuffle_token_weights and not cfgs["oreal_rm"].algo.shuffle_token_weights
    assert not cfgs["oreal"].algo.rm_own_data  # rm=paper: the paper's regime
    with pytest.raises(SystemExit, match="--rows"):
        compose_rows(["nope"], [])


def test_a_runs_record_comes_from_its_folder(tmp_path):
    _write_run(tmp_path / "r", 0.8, [0.5, 0.6, 0.9, 0.85], 0.4)
    rec = run_record("oreal_rm", 3, tmp_path / "r", freeze_steps=10)
    assert rec["after"] == 0.8 and rec["seed"] == 3 and rec["curve"] == {0: 0.5, 20: 0.8}
    assert rec["heldout_pair_accuracy"] == 0.85
    assert rec["heldout_pair_accuracy_min_after_freeze"] == 0.6  # steps 10, 20, 30
    assert rec["w_pos_mean"] == pytest.approx(0.4)


def test_table_states_the_standard_error_and_the_differences():
    runs_a = [{"before": 0.5, "after": a, "heldout_pair_accuracy": 0.9, "heldout_pair_accuracy_min_after_freeze": 0.8,
               "w_pos_mean": 0.4} for a in (0.80, 0.82, 0.84, 0.86)]
    runs_b = [{"before": 0.5, "after": a, "heldout_pair_accuracy": None, "heldout_pair_accuracy_min_after_freeze": None,
               "w_pos_mean": None} for a in (0.70, 0.70, 0.72, 0.72)]
    a, b = table_row("oreal_rm", runs_a), table_row("bc", runs_b)
    assert a["pass1_after"] == pytest.approx(0.83) and a["seeds"] == 4
    sem_a = math.sqrt(sum((x - 0.83) ** 2 for x in (0.80, 0.82, 0.84, 0.86)) / 3) / 2
    assert a["pass1_after_sem"] == pytest.approx(sem_a)
    assert b["heldout_pair_accuracy"] is None
    (d,) = differences([a, b])
    assert (d["a"], d["b"]) == ("oreal_rm", "bc") and d["diff"] == pytest.approx(0.12)
    assert d["se"] == pytest.approx(math.sqrt(sem_a ** 2 + b["pass1_after_sem"] ** 2))
    md = markdown([a, b], [d], None)
    assert "| oreal_rm | 4 | 50.0 | 83.0 ± " in md and "| oreal_rm − bc | +12.0 |" in md


def test_an_interrupted_ablation_runs_only_what_is_missing(tmp_path):
    cfgs = compose_rows(["bc", "oreal_rm"], ["steps=20", "eval_size=100"])
    calls = []

    def fake_train(cfg, run_dir):
        calls.append((cfg.algo.mode, cfg.seed))
        _write_run(Path(run_dir), 0.7 + 0.1 * (cfg.algo.mode == "oreal") + 0.01 * cfg.seed, [0.5, 0.9], 0.3)

    _write_run(tmp_path / "runs" / "ablation_rm" / "bc-seed0", 0.7, [], 0.0)  # finished before the interruption
    out = run_rows(cfgs, tmp_path, [0, 1], train_fn=fake_train)
    assert calls == [("oreal", 0), ("bc", 1), ("oreal", 1)]
    assert [r["row"] for r in out["table"]] == ["bc", "oreal_rm"]
    saved = json.loads((tmp_path / "ablation_rm.json").read_text())
    assert saved["table"][1]["pass1_after"] == pytest.approx(0.805) and len(saved["runs"]) == 4
    assert saved["settings"]["heldout_evaluated"] == 100
    assert (tmp_path / "ablation_rm.md").read_text().startswith("| row |")
    assert (tmp_path / "ablation_rm.png").is_file()
