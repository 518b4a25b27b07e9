"""Rows into problems: the question and gold answer of each row by the configured fields and
answer spec, bad rows skipped and named (the shared half of every loader in
`launch.data.benchmarks`: JSONL lines, Parquet and dataset rows, hub datasets)."""
from __future__ import annotations

import json
import logging
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
# Skipped rows named one per line in the loader's warning before "... and N more".
MAX_LISTED_ROWS = 10


class BadRow(ValueError):
    """One data row that cannot be a problem; its message starts with ``<file>:<line>:``."""


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
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise BadRow(f"{where}: not valid JSON ({e})") from None


def row_problem(row: Any, pid: str, spec: str, question_field: str, where: str,
                 max_question_chars: int) -> Problem:
    if not isinstance(row, dict):
        raise BadRow(f"{where}: row is not a JSON object (got {type(row).__name__})")
    problem = _problem(row, pid, spec, question_field, where)
    if len(problem.question) > max_question_chars:
        raise BadRow(f"{where}: question is {len(problem.question):,} characters, over "
                     f"task.max_question_chars={max_question_chars:,}")
    return problem


def usable(problems: list[Problem], skipped: list[str], source: str) -> list[Problem]:
    """Warn about skipped rows (the first MAX_LISTED_ROWS named); raise if none is usable."""
    listed = skipped[:MAX_LISTED_ROWS] + ([f"... and {len(skipped) - MAX_LISTED_ROWS} more"]
                                          if len(skipped) > MAX_LISTED_ROWS else [])
    if not problems:
        raise ValueError(f"{source}: no usable row ({len(skipped)} skipped"
                         + (": " + "; ".join(listed) if listed else ", the file is empty") + ")")
    if skipped:
        log.warning("%s: skipped %d bad row(s) of %d, loaded %d:\n  %s", source, len(skipped),
                    len(skipped) + len(problems), len(problems), "\n  ".join(listed))
    return problems


def _problem(row: dict[str, Any], pid: str, spec: str, question_field: str, where: str) -> Problem:
    return Problem(pid, _question(row, question_field, where), extract_answer(row, spec, where), None)


def _question(row: dict[str, Any], field: str, where: str) -> str:
    names = QUESTION_FIELDS if field == "auto" else (field,)
    for name in names:
        if isinstance(row.get(name), str) and row[name].strip():
            return row[name]
    raise BadRow(f"{where}: row has no question field {' or '.join(map(repr, names))} (or it is empty)")


def extract_answer(row: dict[str, Any], spec: str, where: str = "row") -> str:
    """The gold answer of one row according to `spec` (module docstring)."""
    kind, _, field = spec.rpartition(":")
    if kind not in ("", "boxed", "after_hashes", "join"):  # the config is wrong, not the row
        raise ValueError(f"unknown answer spec {spec!r} (task.answer_field; want field, boxed:, "
                         "after_hashes:, join:)")
    if field not in row or row[field] is None:
        raise BadRow(f"{where}: row has no answer field {field!r} (answer spec {spec!r})")
    value = row[field]
    if kind == "":
        answer = _plain(value)
    elif kind == "boxed":
        answer = last_boxed(str(value)) or ""
    elif kind == "after_hashes":
        text = str(value)
        answer = text.rsplit("####", 1)[1].replace(",", "").strip() if "####" in text else ""
    elif kind == "join":
        items = value if isinstance(value, list) else [value]
        # OlympiadBench packs several answers into one string too ("$69$,$84$").
        answer = ", ".join(_DOLLAR.sub("", str(v)).strip() for v in items)
    else:
        raise ValueError(f"unknown answer spec {spec!r} (want field, boxed:, after_hashes:, join:)")
    if not answer.strip():
        raise BadRow(f"{where}: empty answer from field {field!r} (answer spec {spec!r})")
    return answer.strip()


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
    from verifier.extract import match_brace  # the verifier's brace matching: escaped braces do not group

    start = text.rfind("\\boxed{")
    while start != -1:
        opening = start + len("\\boxed")
        close = match_brace(text, opening)
        if close != -1:
            return text[opening + 1 : close]
        start = text.rfind("\\boxed{", 0, start)  # unbalanced: try the one before
    return None
