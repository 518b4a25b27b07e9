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

``hf:<name>`` is any Hugging Face dataset by name (``hf:AI-MO/NuminaMath-CoT``), read with
``datasets.load_dataset(name, task.hf_config, split=task.hf_split, revision=task.hf_revision,
cache_dir=task.hf_cache_dir)`` (`load_hf_problems`); ``<name>`` may also be a local folder of
data files (``hf:/data/mine``: JSONL/Parquet/CSV, split names from the file names as on the
hub). When the hub is off (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) or unreachable and the
dataset is not in the cache, the error is one line naming the key and the name, and how to
point at a local copy.

Each preset knows where its gold answer is (``answer_spec`` grammar: ``"<field>"``, the
value itself with integral floats such as 27.0 written ``27``; ``"boxed:<field>"``, the last
brace-matched ``\\boxed{}`` in the field; ``"after_hashes:<field>"``, the text after the
last ``####`` with commas removed; ``"join:<field>"``, a list joined with ``", "`` and
math-mode ``$`` removed).

Bad rows never stop a run: a row that is not UTF-8, not JSON, nested past Python's recursion
limit, not an object, has no question or no answer, or whose question is over
``task.max_question_chars``, answer over ``MAX_ANSWER_CHARS`` (1,000) or answer's source
text over ``MAX_SOLUTION_CHARS`` (50,000) is skipped, and the loader warns once, naming each
skipped row's file and line (the first few, then a count). A number too long for ``int()``
stays text (an answer of 5,000 digits is then over the answer cap). Only a file with no usable
row at all is an error (naming the file and the first reasons).
"""
from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launch.data.problem import Problem
from launch.data.problem_rows import (  # noqa: F401  (re-exported: the loaders' public names)
    MAX_ANSWER_CHARS,
    MAX_LINE_BYTES,
    MAX_LISTED_ROWS,
    MAX_QUESTION_CHARS,
    MAX_SOLUTION_CHARS,
    QUESTION_FIELDS,
    BadRow,
    capped_lines,
    extract_answer,
    json_row,
    last_boxed,
    problems_from_rows,
    row_problem,
    usable,
)

# Environment variable that points every loader and test at a folder of benchmark files.
BENCHMARKS_ENV = "OREAL_BENCHMARKS"
# Where our machines and CI keep the read-only copies (`../shared/data/README.md`).
SHARED_BENCHMARKS_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "benchmarks"
# A Hugging Face dataset by name: "hf:AI-MO/NuminaMath-CoT" (or a local folder, "hf:/data/mine").
HF_PREFIX = "hf:"


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


@dataclass(frozen=True)
class HubDataset:
    """How an ``hf:<name>`` dataset is read: `datasets.load_dataset` arguments (task.hf_config,
    task.hf_split, task.hf_revision, task.hf_cache_dir)."""

    config: str | None = None
    split: str = "train"
    revision: str | None = None
    # null: datasets' own cache ($HF_DATASETS_CACHE, else $HF_HOME/datasets).
    cache_dir: str | None = None


def is_hub_name(path: str) -> bool:
    """Whether `path` names a Hugging Face dataset (``hf:<name>``) rather than a file or preset."""
    return path.startswith(HF_PREFIX)


def dataset_stem(path: str) -> str:
    """The name problem ids start with (and a benchmark's label): a file's stem, a preset's
    name, or the last part of an ``hf:`` name (``hf:AI-MO/NuminaMath-CoT`` -> ``NuminaMath-CoT``).

    >>> dataset_stem("hf:AI-MO/NuminaMath-CoT"), dataset_stem("/data/mine.jsonl"), dataset_stem("math500")
    ('NuminaMath-CoT', 'mine', 'math500')
    """
    if is_hub_name(path):
        return path[len(HF_PREFIX):].rstrip("/").rsplit("/", 1)[-1]
    return Path(path).stem if not _is_bare_name(path) else path.removesuffix(".jsonl")


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
        from launch.ray_job import in_ray_job

        where = (" (under a Ray job, a folder beside the repository is inside the job's temporary working "
                 "directory: give an absolute path on storage every node reads)") if in_ray_job() else ""
        raise FileNotFoundError(
            f"benchmark file not found: {p} (from {path!r}); point task.benchmarks_dir, or the "
            f"{BENCHMARKS_ENV} environment variable, at the folder that holds {p.name}{where}")
    return p


def load_problems(path: str, configured_dir: str | Path | None = None, answer_field: str = "auto",
                  question_field: str = "auto", max_question_chars: int = MAX_QUESTION_CHARS,
                  hub: HubDataset | None = None, key: str = "task.path") -> list[Problem]:
    """Problems of a preset name or a path: a JSONL file, a Parquet file (`.parquet`), or a
    Hugging Face dataset folder written by `save_to_disk`; a preset that is not on disk is
    fetched from the hub where one is reachable. ``hf:<name>``: any Hugging Face dataset, read
    as `hub` says (`load_hf_problems`); `key` is the config key named in its errors."""
    if is_hub_name(path):
        return load_hf_problems(path, hub or HubDataset(), answer_field, question_field, max_question_chars, key)
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
    """Whether the Hugging Face hub is switched off (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or any(
        os.environ.get(var, "").lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub's host (HF_ENDPOINT) accepts a connection within `timeout_s`; behind a
    proxy (HTTPS_PROXY / ALL_PROXY) it is assumed to. Without this, a machine with no network
    retries for about 25 s before datasets gives up."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)),
                                 timeout=timeout_s).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _offline_mode():
    """datasets and huggingface_hub in offline mode for one call (a cached dataset still loads,
    a missing one fails at once), also where HF_HUB_OFFLINE was set after they were imported."""
    import datasets.config
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def load_hf_problems(path: str, hub: HubDataset = HubDataset(), answer_field: str = "auto",
                     question_field: str = "auto", max_question_chars: int = MAX_QUESTION_CHARS,
                     key: str = "task.path") -> list[Problem]:
    """Problems of ``hf:<name>``: ``datasets.load_dataset(name, hub.config, split=hub.split,
    revision=hub.revision, cache_dir=hub.cache_dir)``, rows read as a JSONL file's (ids
    ``<last part of the name>-<row from 1>``; "auto" answer spec: the preset rule of that part,
    else the field ``answer``). Any failure is one line naming `key` and the name: off or
    unreachable hub and not cached (FileNotFoundError), a wrong config or split (ValueError)."""
    name = path[len(HF_PREFIX):].strip()
    if not name:
        raise ValueError(f"{key}={path!r}: no dataset name after {HF_PREFIX!r} "
                         f"(e.g. {HF_PREFIX}AI-MO/NuminaMath-CoT)")
    from datasets import load_dataset

    what = repr(name) + (f" (config {hub.config!r})" if hub.config else "") + f" split {hub.split!r}"
    local_copy = (f"point {key} at a local copy instead (a JSONL or Parquet file, a save_to_disk folder, "
                  f"or {HF_PREFIX}<folder of data files>)")
    local_folder = name.startswith((".", "~", "/")) or Path(name).expanduser().exists()
    off = None if local_folder else ("is off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)" if hub_offline()
                                     else None if hub_reachable() else "cannot be reached")
    try:
        with _offline_mode() if off else contextlib.nullcontext():  # the cache only, no retries
            data = load_dataset(name, hub.config, split=hub.split, revision=hub.revision, cache_dir=hub.cache_dir)
    except Exception as e:  # one line: which key, which dataset, what to do
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
        reason = f"{type(e).__name__}: {first}"[:300]
        # not cached (a cached copy with, say, a wrong split gets the general message below)
        if not local_folder and (isinstance(e, ConnectionError) or (off and isinstance(e, FileNotFoundError))):
            raise FileNotFoundError(
                f"{key}={path!r}: the Hugging Face hub {off or 'cannot be reached'} and {what} is not in the "
                f"datasets cache; {local_copy}") from None
        error = FileNotFoundError if isinstance(e, FileNotFoundError) else ValueError
        raise error(f"{key}={path!r}: datasets.load_dataset could not read {what} ({reason}); check the name, "
                    f"task.hf_config, task.hf_split and task.hf_revision, or {local_copy}") from None
    stem = dataset_stem(path)
    spec = ANSWER_SPECS.get(stem, "answer") if answer_field == "auto" else answer_field
    return problems_from_rows(data, stem, spec, question_field, source=path, max_question_chars=max_question_chars)


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
    return usable(problems, skipped, str(path))


def read_jsonl_problems(path: str | Path, answer_field: str = "auto", question_field: str = "auto",
                        max_question_chars: int = MAX_QUESTION_CHARS) -> tuple[list[Problem], list[str]]:
    """The usable problems of a JSONL file, and one ``<file>:<line>: why`` per skipped row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    spec = ANSWER_SPECS.get(path.stem, "answer") if answer_field == "auto" else answer_field
    problems, skipped = [], []
    with path.open("rb") as f:  # bytes: a line that is not UTF-8 is one bad row, not a crash
        for line_no, raw in capped_lines(f, MAX_LINE_BYTES):
            where = f"{path}:{line_no}"
            if raw is None:
                skipped.append(f"{where}: line over {MAX_LINE_BYTES:,} bytes")
                continue
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                if not line.strip():
                    continue
                problems.append(row_problem(json_row(line, where), f"{path.stem}-{line_no}", spec,
                                             question_field, where, max_question_chars))
            except UnicodeDecodeError as e:
                skipped.append(f"{where}: not UTF-8 ({e.reason} at byte {e.start})")
            except BadRow as e:
                skipped.append(str(e))
    return problems, skipped
