"""The W&B samples table (launch/state/samples_table.py) and RunLogger's W&B run: group, job type,
the `step` x axis, wandb.json and the `wandb sync` line. No Ray."""
from __future__ import annotations

import json
from pathlib import Path
import random
from types import SimpleNamespace

import pytest

from actors.types import Rollout
from launch import records
from launch.state import samples_table
from launch.config import WandbConfig
from launch.state.metrics import RunLogger
from launch.data.problem import Problem
from learner.config import AlgoConfig
from learner.selection import select
from verifier.verdict import Verdict
from wandb_files import run_info

OUTCOMES = [["correct", "incorrect", "timeout"], ["incorrect", "correct", "correct"]]


def _step(step: int = 1):
    """A step's records and rollouts: 2 queries x 3 samples; sample (1, 2)'s response is empty."""
    queries = [Problem(f"q{i}", f"Compute {i} + 1.", str(i + 1)) for i in range(2)]
    prompt = {q.id: f"<user>{q.question}<assistant>" for q in queries}
    groups = [[Rollout(q.id, (1, 2), () if (i, k) == (1, 2) else (3, 4 + k), f"answer {i}.{k}", True, (), 0)
               for k in range(3)] for i, q in enumerate(queries)]
    verdicts = [Verdict(o == "correct", o, "7") for row in OUTCOMES for o in row]
    selection = select(groups, [[o == "correct" for o in row] for row in OUTCOMES], AlgoConfig(), random.Random(0))
    return records.step_records(step, queries, prompt, groups, verdicts, selection), groups


class FakeLearner:
    """`LearnerGroup.token_weights`: w+ = 0.1 * token id, w- = its complement, per token."""

    def __init__(self):
        self.asked = []

    def token_weights(self, samples):
        self.asked.append([s.response_ids for s in samples])
        return [([0.1 * t for t in s.response_ids], [1 - 0.1 * t for t in s.response_ids]) for s in samples]


def test_pick_spreads_over_queries():
    recs, _ = _step()
    assert [(r["query_index"], r["sample"]) for r in samples_table.pick(recs, 4)] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert len(samples_table.pick(recs, 100)) == 6


def test_rows_hold_the_record_and_the_weight_summaries():
    recs, groups = _step()
    picked = samples_table.pick(recs, 6)
    learner = FakeLearner()
    weights = samples_table.token_weights(learner, groups, picked)
    assert learner.asked == [[(3, 4), (3, 4), (3, 5), (3, 5), (3, 6)]]  # the empty response is not sent
    rows = [dict(zip(samples_table.COLUMNS, row)) for row in samples_table.rows(picked, weights)]
    first = rows[0]  # query 0, sample 0: correct, response tokens (3, 4)
    assert (first["step"], first["query_id"], first["gold"], first["verdict"], first["reward"]) == (1, "q0", "1", "correct", 1.0)
    assert first["prompt"] == "<user>Compute 0 + 1.<assistant>" and first["response"] == "answer 0.0"
    assert first["w_pos_mean"] == pytest.approx(0.35) and first["w_pos_min"] == pytest.approx(0.3)
    assert first["w_pos_max"] == pytest.approx(0.4) and first["w_neg_mean"] == pytest.approx(0.65)
    assert [r["verdict"] for r in rows] == ["correct", "incorrect", "incorrect", "correct", "timeout", "correct"]
    assert [r["reward"] for r in rows] == [1.0, -1.0, -1.0, 1.0, -1.0, 1.0]
    empty = rows[5]  # query 1, sample 2: no tokens, no weights
    assert empty["query_id"] == "q1" and empty["w_pos_mean"] is None and empty["w_neg_max"] is None
    # no RM (algo without one): every w+/w- cell blank
    assert all(r[-6:] == [None] * 6 for r in samples_table.rows(picked))


class FakeLogger:
    wandb_run = object()

    def __init__(self):
        self.tables = []

    def log_table(self, step, key, table):
        self.tables.append((step, key, table))


def test_log_step_every_n_steps_from_the_rollout_record(tmp_path):
    recs, groups = _step(step=4)
    records.write_step(tmp_path, 4, recs)
    logger, learner = FakeLogger(), FakeLearner()
    cfg = WandbConfig(table_every=2, table_rows=3)
    samples_table.log_step(logger, cfg, tmp_path, 3, groups, learner)  # not due: nothing read or asked
    assert logger.tables == [] and learner.asked == []
    samples_table.log_step(logger, cfg, tmp_path, 4, groups, learner)
    (step, key, table), = logger.tables
    assert (step, key, table.columns) == (4, "samples", list(samples_table.COLUMNS))
    assert [row[1] for row in table.data] == ["q0", "q1", "q0"] and table.data[0][7] == pytest.approx(0.35)
    samples_table.log_step(logger, WandbConfig(table_every=0), tmp_path, 4, groups, learner)  # 0: never
    assert len(logger.tables) == 1
    disabled = RunLogger(tmp_path, {}, mode="disabled")
    samples_table.log_step(disabled, cfg, tmp_path, 4, groups, learner)  # W&B off: no RM forward
    assert len(learner.asked) == 1


def test_table_keys_are_checked():
    with pytest.raises(ValueError, match="wandb.table_every"):
        WandbConfig(table_every=-1)


def test_offline_run_has_group_job_type_step_axis_and_sync_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    (tmp_path / "wb").mkdir()
    run_dir = tmp_path / "run"
    logger = RunLogger(run_dir, {"seed": 1}, "offline", "oreal-test", name="seed=1", group="sweep-a", job_type="train")
    logger.log(0, {"eval/pass1": 0.5})
    logger.log(1, {"rollout/reward_mean": 0.25})
    recs, groups = _step()
    logger.log_table(1, "samples", samples_table.samples_table(samples_table.pick(recs, 2)))
    run_id = logger.run_id
    logger.finish()
    info = json.loads((run_dir / "wandb.json").read_text())
    assert (info["id"], info["name"], info["group"], info["job_type"], info["mode"]) == \
        (run_id, "seed=1", "sweep-a", "train", "offline")
    (wandb_dir,) = info["dirs"]
    assert f"wandb sync {wandb_dir}" in capsys.readouterr().out
    read = run_info(wandb_dir)  # what the .wandb file itself says
    assert (read["id"], read["name"], read["group"], read["job_type"]) == (run_id, "seed=1", "sweep-a", "train")
    assert read["step_metric"] == {"*": "step"}
    assert [(h["step"], h.get("eval/pass1"), h.get("rollout/reward_mean")) for h in read["history"]] == \
        [(0, 0.5, None), (1, None, 0.25), (1, None, None)]
    assert read["history"][2]["samples/_type"] == "table-file"
    # in the run's own folder: WANDB_DIR above only applies when no earlier test started W&B's service
    (table_file,) = (SimpleNamespace(p=p) for p in Path(wandb_dir).rglob("samples_*.table.json"))
    table = json.loads(table_file.p.read_text())
    assert table["columns"] == list(samples_table.COLUMNS) and len(table["data"]) == 2

    # resumed (offline: a second local folder with the same id): both are synced, in order
    again = RunLogger(run_dir, {"seed": 1}, "offline", "oreal-test", name="seed=1", group="sweep-a",
                      resume_step=1, run_id=run_id)
    again.log(2, {"rollout/reward_mean": 0.5})
    again.finish()
    dirs = json.loads((run_dir / "wandb.json").read_text())["dirs"]
    assert len(dirs) == 2 and dirs[0] == wandb_dir and dirs[1] != wandb_dir
    assert f"wandb sync {dirs[0]} {dirs[1]}" in capsys.readouterr().out
    assert [h["step"] for h in run_info(dirs[1])["history"]] == [2]
