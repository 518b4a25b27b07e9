"""Difficulty re-balancing (docs/algorithm.md "Data") and `python -m launch.passrate`: the repeat counts
of the paper's buckets, the pass-rate file's writer and reader (bad lines, unknown ids, another
task's file), the train split re-balanced by `task.passrate_file`, the measurement with stand-in
engines and in-process grading, and an e2e run through real engines and the verifier pool."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import CACHE, ROOT
from launch.data.problem import Problem
from launch.data.rebalance import (PAPER_BUCKETS, PassRate, apply_pass_rate_file, check_buckets, read_pass_rates,
                              rebalance, rebalance_counts, write_pass_rates)
from launch.data.tasks import TaskConfig, load_task
from verifier import grade


def _problems(n: int) -> list[Problem]:
    return [Problem(f"p{i}", f"Compute {i} + 1.", str(i + 1)) for i in range(n)]


# ------------------------------------------------------------------------------ rebalance

def test_paper_buckets_give_the_papers_repeat_counts():
    """[0,0.2) x6, [0.2,0.4) x4, [0.4,0.6) x4, [0.6,0.8) x2, >= 0.8 dropped; no rate: once."""
    rates = [0.0, 0.1, 0.2, 0.39, 0.4, 0.59, 0.6, 0.79, 0.8, 1.0]
    expected = [6, 6, 4, 4, 4, 4, 2, 2, 0, 0]
    problems = _problems(len(rates) + 1)  # the last has no pass rate
    out = rebalance(problems, {p.id: r for p, r in zip(problems, rates)}, PAPER_BUCKETS)
    assert [sum(q.id == p.id for q in out) for p in problems] == expected + [1]
    assert [q.id for q in out[:7]] == ["p0"] * 6 + ["p1"]  # input order, copies side by side
    assert len(out) == sum(expected) + 1


def test_sixteen_samples_land_in_the_buckets_by_correct_count():
    """With K=16 (the paper's): c correct -> c/16; 3/16 < 0.2 <= 4/16, 12/16 < 0.8 <= 13/16."""
    problems = _problems(17)
    rates = {p.id: c / 16 for c, p in enumerate(problems)}
    counts = rebalance_counts(problems, rates, PAPER_BUCKETS)
    assert counts.before == [4, 3, 3, 3, 4]  # c = 0-3, 4-6, 7-9, 10-12, 13-16
    assert counts.after == [24, 12, 12, 6, 0] and counts.missing == 0
    assert len(rebalance(problems, rates)) == counts.total_after == 54


def test_custom_buckets_and_config_key():
    buckets = check_buckets([[0.5, 1, 1], [0, 0.5, 3]])  # any order, ints accepted
    assert buckets == ((0.0, 0.5, 3), (0.5, 1.0, 1))
    problems = _problems(3)
    out = rebalance(problems, {"p0": 0.0, "p1": 0.5, "p2": 1.0}, buckets)
    assert [q.id for q in out] == ["p0", "p0", "p0", "p1", "p2"]
    assert TaskConfig().rebalance == [list(b) for b in PAPER_BUCKETS] and TaskConfig().passrate_file is None


@pytest.mark.parametrize("buckets,match", [
    ([[0, 0.5, 3], [0.6, 1, 0]], "cover \\[0, 1\\] with no gap or overlap"),
    ([[0, 0.6, 3], [0.5, 1, 0]], "no gap or overlap"),
    ([[0, 0.8, 3]], "no gap"),
    ([[0, 1, -1]], "whole number >= 0"),
    ([[0, 1, 1.5]], "whole number >= 0"),
    ([[0, 1]], "\\[low, high, repeats\\]"),
    ([[0.5, 0.2, 1]], "low < high"),
    ([], "is empty"),
])
def test_bad_buckets_are_refused_naming_the_key(buckets, match):
    with pytest.raises(ValueError, match="task.rebalance.*" + match):
        TaskConfig(rebalance=buckets)


# ------------------------------------------------------------------------------ the file

def test_writer_and_reader_round_trip(tmp_path):
    rows = [PassRate("a", 0.25, 16, 4, "q a"), PassRate("b", 1.0, 16, 16, "q b"), PassRate("c", 0.0, 4, 0)]
    path = write_pass_rates(tmp_path / "sub" / "passrate.jsonl", rows)
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {"id": "a", "pass_rate": 0.25, "k": 16, "correct": 4, "question": "q a"}
    assert read_pass_rates(path) == {r.id: r for r in rows}


def test_bad_lines_are_skipped_and_named(tmp_path, caplog):
    path = tmp_path / "passrate.jsonl"
    path.write_text("\n".join([
        '{"id": "a", "pass_rate": 0.5, "k": 4, "correct": 2}',
        '{"id": "b", "k": 4, "correct": 2',  # cut off
        '["not", "an", "object"]',
        '{"id": "c", "k": 4}',
        '{"id": "d", "k": 4, "correct": 5}',
        '{"id": "e", "pass_rate": 0.9, "k": 4, "correct": 1}',
        '{"id": "a", "k": 4, "correct": 0}',
        '',
        '{"id": 7, "k": 2, "correct": 1}',  # ids are read as text
    ]) + "\n")
    with caplog.at_level(logging.WARNING, logger="oreal"):
        rates = read_pass_rates(path)
    assert {i: r.pass_rate for i, r in rates.items()} == {"a": 0.5, "7": 0.5}
    text = caplog.text
    assert "skipped 6 bad line(s)" in text
    for line, why in [(2, "Expecting"), (3, "not a JSON object"), (4, "no correct"), (5, "0 <= correct <= k"),
                      (6, "not correct/k"), (7, "repeated")]:
        assert f"{path}:{line}: " in text and why in text, (line, why)


def test_unusable_or_missing_file_is_an_error_naming_the_key(tmp_path):
    path = tmp_path / "passrate.jsonl"
    path.write_text("not json\n")
    with pytest.raises(ValueError, match="task.passrate_file=.*no usable line"):
        read_pass_rates(path)
    with pytest.raises(FileNotFoundError, match="task.passrate_file=.*no such file.*launch.passrate"):
        load_task(TaskConfig(num_train=10, num_heldout=2, passrate_file=str(tmp_path / "nope.jsonl")))


def test_unknown_ids_are_counted_and_missing_problems_kept_once(tmp_path, caplog, capsys):
    problems = _problems(4)
    path = write_pass_rates(tmp_path / "passrate.jsonl", [
        PassRate("p0", 0.0, 4, 0, problems[0].question), PassRate("p1", 1.0, 4, 4, problems[1].question),
        PassRate("p2", 0.5, 4, 2), PassRate("other-1", 0.0, 4, 0), PassRate("other-2", 0.0, 4, 0)])
    with caplog.at_level(logging.WARNING, logger="oreal"):
        out = apply_pass_rate_file(problems, str(path), PAPER_BUCKETS)
    assert [q.id for q in out] == ["p0"] * 6 + ["p2"] * 4 + ["p3"]
    assert "2 id(s) are not in the train split and are ignored (first: other-1, other-2)" in caplog.text
    printed = capsys.readouterr().out
    assert "4 -> 11 entries; 1 train problem(s) not in the file, kept once" in printed
    assert "[0.00, 0.20)    6       1       6  ###" in printed and "[0.20, 0.40)    4       0       0\n" in printed
    assert "[0.80, 1.00]    0       1       0  ###" in printed  # the last bucket holds 1.0
    assert "not in file     1       1       1\n" in printed and "total                   4      11" in printed


def test_another_tasks_file_is_refused(tmp_path):
    problems = _problems(3)
    strangers = write_pass_rates(tmp_path / "a.jsonl", [PassRate("x", 0.0, 4, 0)])
    with pytest.raises(ValueError, match="none of its 1 ids is a problem of the train split"):
        apply_pass_rate_file(problems, str(strangers), PAPER_BUCKETS)
    moved = write_pass_rates(tmp_path / "b.jsonl", [PassRate("p1", 0.0, 4, 0, "Compute 9 + 9.")])
    with pytest.raises(ValueError, match="1 problem\\(s\\) have another question.*'p1'"):
        apply_pass_rate_file(problems, str(moved), PAPER_BUCKETS)


def test_load_task_rebalances_the_train_split_only(tmp_path):
    cfg = TaskConfig(num_train=20, num_heldout=5)
    base = load_task(cfg)
    rates = [PassRate(p.id, c / 4, 4, c, p.question) for p, c in zip(base.train, [0, 1, 2, 3, 4] * 3)]
    path = write_pass_rates(tmp_path / "passrate.jsonl", rates)  # the last 5 problems: not in the file
    cfg = TaskConfig(num_train=20, num_heldout=5, passrate_file=str(path))
    splits = load_task(cfg)
    assert splits.heldout == base.heldout
    per_rate = {0: 6, 1: 4, 2: 4, 3: 2, 4: 0}  # 0.0, 0.25, 0.5, 0.75, 1.0
    assert len(splits.train) == 3 * sum(per_rate.values()) + 5
    for r in rates:
        assert sum(q.id == r.id for q in splits.train) == per_rate[r.correct]
    assert load_task(cfg, rebalanced=False) == base
    everything_easy = write_pass_rates(tmp_path / "easy.jsonl", [PassRate(p.id, 1.0, 4, 4) for p in base.train])
    with pytest.raises(ValueError, match="every train problem was dropped"):
        load_task(TaskConfig(num_train=20, num_heldout=5, passrate_file=str(everything_easy)))


# ------------------------------------------------------------------------------ launch.passrate

def compose_passrate(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from launch.passrate import register_passrate_configs

    register_passrate_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="passrate", overrides=overrides)


def test_passrate_config_composes_with_the_training_groups():
    from launch.passrate import to_passrate_config

    cfg = to_passrate_config(compose_passrate(["passrate.k=8", "task.num_train=50", "rollout.temperature=0.7"]))
    assert cfg.passrate.k == 8 and cfg.task.num_train == 50 and cfg.rollout.temperature == 0.7
    with pytest.raises(ValueError, match="passrate.k >= 1"):
        to_passrate_config(compose_passrate(["passrate.k=0"]))


def test_cli_fails_before_ray_with_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "launch.passrate", "task.rebalance=[[0,0.5,1]]",
                          f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("error: task.rebalance: the buckets must cover")
    assert "Started a local Ray instance" not in out.stdout + out.stderr


class _StandInRoles:
    """Engines that answer `answers[problem id][j]` for sample j; grading in this process."""

    def __init__(self, answers: dict[str, list[str]]):
        def generate(ids, prompts, n, seed_key):
            assert all(len(answers[i]) == n for i in ids)
            return [[SimpleNamespace(response_text=f"\\boxed{{{a}}}", finished=a != "cut") for a in answers[i]]
                    for i in ids]

        self.rollout = SimpleNamespace(generate=generate)
        self.verifier = SimpleNamespace(
            grade=lambda cs, gs, fs, questions=None: [grade(c, g, finished=f) for c, g, f in zip(cs, gs, fs)])


def test_measure_counts_correct_samples_and_writes_the_file(tmp_path, capsys):
    from launch.passrate import measure, to_passrate_config

    cfg = to_passrate_config(compose_passrate(["passrate.k=4", "passrate.batch_size=2"]))
    problems = _problems(3)  # golds "1", "2", "3"
    roles = _StandInRoles({"p0": ["1", "1", "1", "1"], "p1": ["2", "5", "cut", "2.0"], "p2": ["0"] * 4})
    report = measure(cfg, tmp_path, "stand-in", problems, {p.id: p.question for p in problems}, roles=roles)
    rates = read_pass_rates(tmp_path / "passrate.jsonl")
    assert [(r.id, r.correct, r.k, r.pass_rate) for r in rates.values()] == [
        ("p0", 4, 4, 1.0), ("p1", 2, 4, 0.5), ("p2", 0, 4, 0.0)]
    assert rates["p1"].question == problems[1].question
    saved = json.loads((tmp_path / "passrate.json").read_text())
    assert saved["problems"] == 3 and saved["mean_pass_rate"] == pytest.approx(0.5) == report["mean_pass_rate"]
    assert saved["truncated_frac"] == pytest.approx(1 / 12)
    assert [b["problems"] for b in saved["histogram"]] == [1, 0, 1, 0, 1]
    assert [b["after_rebalance"] for b in saved["histogram"]] == [6, 0, 4, 0, 0]
    assert "pass rate of 3 train problems, 4 samples each (mean 0.500)" in capsys.readouterr().out


@pytest.mark.e2e
@pytest.mark.slow
def test_passrate_tiny_model_through_engines_and_verifier(ray_cluster, e2e_cfg, tmp_path):
    """Real engines and verifier pool on a few arith problems: one row per problem, k samples
    each, readable by task.passrate_file, and the train split re-balanced by it."""
    import dataclasses

    from launch.eval import Benchmark, build_prompts
    from launch.passrate import measure, problems_and_policy, to_passrate_config

    cfg = to_passrate_config(compose_passrate([
        "passrate.k=4", "passrate.limit=6", "rollout.max_new_tokens=48", "verifier.num_workers=1",
        "model.warmup.steps=400", f"ray.temp_dir={CACHE / 'ray'}", f"output_dir={tmp_path}"]))
    assert cfg.model.warmup == e2e_cfg.model.warmup  # the shared e2e warm-up (cached)
    problems, model_path = problems_and_policy(cfg)
    assert len(problems) == 6
    prompts = build_prompts(cfg, model_path, [Benchmark("train", problems)])
    report = measure(cfg, tmp_path, model_path, problems, prompts)
    rates = read_pass_rates(tmp_path / "passrate.jsonl")
    assert list(rates) == [p.id for p in problems]
    assert all(r.k == 4 and 0 <= r.correct <= 4 for r in rates.values())
    assert report["perf"]["samples_per_s"] > 0 and sum(b["problems"] for b in report["histogram"]) == 6
    task = dataclasses.replace(cfg.task, passrate_file=str(tmp_path / "passrate.jsonl"))
    train = load_task(task).train
    assert len(train) == rebalance_counts(load_task(task, rebalanced=False).train,
                                          {i: r.pass_rate for i, r in rates.items()}).total_after
