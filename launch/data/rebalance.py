"""Difficulty re-balancing of the training prompts by pass rate (docs/algorithm.md, "Data").

The paper samples 16 responses per training problem with the initial policy and repeats each
problem by its pass rate p: p in [0, 0.2) x6, [0.2, 0.4) x4, [0.4, 0.6) x4, [0.6, 0.8) x2,
p >= 0.8 dropped (always solved: no learning signal). `python -m launch.passrate` writes the
pass rates (`passrate.jsonl`, read and written here); `launch.data.tasks.load_task` applies them to
the train split when `task.passrate_file` is set, with `task.rebalance` as the buckets.

    >>> from launch.data.problem import Problem
    >>> ps = [Problem("a", "q", "1"), Problem("b", "q", "2"), Problem("c", "q", "3")]
    >>> [p.id for p in rebalance(ps, {"a": 0.1, "b": 0.9}, PAPER_BUCKETS)]
    ['a', 'a', 'a', 'a', 'a', 'a', 'c']

Buckets are `[low, high, repeats]`, half-open `[low, high)` except the last, which also holds
its `high` (so `[0.8, 1.0, 0]` drops the always-solved); together they cover [0, 1] with no
gap or overlap. A problem the file does not list is kept once (and counted).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from launch.data.problem import Problem

log = logging.getLogger("oreal")

Bucket = tuple[float, float, int]
# docs/algorithm.md "Data": [low, high, repeats].
PAPER_BUCKETS: tuple[Bucket, ...] = ((0.0, 0.2, 6), (0.2, 0.4, 4), (0.4, 0.6, 4), (0.6, 0.8, 2), (0.8, 1.0, 0))
MAX_LISTED = 10  # bad lines / unknown ids named in one warning


def check_buckets(buckets: Iterable[Sequence[float]], key: str = "task.rebalance") -> tuple[Bucket, ...]:
    """`[[low, high, repeats], ...]` -> sorted `(low, high, repeats)` tuples, refused (naming
    `key`) unless they cover [0, 1] with no gap or overlap and repeats are whole numbers >= 0."""
    out = []
    for b in buckets:
        try:
            low, high, repeats = (float(x) for x in b)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: each bucket is [low, high, repeats] (numbers), got {b}") from None
        b = list(b)
        if repeats != int(repeats) or repeats < 0:
            raise ValueError(f"{key}: repeats must be a whole number >= 0, got {b[2]} in {b}")
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"{key}: need 0 <= low < high <= 1, got {b}")
        out.append((low, high, int(float(repeats))))
    out.sort()
    if not out:
        raise ValueError(f"{key} is empty; the paper's is {[list(b) for b in PAPER_BUCKETS]}")
    if out[0][0] != 0.0 or out[-1][1] != 1.0 or any(a[1] != b[0] for a, b in zip(out, out[1:])):
        raise ValueError(f"{key}: the buckets must cover [0, 1] with no gap or overlap, got edges "
                         f"{[b[:2] for b in out]} (e.g. {[list(b) for b in PAPER_BUCKETS]})")
    return tuple(out)


def bucket_index(rate: float, buckets: Sequence[Bucket]) -> int:
    """Index of the bucket holding `rate` ([low, high); the last also holds its high)."""
    for i, (low, high, _) in enumerate(buckets):
        if low <= rate < high or (i == len(buckets) - 1 and rate == high):
            return i
    raise ValueError(f"pass rate {rate} is outside [0, 1]")


def rebalance(problems: Sequence[Problem], pass_rates: Mapping[str, float],
              buckets: Sequence[Bucket] = PAPER_BUCKETS) -> list[Problem]:
    """Each problem repeated as its pass-rate bucket says (0: dropped), in the given order,
    copies side by side (the training loop shuffles every pass); a problem with no pass rate
    is kept once. Copies keep their id: the loop tells them apart by position."""
    out: list[Problem] = []
    for p in problems:
        rate = pass_rates.get(p.id)
        out += [p] * (1 if rate is None else buckets[bucket_index(rate, buckets)][2])
    return out


@dataclass
class RebalanceCounts:
    """Problems per bucket before and after re-balancing, and those the file did not list."""

    buckets: tuple[Bucket, ...]
    before: list[int]  # distinct problems with a pass rate, per bucket
    after: list[int]  # training entries they become (before x repeats)
    missing: int  # problems without a pass rate (kept once)

    @property
    def total_before(self) -> int:
        return sum(self.before) + self.missing

    @property
    def total_after(self) -> int:
        return sum(self.after) + self.missing


def rebalance_counts(problems: Sequence[Problem], pass_rates: Mapping[str, float],
                     buckets: Sequence[Bucket] = PAPER_BUCKETS) -> RebalanceCounts:
    before = [0] * len(buckets)
    missing = 0
    for p in problems:
        if p.id in pass_rates:
            before[bucket_index(pass_rates[p.id], buckets)] += 1
        else:
            missing += 1
    return RebalanceCounts(tuple(buckets), before, [n * b[2] for n, b in zip(before, buckets)], missing)


def format_histogram(counts: RebalanceCounts) -> str:
    """A text table: one row per bucket (range, repeats, problems before, entries after, a bar)."""
    width = max([*counts.before, 1])
    rows = [f"{'pass rate':<13} {'x':>3} {'before':>7} {'after':>7}"]
    for i, ((low, high, reps), b, a) in enumerate(zip(counts.buckets, counts.before, counts.after)):
        span = f"[{low:.2f}, {high:.2f}{']' if i == len(counts.buckets) - 1 else ')'}"
        rows.append(f"{span:<13} {reps:>3} {b:>7} {a:>7}  {'#' * round(30 * b / width)}".rstrip())
    if counts.missing:
        rows.append(f"{'not in file':<13} {1:>3} {counts.missing:>7} {counts.missing:>7}")
    rows.append(f"{'total':<13} {'':>3} {counts.total_before:>7} {counts.total_after:>7}")
    return "\n".join(rows)


# ------------------------------------------------------------------------------ the file

@dataclass(frozen=True)
class PassRate:
    """One row of passrate.jsonl: `correct` of `k` sampled responses graded right."""

    id: str
    pass_rate: float
    k: int
    correct: int
    question: str = ""

    def row(self) -> dict:
        return {"id": self.id, "pass_rate": self.pass_rate, "k": self.k, "correct": self.correct,
                "question": self.question}


def write_pass_rates(path: str | Path, rates: Iterable[PassRate]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        f.writelines(json.dumps(r.row()) + "\n" for r in rates)
    return path


def _parse(line: str) -> PassRate:
    row = json.loads(line)
    if not isinstance(row, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("id", "k", "correct") if k not in row]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    k, correct = row["k"], row["correct"]
    if not (isinstance(k, int) and isinstance(correct, int) and 0 <= correct <= k and k >= 1):
        raise ValueError(f"need whole numbers 0 <= correct <= k, k >= 1; got correct={correct!r}, k={k!r}")
    rate = correct / k
    if "pass_rate" in row and abs(float(row["pass_rate"]) - rate) > 1e-6:
        raise ValueError(f"pass_rate {row['pass_rate']} is not correct/k = {correct}/{k}")
    return PassRate(str(row["id"]), rate, k, correct, str(row.get("question", "")))


def read_pass_rates(path: str | Path, key: str = "task.passrate_file") -> dict[str, PassRate]:
    """passrate.jsonl -> {problem id: PassRate}. A line that is not a JSON object with `id`,
    `k` and `correct` (0 <= correct <= k), or repeats an id, is skipped and named in one
    warning (`file:line: why`); a file with no usable line is an error naming `key`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{key}={str(path)!r}: no such file (write one with `python -m launch.passrate`)")
    rates: dict[str, PassRate] = {}
    bad: list[str] = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = _parse(line)
        except (ValueError, TypeError, RecursionError) as e:  # bad JSON, int()'s digit limit, deep nesting
            bad.append(f"{path}:{n}: {str(e).splitlines()[0]}")
            continue
        if r.id in rates:
            bad.append(f"{path}:{n}: id {r.id!r} repeated (the first one is kept)")
            continue
        rates[r.id] = r
    if bad:
        more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        log.warning("%s: skipped %d bad line(s)%s:\n  %s", key, len(bad), more, "\n  ".join(bad[:MAX_LISTED]))
    if not rates:
        raise ValueError(f"{key}={str(path)!r}: no usable line ({len(bad)} bad); expected rows such as "
                         '{"id": "arith-train-0", "pass_rate": 0.25, "k": 16, "correct": 4}')
    return rates


def apply_pass_rate_file(problems: Sequence[Problem], path: str, buckets: Sequence[Sequence[float]],
                         key: str = "task.passrate_file") -> list[Problem]:
    """The train split re-balanced by the file at `path`, with a printed histogram. Ids in the
    file that are not in the split are counted in a warning (the file may cover more problems
    than `task.num_train` keeps); none in common, or a problem whose question differs from
    the file's, is an error: the file was made for another task."""
    checked = check_buckets(buckets)
    rows = read_pass_rates(path, key)
    by_id = {p.id: p for p in problems}
    changed = [i for i, r in rows.items() if i in by_id and r.question and r.question != by_id[i].question]
    if changed:
        raise ValueError(f"{key}={path!r}: {len(changed)} problem(s) have another question than in the train "
                         f"split (first: {changed[0]!r}); the file was made for another task config "
                         "(task.seed, num_train, ...): write it again with `python -m launch.passrate`")
    unknown = [i for i in rows if i not in by_id]
    if len(unknown) == len(rows):
        raise ValueError(f"{key}={path!r}: none of its {len(rows)} ids is a problem of the train split "
                         f"(file: {', '.join(list(rows)[:3])}; split: {', '.join(list(by_id)[:3])}); "
                         "is it for another task?")
    if unknown:
        log.warning("%s: %d id(s) are not in the train split and are ignored (first: %s)", key, len(unknown),
                    ", ".join(unknown[:MAX_LISTED]))
    rates = {i: r.pass_rate for i, r in rows.items() if i in by_id}
    counts = rebalance_counts(problems, rates, checked)
    note = (f"; {counts.missing} train problem(s) not in the file, kept once" if counts.missing else "")
    print(f"re-balanced the train split by {path} ({len(problems)} -> {counts.total_after} entries{note}):\n"
          + format_histogram(counts), flush=True)
    return rebalance(problems, rates, checked)
