"""Synthetic arithmetic task, benchmark JSONL loader and prompt format."""
import json
import re

import pytest

from conftest import FIXTURE_BENCHMARKS
from launch.data import benchmarks
from launch.data.benchmarks import (
    BENCHMARKS_ENV,
    PRESETS,
    SHARED_BENCHMARKS_DIR,
    last_boxed,
    load_benchmark,
    load_jsonl_problems,
)
from launch.data.tasks import TaskConfig, build_prompt, load_task, make_arith_problems

STEP = re.compile(r"(-?\d+) ([+-]) (\d+) = (-?\d+)\.")


def test_arith_is_deterministic():
    cfg = TaskConfig(num_train=300, num_heldout=50, seed=3)
    assert make_arith_problems(cfg) == make_arith_problems(cfg)
    assert make_arith_problems(cfg) != make_arith_problems(TaskConfig(num_train=300, num_heldout=50, seed=4))


def test_arith_splits_are_disjoint_and_sized():
    train, heldout = load_task(TaskConfig(num_train=1000, num_heldout=200))
    assert len(train) == 1000 and len(heldout) == 200
    assert not {p.question for p in train} & {p.question for p in heldout}
    assert len({p.question for p in train}) == 1000
    assert len({p.id for p in train + heldout}) == 1200
    # The held-out split is drawn first: it does not move when the train split grows.
    assert make_arith_problems(TaskConfig(num_train=10, num_heldout=200)).heldout == heldout


@pytest.mark.parametrize("cfg", [
    TaskConfig(num_train=500, num_heldout=0),
    TaskConfig(num_train=500, num_heldout=0, min_operands=3, max_operands=5, min_digits=2, max_digits=3),
    TaskConfig(num_train=500, num_heldout=0, operators="-", allow_negative=True),
])
def test_worked_solutions_are_right(cfg):
    for p in make_arith_problems(cfg).train:
        expr = re.fullmatch(r"Compute (.*)\.", p.question).group(1)
        assert str(eval(expr)) == p.answer, p  # + and - only: left to right is standard order
        assert p.solution.endswith(f"The answer is \\boxed{{{p.answer}}}.")
        assert last_boxed(p.solution) == p.answer
        steps = STEP.findall(p.solution)
        numbers = [int(x) for x in re.findall(r"\d+", expr)]
        assert len(steps) == len(numbers) - 1
        assert cfg.min_operands <= len(numbers) <= cfg.max_operands
        assert all(cfg.min_digits <= len(str(n)) <= cfg.max_digits for n in numbers)
        running = numbers[0]
        for (a, op, b, c), n in zip(steps, numbers[1:]):
            assert int(a) == running and int(b) == n
            assert int(c) == (int(a) + int(b) if op == "+" else int(a) - int(b))
            running = int(c)
            assert cfg.allow_negative or running >= 0
        assert str(running) == p.answer


@pytest.mark.parametrize("slip", [0.5, 1.0])
def test_teacher_slips_only_on_carries_and_never_recovers(slip):
    """The warm-up teacher is one too low on a slipped carry/borrow step; the problems and
    gold answers do not depend on the slip rate, and a slipped solution ends wrong."""
    clean = make_arith_problems(TaskConfig(num_train=500, num_heldout=0, max_digits=2))
    slipped = make_arith_problems(TaskConfig(num_train=500, num_heldout=0, max_digits=2, teacher_slip=slip))
    assert [(p.question, p.answer) for p in clean.train] == [(p.question, p.answer) for p in slipped.train]
    n_slipped = 0
    for p in slipped.train:
        steps = STEP.findall(p.solution)
        any_slip = False
        for a, op, b, c in steps:
            a, b, c = int(a), int(b), int(c)
            right = a + b if op == "+" else a - b
            carry = (a % 10 + b % 10 >= 10) if op == "+" else (a % 10 < b % 10)
            assert c in ((right, right - 1) if carry else (right,)), p
            if slip == 1.0:
                assert c == (right - 1 if carry else right), p
            any_slip |= c != right
        assert (last_boxed(p.solution) != p.answer) == any_slip, p
        n_slipped += any_slip
    # The chance of slipping shows in the data (about half the problems carry somewhere).
    assert 0.1 * slip < n_slipped / len(slipped.train) < 0.9 * slip + 0.1


def test_arith_reports_too_few_distinct_problems():
    with pytest.raises(ValueError, match="distinct"):
        make_arith_problems(TaskConfig(num_train=300, num_heldout=0, max_operands=2, max_digits=1))


@pytest.mark.parametrize("bad, key", [
    (dict(name="gsm"), "task.name"),
    (dict(name="jsonl"), "task.path"),
    (dict(min_operands=1), "min_operands"),
    (dict(teacher_slip=1.5), "teacher_slip"),
    (dict(min_digits=3, max_digits=2), "min_digits"),
    (dict(operators="+*"), "operators"),
])
def test_config_errors_name_the_key(bad, key):
    with pytest.raises(ValueError, match=key):
        TaskConfig(**bad)


# ---- presets on the hand-written fixtures (tests/fixtures/benchmarks): any clone -------
FIXTURE_GOLDS = {
    "math500": ["\\frac{3}{4}", "\\left( 2, \\frac{\\pi}{2} \\right)", "\\{1, 2\\}"],
    "math_test_full": ["2", "\\frac{3}{4}", "3", "1{,}024"],  # the LAST box of the solution
    "minerva_math": ["1.6", "1 \\times 10^{3}"],
    "gsm8k_test": ["9", "150000"],  # after "####", commas removed
    "olympiadbench": ["2", "69,84", "x=1, y=\\$2"],  # "$" of math mode removed, "\\$" kept
    "aime24": ["024", "9"],
    "aime25": ["70", "588"],
    "amc23": ["27", "0.5"],  # stored as floats: 27.0 is written 27
}


def test_fixtures_cover_every_preset():
    assert set(FIXTURE_GOLDS) == set(PRESETS)


@pytest.mark.parametrize("name, golds", FIXTURE_GOLDS.items())
def test_every_preset_answer_rule(name, golds):
    problems = load_benchmark(name, FIXTURE_BENCHMARKS)
    assert [p.answer for p in problems] == golds
    assert all(p.question.strip() for p in problems)
    assert [p.id for p in problems] == [f"{name}-{i}" for i in range(1, len(golds) + 1)]


def test_math500_answer_field_agrees_with_its_last_box():
    boxed = load_jsonl_problems(FIXTURE_BENCHMARKS / "math500.jsonl", answer_field="boxed:solution")
    assert [p.answer for p in boxed] == FIXTURE_GOLDS["math500"]


def test_training_set_excludes_a_benchmark_by_question():
    splits = load_task(TaskConfig(name="jsonl", path="math_test_full", exclude_path="math500",
                                  benchmarks_dir=str(FIXTURE_BENCHMARKS), num_train=0, num_heldout=1))
    kept = {p.question for p in splits.train + splits.heldout}
    assert len(kept) == 3 and "Write $\\frac{6}{8}$ in lowest terms." not in kept


def test_benchmarks_dir_order(monkeypatch, tmp_path):
    """task.benchmarks_dir, else $OREAL_BENCHMARKS, else ../shared/data/benchmarks."""
    monkeypatch.delenv(BENCHMARKS_ENV, raising=False)
    assert benchmarks.benchmarks_dir() == SHARED_BENCHMARKS_DIR
    assert SHARED_BENCHMARKS_DIR.parts[-3:] == ("shared", "data", "benchmarks")
    monkeypatch.setenv(BENCHMARKS_ENV, str(FIXTURE_BENCHMARKS))
    assert benchmarks.benchmarks_dir() == FIXTURE_BENCHMARKS
    assert [p.answer for p in load_benchmark("aime25")] == FIXTURE_GOLDS["aime25"]
    assert benchmarks.benchmarks_dir(tmp_path) == tmp_path


def test_missing_preset_offline_names_folder_key_and_source(monkeypatch, tmp_path):
    monkeypatch.setattr(benchmarks, "hub_offline", lambda: True)
    with pytest.raises(FileNotFoundError) as e:
        load_task(TaskConfig(name="jsonl", path="math500", benchmarks_dir=str(tmp_path)))
    msg = str(e.value)
    for part in (str(tmp_path / "math500.jsonl"), "task.benchmarks_dir", BENCHMARKS_ENV,
                 "HF_HUB_OFFLINE", "HuggingFaceH4/MATH-500"):
        assert part in msg


class _FakeHub:
    """Stands in for `datasets.load_dataset` (no hub here): records what was asked."""

    def __init__(self, rows=None, error=None):
        self.calls, self.rows, self.error = [], rows, error

    def __call__(self, repo, config=None, split=None):
        self.calls.append((repo, config, split))
        if self.error:
            raise self.error
        return self.rows[config]


def test_missing_preset_is_fetched_from_its_hub_source(monkeypatch, tmp_path):
    import datasets

    rows = {c: [{"problem": f"{c} problem?", "solution": f"so \\boxed{{{i}}}"}]
            for i, c in enumerate(PRESETS["math_test_full"].hub_configs)}
    hub = _FakeHub(rows)
    monkeypatch.setattr(benchmarks, "hub_offline", lambda: False)
    monkeypatch.setattr(datasets, "load_dataset", hub)
    problems = load_benchmark("math_test_full", tmp_path)
    assert [c[0] for c in hub.calls] == ["EleutherAI/hendrycks_math"] * 7
    assert {c[2] for c in hub.calls} == {"test"}
    assert [p.answer for p in problems] == [str(i) for i in range(7)]
    hub.rows = {"main": [{"question": "Q?", "answer": "work\n#### 1,234"}]}
    assert load_benchmark("gsm8k_test", tmp_path)[0].answer == "1234"
    assert hub.calls[-1] == ("openai/gsm8k", "main", "test")


def test_failed_hub_fetch_names_folder_and_key(monkeypatch, tmp_path):
    import datasets

    monkeypatch.setattr(benchmarks, "hub_offline", lambda: False)
    monkeypatch.setattr(datasets, "load_dataset", _FakeHub(error=ConnectionError("no route")))
    monkeypatch.setenv(BENCHMARKS_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"aime24.*HuggingFaceH4/aime_2024.*no route.*task.benchmarks_dir"):
        load_benchmark("aime24")


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="math500"):
        load_benchmark("not_a_benchmark")


# ---- the full files (../shared/data/benchmarks or $OREAL_BENCHMARKS): skip when absent ---
# Row counts from ../shared/data/README.md.
BENCHMARK_ROWS = {
    "math500": 500, "math_test_full": 5000, "aime24": 30, "aime25": 30, "amc23": 40,
    "gsm8k_test": 1319, "olympiadbench": 675, "minerva_math": 272,
}


@pytest.mark.parametrize("name, rows", BENCHMARK_ROWS.items())
def test_every_benchmark_loads(full_benchmarks, name, rows):
    problems = load_benchmark(name, full_benchmarks)
    assert len(problems) == rows
    assert all(p.question.strip() and p.answer.strip() for p in problems)
    if name == "olympiadbench":
        assert not any("$" in p.answer for p in problems)
    assert len({p.id for p in problems}) == rows


def test_benchmark_answer_rules(full_benchmarks):
    first = {name: load_benchmark(name, full_benchmarks)[0].answer for name in BENCHMARK_ROWS}
    assert first["gsm8k_test"] == "18"
    assert first["amc23"] == "27"  # stored as 27.0
    assert first["math_test_full"] == "2"
    assert first["olympiadbench"] == "2"  # ["2"] in final_answer
    assert first["minerva_math"] == "1.6"
    assert first["math500"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert first["aime24"] == "204"
    assert all("," not in p.answer for p in load_benchmark("gsm8k_test", full_benchmarks))
    olympiad = {p.answer for p in load_benchmark("olympiadbench", full_benchmarks)}
    assert "69,84" in olympiad  # stored as ["$69$,$84$"]
    # Brace matching agrees with MATH-500's own answer field on every one of its rows.
    math500 = load_jsonl_problems(full_benchmarks / "math500.jsonl", answer_field="boxed:solution")
    assert [p.answer for p in math500] == [p.answer for p in load_benchmark("math500", full_benchmarks)]


def test_math_train_set_excludes_math500(full_benchmarks):
    splits = load_task(TaskConfig(name="jsonl", path="math_test_full", exclude_path="math500",
                                  benchmarks_dir=str(full_benchmarks), num_train=0, num_heldout=100))
    assert len(splits.train) + len(splits.heldout) == 4500


def test_last_boxed_matches_braces():
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{a}{b}} c") == "\\frac{a}{b}"
    assert last_boxed("$\\boxed{\\{1, 2\\}}$") == "\\{1, 2\\}"
    assert last_boxed("\\boxed{\\left\\{ x \\right.}") == "\\left\\{ x \\right."  # \\{ does not group
    assert last_boxed("\\boxed{2} then \\boxed{3") == "2"
    assert last_boxed("no box") is None


def test_missing_file_error_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_jsonl_problems(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_task(TaskConfig(name="jsonl", path="x.jsonl", benchmarks_dir=str(tmp_path)))


def test_row_errors_name_file_and_line(tmp_path, caplog):
    """A bad row is skipped and named (file:line, why) in a warning; only a file with no
    usable row raises, naming the file and its rows' reasons."""
    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n"
                 + json.dumps({"problem": "2+2?", "solution": "four"}) + "\n")
    with caplog.at_level("WARNING", logger="oreal"):
        problems = load_jsonl_problems(f)
    assert [p.id for p in problems] == ["mine-1"]
    assert re.search(r"mine\.jsonl:2: .*'answer'", caplog.text) and "skipped 1 bad row(s) of 2" in caplog.text
    with pytest.raises(ValueError, match=r"mine\.jsonl: no usable row .*mine\.jsonl:1.*empty answer"):
        load_jsonl_problems(f, answer_field="boxed:answer")
    with pytest.raises(ValueError, match=r"mine\.jsonl:1.*question"):
        load_jsonl_problems(f, question_field="prompt")
    f.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"mine\.jsonl:1.*JSON"):
        load_jsonl_problems(f)


def test_jsonl_task_split(tmp_path):
    f = tmp_path / "qa.jsonl"
    f.write_text("".join(json.dumps({"question": f"q{i}", "answer": i}) + "\n" for i in range(10)))
    splits = load_task(TaskConfig(name="jsonl", path=str(f), num_train=0, num_heldout=3))
    assert len(splits.heldout) == 3 and len(splits.train) == 7
    assert {p.answer for p in splits.train + splits.heldout} == {str(i) for i in range(10)}
    assert splits == load_task(TaskConfig(name="jsonl", path=str(f), num_train=0, num_heldout=3))
    with pytest.raises(ValueError, match="num_heldout"):
        load_task(TaskConfig(name="jsonl", path=str(f), num_heldout=11))


class _StubTokenizer:
    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "|".join(f"{m['role']}:{m['content']}" for m in messages) + "|assistant:"


def test_build_prompt_uses_the_chat_template():
    assert build_prompt(_StubTokenizer(), "Q?", "Think.") == "system:Think.|user:Q?|assistant:"
    assert build_prompt(_StubTokenizer(), "Q?", "") == "user:Q?|assistant:"


def test_operands_zipf_draws_a_long_tail_of_long_problems():
    """task.operands_zipf: mostly short problems, a few near max_operands (conf/task/arith_long_tail.yaml)."""
    from launch.data.tasks import TaskConfig, make_arith_problems

    def counts(cfg):
        return sorted(p.question.count(" + ") + p.question.count(" - ") + 1 for p in make_arith_problems(cfg).train)

    uniform = counts(TaskConfig(min_operands=2, max_operands=40, num_train=1000, num_heldout=10))
    tail = counts(TaskConfig(min_operands=2, max_operands=40, operands_zipf=2.0, num_train=1000, num_heldout=10))
    assert 2 <= tail[0] and tail[-1] <= 40
    assert tail[len(tail) // 2] <= 5 < uniform[len(uniform) // 2]  # the median problem is short
    assert tail[int(0.99 * len(tail))] >= 6 * tail[len(tail) // 2]  # and the tail is long
    with pytest.raises(ValueError, match="operands_zipf"):
        TaskConfig(operands_zipf=-1.0)
