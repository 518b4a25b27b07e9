"""Benchmark problems: the presets (MATH-500, AIME, AMC, GSM8K, OlympiadBench, Minerva) and
the one loader behind them.

A bare preset name (``"math500"``) is looked for as ``<folder>/math500.jsonl``, the folder
being, first found of:

1. ``task.benchmarks_dir`` (config key),
2. ``$OREAL_BENCHMARKS`` (environment variable),
3. ``../shared/data/benchmarks`` beside the repository (our machines and CI have it; a
   user's clone does not).

When the file is not there and the hub is reachable (``HF_HUB_OFFLINE`` unset), the preset's
public source is fetched by name with ``datasets`` (cached under ``HF_HOME``); otherwise the
error names the folder searched and the key and variable that set it. Anything with a ``/``
or a ``.jsonl`` suffix is a path of the user's own: a JSONL file, a Parquet file
(``.parquet``) or a Hugging Face dataset folder written by ``save_to_disk``, all read into the
same problems (`load_table_problems`).

Each preset knows where its gold answer is (``answer_spec`` grammar: ``"<field>"``, the
value itself with integral floats such as 27.0 written ``27``; ``"boxed:<field>"``, the last
brace-matched ``\\boxed{}`` in the field; ``"after_hashes:<field>"``, the text after the
last ``####`` with commas removed; ``"join:<field>"``, a list joined with ``", "`` and
math-mode ``$`` removed).

Bad rows never stop a run: a row that is not UTF-8, not JSON, not an object, has no question
or no answer, or whose question is over ``task.max_question_chars`` is skipped, and the
loader warns once, naming each skipped row's file and line (the first few, then a count).
Only a file with no usable row at all is an error (naming the file).
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from launch.problem import Problem

# Environment variable that points every loader and test at a folder of benchmark files.
BENCHMARKS_ENV = "OREAL_BENCHMARKS"
# Where our machines and CI keep the read-only copies (`../shared/data/README.md`).
SHARED_BENCHMARKS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"
# Question fields tried in order when `question_field` is "auto".
QUESTION_FIELDS = ("problem", "question")
_DOLLAR = re.compile(r"(?<!\\)\$")
# Default of task.max_question_chars: a question longer than this is a broken row (a dump,
# a whole document), skipped like any other bad row.
MAX_QUESTION_CHARS = 20_000
# Skipped rows named one per line in the loader's warning before "... and N more".
MAX_LISTED_ROWS = 10

log = logging.getLogger("oreal")


class BadRow(ValueError):
    """One data row that cannot be a problem; its message starts with ``<file>:<line>:``."""


@dataclass(frozen=True)
class Preset:
    """A named benchmark: how its local JSONL keeps the gold answer, and its public source."""

    # Gold answer spec of the local copy (`../shared/data/README.md`).
    answer_spec: str
    # Hub dataset, its configs (concatenated in order; () = the default) and split.
    hub_repo: str
    hub_split: str
    hub_configs: tuple[str, ...] = ()
    # Gold answer spec of the hub rows (they may keep it elsewhere than the local copy).
    hub_answer_spec: str = "answer"


_MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                  "number_theory", "prealgebra", "precalculus")
PRESETS: dict[str, Preset] = {
    "math500": Preset("answer", "HuggingFaceH4/MATH-500", "test"),
    "math_test_full": Preset("boxed:solution", "EleutherAI/hendrycks_math", "test", _MATH_SUBJECTS,
                             hub_answer_spec="boxed:solution"),
    "minerva_math": Preset("boxed:solution", "math-ai/minervamath", "test"),
    "gsm8k_test": Preset("after_hashes:answer", "openai/gsm8k", "test", ("main",),
                         hub_answer_spec="after_hashes:answer"),
    "olympiadbench": Preset("join:final_answer", "Hothan/OlympiadBench", "train", ("OE_TO_maths_en_COMP",),
                            hub_answer_spec="join:final_answer"),
    "aime24": Preset("answer", "HuggingFaceH4/aime_2024", "train"),
    "aime25": Preset("answer", "math-ai/aime25", "test"),
    "amc23": Preset("answer", "math-ai/amc23", "test"),
}
# The gold answer spec of each preset's local file, by file stem.
ANSWER_SPECS: dict[str, str] = {name: p.answer_spec for name, p in PRESETS.items()}


def benchmarks_dir(configured: str | Path | None = None) -> Path:
    """The folder bare benchmark names are looked up in (see the module docstring)."""
    return Path(configured or os.environ.get(BENCHMARKS_ENV) or SHARED_BENCHMARKS_DIR).expanduser()


def _is_bare_name(path: str) -> bool:
    return "/" not in path


def resolve_benchmark_path(path: str, configured_dir: str | Path | None = None) -> Path:
    """A file path as given, or a bare name ("math500") in `benchmarks_dir(configured_dir)`."""
    if not _is_bare_name(path):
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"benchmark file not found: {p}")
        return p
    folder = benchmarks_dir(configured_dir)
    p = folder / (path if path.endswith(".jsonl") else f"{path}.jsonl")
    if not p.is_file():
        from launch.preflight import in_ray_job

        where = (" (under a Ray job, a folder beside the repository is inside the job's temporary working "
                 "directory: give an absolute path on storage every node reads)") if in_ray_job() else ""
        raise FileNotFoundError(
            f"benchmark file not found: {p} (from {path!r}); point task.benchmarks_dir, or the "
            f"{BENCHMARKS_ENV} environment variable, at the folder that holds {p.name}{where}")
    return p


def load_problems(path: str, configured_dir: str | Path | None = None, answer_field: str = "auto",
                  question_field: str = "auto", max_question_chars: int = MAX_QUESTION_CHARS) -> list[Problem]:
    """Problems of a preset name or a path: a JSONL file, a Parquet file (`.parquet`), or a
    Hugging Face dataset folder written by `save_to_disk`; a preset that is not on disk is
    fetched from the hub where one is reachable."""
    local = Path(path).expanduser()
    if not _is_bare_name(path) and (local.is_dir() or local.suffix == ".parquet"):
        return load_table_problems(local, answer_field, question_field, max_question_chars)
    try:
        return load_jsonl_problems(resolve_benchmark_path(path, configured_dir), answer_field, question_field,
                                   max_question_chars)
    except FileNotFoundError as missing:
        name = path.removesuffix(".jsonl")
        if not _is_bare_name(path) or name not in PRESETS:
            raise
        if hub_offline():
            raise FileNotFoundError(
                f"{missing}; the hub is off (HF_HUB_OFFLINE is set), so {name!r} cannot be fetched "
                f"from {PRESETS[name].hub_repo} either") from None
        return load_hub_problems(name, answer_field, question_field, max_question_chars)


def load_benchmark(name: str, configured_dir: str | Path | None = None) -> list[Problem]:
    """All rows of a preset, e.g. ``load_benchmark("math500")`` (local copy, else the hub)."""
    if name not in PRESETS:
        raise ValueError(f"unknown benchmark {name!r}; presets: {', '.join(PRESETS)}")
    return load_problems(name, configured_dir)


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def load_hub_problems(name: str, answer_field: str = "auto", question_field: str = "auto",
                      max_question_chars: int = MAX_QUESTION_CHARS) -> list[Problem]:
    """A preset's rows from its public source on the hub (`datasets.load_dataset`)."""
    from datasets import load_dataset

    preset = PRESETS[name]
    spec = preset.hub_answer_spec if answer_field == "auto" else answer_field
    rows: list[dict[str, Any]] = []
    for config in preset.hub_configs or (None,):
        try:
            rows += list(load_dataset(preset.hub_repo, config, split=preset.hub_split))
        except Exception as e:  # network, auth, a moved dataset: say what was tried
            where = f"{preset.hub_repo}" + (f" ({config})" if config else "") + f" split {preset.hub_split!r}"
            raise FileNotFoundError(
                f"benchmark {name!r} is not in {benchmarks_dir()} and fetching {where} from the hub "
                f"failed ({type(e).__name__}: {e}); point task.benchmarks_dir or {BENCHMARKS_ENV} "
                f"at a folder with {name}.jsonl") from e
    return problems_from_rows(rows, name, spec, question_field, source=preset.hub_repo,
                              max_question_chars=max_question_chars)


def load_table_problems(path: str | Path, answer_field: str = "auto", question_field: str = "auto",
                        max_question_chars: int = MAX_QUESTION_CHARS) -> list[Problem]:
    """Problems from a Parquet file or a `save_to_disk` dataset folder (one split, or the
    folder of a DatasetDict with a `test` split or a single one); ids are
    ``<file or folder stem>-<row number from 1>``, as a JSONL file's line numbers. The answer
    spec and question field work as for JSONL ("auto": the preset rule of the stem)."""
    path = Path(path)
    if path.suffix == ".parquet":
        if not path.is_file():
            raise FileNotFoundError(f"benchmark file not found: {path}")
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        if not path.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {path}")
        from datasets import DatasetDict, load_from_disk

        try:
            data = load_from_disk(str(path))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{path}: not a dataset folder written by save_to_disk ({e})") from None
        if isinstance(data, DatasetDict):
            splits = list(data)
            split = "test" if "test" in data else splits[0] if len(splits) == 1 else None
            if split is None:
                raise ValueError(f"{path}: a dataset with splits {splits} and none named 'test'; "
                                 "point at one split's folder")
            data = data[split]
        rows = list(data)
    spec = ANSWER_SPECS.get(path.stem, "answer") if answer_field == "auto" else answer_field
    return problems_from_rows(rows, path.stem, spec, question_field, source=str(path),
                              max_question_chars=max_question_chars)


def load_jsonl_problems(path: str | Path, answer_field: str = "auto", question_field: str = "auto",
                        max_question_chars: int = MAX_QUESTION_CHARS) -> list[Problem]:
    """Problems from a JSONL file; ids are ``<file stem>-<line number>``.

    Bad rows are skipped with one warning naming each one's file and line (module
    docstring); blank lines are skipped silently. ValueError naming the file when no row
    is usable.
    """
    problems, skipped = read_jsonl_problems(path, answer_field, question_field, max_question_chars)
    return _usable(problems, skipped, str(path))


def read_jsonl_problems(path: str | Path, answer_field: str = "auto", question_field: str = "auto",
                        max_question_chars: int = MAX_QUESTION_CHARS) -> tuple[list[Problem], list[str]]:
    """The usable problems of a JSONL file, and one ``<file>:<line>: why`` per skipped row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    spec = ANSWER_SPECS.get(path.stem, "answer") if answer_field == "auto" else answer_field
    problems, skipped = [], []
    with path.open("rb") as f:  # bytes: a line that is not UTF-8 is one bad row, not a crash
        for line_no, raw in enumerate(f, start=1):
            where = f"{path}:{line_no}"
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                if not line.strip():
                    continue
                problems.append(_row_problem(_json_row(line, where), f"{path.stem}-{line_no}", spec,
                                             question_field, where, max_question_chars))
            except UnicodeDecodeError as e:
                skipped.append(f"{where}: not UTF-8 ({e.reason} at byte {e.start})")
            except BadRow as e:
                skipped.append(str(e))
    return problems, skipped


def problems_from_rows(rows: Iterable[dict[str, Any]], stem: str, answer_spec: str,
                       question_field: str = "auto", source: str = "rows",
                       max_question_chars: int = MAX_QUESTION_CHARS) -> list[Problem]:
    """Problems from dict rows (hub datasets); ids are ``<stem>-<row number from 1>``. Bad
    rows are skipped and listed as in `load_jsonl_problems`."""
    problems, skipped = [], []
    for i, row in enumerate(rows, start=1):
        try:
            problems.append(_row_problem(row, f"{stem}-{i}", answer_spec, question_field, f"{source} row {i}",
                                         max_question_chars))
        except BadRow as e:
            skipped.append(str(e))
    return _usable(problems, skipped, source)


def _json_row(line: str, where: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise BadRow(f"{where}: not valid JSON ({e})") from None


def _row_problem(row: Any, pid: str, spec: str, question_field: str, where: str,
                 max_question_chars: int) -> Problem:
    if not isinstance(row, dict):
        raise BadRow(f"{where}: row is not a JSON object (got {type(row).__name__})")
    problem = _problem(row, pid, spec, question_field, where)
    if len(problem.question) > max_question_chars:
        raise BadRow(f"{where}: question is {len(problem.question):,} characters, over "
                     f"task.max_question_chars={max_question_chars:,}")
    return problem


def _usable(problems: list[Problem], skipped: list[str], source: str) -> list[Problem]:
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
    start = text.rfind("\\boxed{")
    while start != -1:
        depth, i = 0, start + len("\\boxed")
        j = i
        while j < len(text):
            c = text[j]
            if c == "\\":
                j += 2  # an escaped character such as \{ or \} does not group
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j]
            j += 1
        start = text.rfind("\\boxed{", 0, start)  # unbalanced: try the one before
    return None
