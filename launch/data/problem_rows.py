"""Rows into problems: the question and gold answer of each row by the configured fields and
answer spec, bad rows skipped and named (the shared half of every loader in
`launch.data.benchmarks`: JSONL lines, Parquet and dataset rows, hub datasets).

Rows are untrusted text: whatever one row holds (broken JSON, a number too long for `int()`,
nesting past the recursion limit, an empty or over-long field) makes it a `BadRow`, skipped and
named, never an exception that stops the whole load."""
from __future__ import annotations

import json
import logging
import math
import re
from typing import Any, Iterable

from launch.data.problem import Problem

log = logging.getLogger("oreal")

# Question fields tried in order when `question_field` is "auto".
QUESTION_FIELDS = ("problem", "question")
_DOLLAR = re.compile(r"(?<!\\)\$")
# Default of task.max_question_chars: a question longer than this is a broken row (a dump,
# a whole document), skipped like any other bad row.
MAX_QUESTION_CHARS = 20_000
# Longest gold answer (the extracted text; the presets' longest is about 220 characters): a
# longer one is a broken row (a whole solution in the answer field, a runaway number).
MAX_ANSWER_CHARS = 1_000
# Longest text an answer is extracted from by a `boxed:` or `after_hashes:` spec (a worked
# solution; the presets' longest is about 12,000 characters).
MAX_SOLUTION_CHARS = 50_000
# Longest JSONL line read (bytes): a row is its question, answer and solution, each capped
# above, plus metadata; a longer line is skipped without being held in memory whole.
MAX_LINE_BYTES = 4 << 20
# Skipped rows named one per line in the loader's warning before "... and N more".
MAX_LISTED_ROWS = 10
# Skipped rows named in the one-line error of a load with no usable row (it must stay readable).
MAX_ERROR_ROWS = 3


class BadRow(ValueError):
    """One data row that cannot be a problem; its message starts with ``<file>:<line>:``."""


class NumberText(str):
    """A JSON number kept as its text: an integer past Python's int-string limit (4,300
    digits, where `int()` raises) or a float past float's range (which would read as inf).
    As an answer it is its digits; it is never a question (the question must be a string)."""


def problems_from_rows(rows: Iterable[dict[str, Any]], stem: str, answer_spec: str,
                       question_field: str = "auto", source: str = "rows",
                       max_question_chars: int = MAX_QUESTION_CHARS) -> list[Problem]:
    """Problems from dict rows (hub datasets); ids are ``<stem>-<row number from 1>``. Bad
    rows are skipped and listed as in `load_jsonl_problems`."""
    problems, skipped = [], []
    for i, row in enumerate(rows, start=1):
        try:
            problems.append(row_problem(row, f"{stem}-{i}", answer_spec, question_field, f"{source} row {i}",
                                         max_question_chars))
        except BadRow as e:
            skipped.append(str(e))
    return usable(problems, skipped, source)


def json_row(line: str, where: str) -> Any:
    """One JSONL line parsed. BadRow naming `where` when it is not JSON or is nested past the
    recursion limit. An integer `int()` refuses (over 4,300 digits) or a float past float's range
    is kept as `NumberText`: such a value costs at most its own row (as an answer it is over
    MAX_ANSWER_CHARS), not the whole load."""
    try:
        return json.loads(line, parse_int=_int, parse_float=_float)
    except json.JSONDecodeError as e:
        raise BadRow(f"{where}: not valid JSON ({e})") from None
    except RecursionError:
        raise BadRow(f"{where}: nested too deeply to parse (past Python's recursion limit)") from None


def _int(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:  # over sys.get_int_max_str_digits()
        return NumberText(text)


def _float(text: str) -> float | str:
    value = float(text)
    return value if math.isfinite(value) else NumberText(text)


def row_problem(row: Any, pid: str, spec: str, question_field: str, where: str,
                 max_question_chars: int) -> Problem:
    if not isinstance(row, dict):
        raise BadRow(f"{where}: row is not a JSON object (got {type(row).__name__})")
    try:
        problem = _problem(row, pid, spec, question_field, where)
    except RecursionError:  # a value nested deeper than str() can walk (a hub row, a join: list)
        raise BadRow(f"{where}: a field is nested too deeply to read") from None
    if len(problem.question) > max_question_chars:
        raise BadRow(f"{where}: question is {len(problem.question):,} characters, over "
                     f"task.max_question_chars={max_question_chars:,}")
    return problem


def usable(problems: list[Problem], skipped: list[str], source: str) -> list[Problem]:
    """Warn about skipped rows (the first MAX_LISTED_ROWS named); raise if none is usable,
    naming `source` and the first MAX_ERROR_ROWS reasons."""
    if not problems:
        named = _first(skipped, MAX_ERROR_ROWS)
        raise ValueError(f"{source}: no usable row ({len(skipped)} skipped"
                         + (": " + "; ".join(named) if named else ", the file is empty") + ")")
    if skipped:
        log.warning("%s: skipped %d bad row(s) of %d, loaded %d:\n  %s", source, len(skipped),
                    len(skipped) + len(problems), len(problems), "\n  ".join(_first(skipped, MAX_LISTED_ROWS)))
    return problems


def _first(skipped: list[str], n: int) -> list[str]:
    return skipped[:n] + ([f"... and {len(skipped) - n} more"] if len(skipped) > n else [])


def _problem(row: dict[str, Any], pid: str, spec: str, question_field: str, where: str) -> Problem:
    return Problem(pid, _question(row, question_field, where), extract_answer(row, spec, where), None)


def _question(row: dict[str, Any], field: str, where: str) -> str:
    names = QUESTION_FIELDS if field == "auto" else (field,)
    for name in names:
        value = row.get(name)
        if isinstance(value, str) and not isinstance(value, NumberText) and value.strip():
            return value
    raise BadRow(f"{where}: row has no question field {' or '.join(map(repr, names))} (or it is empty)")


def extract_answer(row: dict[str, Any], spec: str, where: str = "row") -> str:
    """The gold answer of one row according to `spec` (`launch.data.benchmarks` docstring);
    BadRow when it is missing, empty, over MAX_ANSWER_CHARS, or extracted from a field over
    MAX_SOLUTION_CHARS."""
    kind, _, field = spec.rpartition(":")
    if kind not in ("", "boxed", "after_hashes", "join"):  # the config is wrong, not the row
        raise ValueError(f"unknown answer spec {spec!r} (task.answer_field; want field, boxed:, "
                         "after_hashes:, join:)")
    if field not in row or row[field] is None:
        raise BadRow(f"{where}: row has no answer field {field!r} (answer spec {spec!r})")
    value = row[field]
    if kind == "":
        if isinstance(value, (bool, dict, list, tuple)):  # str() of these is no gold: "[1, 2]" reads as an interval
            hint = f" (answer spec join:{field} joins a list)" if isinstance(value, (list, tuple)) else ""
            raise BadRow(f"{where}: answer field {field!r} holds a {type(value).__name__}, not a number or text{hint}")
        answer = _plain(value)
    elif kind == "boxed":
        answer = last_boxed(_solution(value, field, where)) or ""
    elif kind == "after_hashes":
        text = _solution(value, field, where)
        answer = text.rsplit("####", 1)[1].replace(",", "").strip() if "####" in text else ""
    elif kind == "join":
        items = value if isinstance(value, list) else [value]
        # OlympiadBench packs several answers into one string too ("$69$,$84$").
        answer = ", ".join(_DOLLAR.sub("", str(v)).strip() for v in items)
    else:
        raise ValueError(f"unknown answer spec {spec!r} (want field, boxed:, after_hashes:, join:)")
    answer = answer.strip()
    if not answer:
        raise BadRow(f"{where}: empty answer from field {field!r} (answer spec {spec!r})")
    if len(answer) > MAX_ANSWER_CHARS:
        raise BadRow(f"{where}: answer from field {field!r} is {len(answer):,} characters, over the "
                     f"{MAX_ANSWER_CHARS:,} a gold answer may have")
    return answer


def _solution(value: Any, field: str, where: str) -> str:
    text = str(value)
    if len(text) > MAX_SOLUTION_CHARS:
        raise BadRow(f"{where}: field {field!r} is {len(text):,} characters, over the "
                     f"{MAX_SOLUTION_CHARS:,} a solution may have")
    return text


def _plain(value: Any) -> str:
    # AMC answers are stored as floats (27.0): integral floats are written as integers.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` in `text`, braces matched; None if there is none.

    >>> last_boxed(r"so $\\boxed{\\frac{1}{2}}$ and not \\boxed{3")
    '\\\\frac{1}{2}'
    """
    from verifier.extract import brace_pairs  # the verifier's brace matching: escaped braces do not group

    start = text.rfind("\\boxed{")
    pairs = brace_pairs(text) if start != -1 else {}  # one pass: many unclosed boxes stay linear
    while start != -1:
        opening = start + len("\\boxed")
        close = pairs.get(opening, -1)
        if close != -1:
            return text[opening + 1 : close]
        start = text.rfind("\\boxed{", 0, start)  # unbalanced: try the one before
    return None


def capped_lines(f, limit: int = MAX_LINE_BYTES):
    """(line number, bytes or None) for each line of the binary file `f`; None for a line over
    `limit` bytes, which is read past in chunks, never held whole."""
    line_no = 0
    while True:
        raw = f.readline(limit + 1)
        if not raw:
            return
        line_no += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            while (chunk := f.readline(1 << 20)) and not chunk.endswith(b"\n"):
                pass
            yield line_no, None
        else:
            yield line_no, raw
