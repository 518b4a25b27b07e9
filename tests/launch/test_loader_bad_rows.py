"""Untrusted data rows cost at most themselves: a 5,000-digit number, nesting 10,000 deep, a
line that is not JSON, a missing or over-long answer, an over-long solution are each skipped
and named (`file:line: why`) in one warning while the good rows load; a file with nothing
usable is one error naming the file and its first reasons."""
from __future__ import annotations

import json
import logging

import pytest

from launch.data.benchmarks import (
    MAX_ANSWER_CHARS,
    MAX_SOLUTION_CHARS,
    load_jsonl_problems,
    load_problems,
    problems_from_rows,
    read_jsonl_problems,
)
from launch.data.problem_rows import MAX_ERROR_ROWS
from launch.data.tasks import TaskConfig, load_task

HUGE_INT = "9" * 5000  # past Python's 4,300-digit int-string limit
DEEP = "[" * 10_000 + "]" * 10_000  # past the recursion limit of json's decoder


def _good(i: int) -> str:
    return json.dumps({"problem": f"Compute {i} + 1.", "answer": str(i + 1)})


# line -> (text, the reason it is skipped; None: loads)
LINES = {
    1: (_good(1), None),
    2: ('{"problem": "Big?", "answer": %s}' % HUGE_INT, "answer from field 'answer' is 5,000 characters"),
    3: ('{"problem": "Deep?", "answer": "1", "meta": %s}' % DEEP, "nested too deeply"),
    4: ("this is not JSON", "not valid JSON"),
    5: (json.dumps({"problem": "No answer?"}), "no answer field 'answer'"),
    6: (json.dumps({"problem": "Long?", "answer": "7" * (MAX_ANSWER_CHARS + 1)}),
        f"is {MAX_ANSWER_CHARS + 1:,} characters, over the {MAX_ANSWER_CHARS:,} a gold answer may have"),
    7: (_good(7), None),
    8: ('{"problem": "Big meta?", "answer": "8", "id": %s}' % HUGE_INT, None),  # a number it does not use
    9: ('{"problem": %s, "answer": "9"}' % HUGE_INT, "no question field"),  # a number is no question
    10: (json.dumps({"problem": "Deep answer?", "answer": "[" * 50 + "]" * 50}), None),
    11: ('{"problem": "Far?", "answer": 1e400}', None),  # past float's range: its text, not inf
}


def _write(tmp_path, lines=LINES, name="mixed.jsonl"):
    f = tmp_path / name
    f.write_text("".join(text + "\n" for text, _ in lines.values()))
    return f


def test_good_rows_load_and_each_bad_one_is_named_with_its_reason(tmp_path):
    f = _write(tmp_path)
    problems, skipped = read_jsonl_problems(f)
    assert [p.id for p in problems] == [f"mixed-{n}" for n, (_, why) in LINES.items() if why is None]
    assert [p.answer for p in problems] == ["2", "8", "8", "[" * 50 + "]" * 50, "1e400"]
    bad = {n: why for n, (_, why) in LINES.items() if why is not None}
    assert len(skipped) == len(bad)
    for (n, why), reason in zip(bad.items(), skipped):
        assert reason.startswith(f"{f}:{n}: ") and why in reason, reason
        assert "\n" not in reason and len(reason) < 300, reason


def test_one_warning_lists_the_bad_rows(tmp_path, caplog):
    f = _write(tmp_path)
    with caplog.at_level(logging.WARNING, logger="oreal"):
        problems = load_jsonl_problems(f)
    assert len(problems) == 5
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    lines = record.getMessage().splitlines()
    assert lines[0] == f"{f}: skipped 6 bad row(s) of 11, loaded 5:"
    assert [int(x.strip().split(":")[1]) for x in lines[1:]] == [2, 3, 4, 5, 6, 9]


def test_the_task_loader_skips_them_too(tmp_path):
    f = _write(tmp_path)
    splits = load_task(TaskConfig(name="jsonl", path=str(f), num_heldout=1, num_train=0))
    assert len(splits.heldout) + len(splits.train) == 5


def test_an_over_long_solution_is_skipped_before_its_answer_is_looked_for(tmp_path):
    f = tmp_path / "sol.jsonl"
    f.write_text(json.dumps({"problem": "p", "solution": "so \\boxed{1}"}) + "\n"
                 + json.dumps({"problem": "q", "solution": "x" * MAX_SOLUTION_CHARS + " \\boxed{2}"}) + "\n")
    problems, skipped = read_jsonl_problems(f, answer_field="boxed:solution")
    assert [p.answer for p in problems] == ["1"]
    assert skipped == [f"{f}:2: field 'solution' is {MAX_SOLUTION_CHARS + 10:,} characters, over the "
                       f"{MAX_SOLUTION_CHARS:,} a solution may have"]


def test_all_bad_is_one_error_naming_the_file_and_the_first_reasons(tmp_path):
    f = _write(tmp_path, {n: v for n, v in LINES.items() if v[1] is not None and n != 9}, name="bad.jsonl")
    with pytest.raises(ValueError) as err:
        load_jsonl_problems(f)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"{f}: no usable row (5 skipped: {f}:1: answer from field 'answer' is 5,000 characters")
    assert f"{f}:2: nested too deeply" in text and f"{f}:3: not valid JSON" in text
    assert f"... and {5 - MAX_ERROR_ROWS} more)" in text and f"{f}:4:" not in text
    with pytest.raises(ValueError, match=r"bad\.jsonl: no usable row"):  # through the preset/path loader
        load_problems(str(f))


def test_hub_rows_with_deep_or_long_values_are_named_by_dataset_and_row(caplog):
    deep: list = []
    for _ in range(5_000):  # parsed already (a hub row), but deeper than str() can walk
        deep = [deep]
    rows = [{"problem": "p", "answer": "1"}, {"problem": "q", "answer": deep},
            {"problem": "r", "answer": "x" * (MAX_ANSWER_CHARS + 1)}]
    with caplog.at_level(logging.WARNING, logger="oreal"):
        problems = problems_from_rows(rows, "hub", "join:answer", source="org/data")
    assert [p.id for p in problems] == ["hub-1"]
    assert "org/data row 2: a field is nested too deeply to read" in caplog.text
    assert f"org/data row 3: answer from field 'answer' is {MAX_ANSWER_CHARS + 1:,} characters" in caplog.text


@pytest.mark.parametrize("value,named", [([1, 2], "holds a list, not a number or text (answer spec join:answer "
                                                   "joins a list)"),
                                         (True, "holds a bool"), ({"a": 1}, "holds a dict")])
def test_a_plain_answer_field_holding_a_container_is_a_bad_row(caplog, value, named):
    # str() would make golds of them: "[1, 2]" reads as an interval, "True" as a symbol
    rows = [{"problem": "p", "answer": "1"}, {"problem": "q", "answer": value}]
    with caplog.at_level(logging.WARNING, logger="oreal"):
        problems = problems_from_rows(rows, "hub", "answer", source="org/data")
    assert [p.id for p in problems] == ["hub-1"]
    assert f"org/data row 2: answer field 'answer' {named}" in caplog.text


def test_a_pass_rate_file_skips_such_lines_too(tmp_path, caplog):
    from launch.data.rebalance import read_pass_rates

    f = tmp_path / "passrate.jsonl"
    f.write_text('{"id": "a", "k": 4, "correct": 1}\n'
                 '{"id": "b", "k": %s, "correct": 1}\n' % HUGE_INT
                 + '{"id": "c", "k": 4, "correct": 1, "x": %s}\n' % DEEP)
    with caplog.at_level(logging.WARNING, logger="oreal"):
        assert list(read_pass_rates(f)) == ["a"]
    assert f"{f}:2: Exceeds the limit (4300 digits)" in caplog.text and f"{f}:3: maximum recursion depth" in caplog.text


def test_a_line_over_the_byte_cap_is_skipped_without_reading_it_whole(tmp_path, caplog, monkeypatch):
    from launch.data.problem_rows import capped_lines

    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\n".join([_good(1).encode(), b'{"problem": "' + b"x" * 200 + b'", "answer": "1"}',
                                 _good(3).encode()]) + b"\n")
    with path.open("rb") as f:
        got = list(capped_lines(f, limit=100))
    assert [(n, raw is None) for n, raw in got] == [(1, False), (2, True), (3, False)]
    import launch.data.benchmarks as b

    monkeypatch.setattr(b, "MAX_LINE_BYTES", 100)
    with caplog.at_level(logging.WARNING, logger="oreal"):
        problems = b.load_jsonl_problems(path)
    assert [p.id for p in problems] == ["big-1", "big-3"]
    assert f"{path}:2: line over 100 bytes" in caplog.text
