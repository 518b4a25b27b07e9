"""The rollout record: every sample of every RL step, once, in the run folder.

`rl_step` writes ``<run dir>/rollouts/step_NNNNN.jsonl`` (NNNNN = the step as logged in
metrics.jsonl, from 1), one JSON object per generated sample:

| field | meaning |
|---|---|
| step | the RL step (metrics.jsonl's `step`) |
| query_index, query_id | the query's position in the step's batch (0..B-1; from B on, the queries
  `algo.dynamic_sampling` drew in refill rounds, in order) and its problem id |
| sample, n_samples | the sample's index among its query's K samples (0..K-1), and K |
| prompt, response | the prompt text the policy saw (chat template applied) and its response |
| finished, response_tokens | ended with the stop token; response length in tokens |
| outcome, answer, detail | the verdict (`verifier.verdict.OUTCOMES`), extracted answer, reason |
| judge | what the LLM judge said (`yes`, `no`, `error`; null: not asked, or the judge is off) |
| gold | the gold answer |
| reward, advantage | r and A (over all K samples, before filtering; docs/algorithm.md steps 2-3); r
  includes the length penalty under algo.overlong=penalty and is `verifier.reward_fn`'s number
  when it returns one; under algo.overlong=filter A is over the finished samples, 0 for a
  truncated one (why "truncated") |
| kept, why | trained on or not, and why (`learner.selection.WHY`, or "verifier_alarm": the
  step was stopped by the verifier alarm before training) |
| policy_version | the weights version that sampled it (its first segment's) |
| segments | [policy version, tokens] of each stretch generated in one step (rollout.partial: a
  sample cut at a step's budget continues in later steps; one segment otherwise) |

A step's file is written whole and renamed into place, so a step that is run again (a
resumed run) replaces its file rather than adding to it.

``python -m launch.records RUN_DIR`` prints per step the count of each outcome and of kept
samples, and checks that every generated sample is there exactly once: in each step every
(query_index, sample) appears once, every query has samples 0..K-1, and the step's count
equals `rollout/samples` in metrics.jsonl. It exits 1, naming the step and query, when a
check fails.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Sequence

from actors.partial import segments_of
from verifier.verdict import OUTCOMES

RECORDS_DIR = "rollouts"
# Problems printed by the CLI before "... and N more".
_MAX_LISTED = 20


def step_file(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / RECORDS_DIR / f"step_{step:05d}.jsonl"


def step_records(step: int, queries: Sequence, prompt: dict[str, str], groups: Sequence[Sequence],
                 verdicts: Sequence, selection, trained: bool = True) -> list[dict[str, Any]]:
    """One record per sample of one step: `groups[i][k]` is sample k of `queries[i]`,
    `verdicts` are flat in the same order, `selection` is `learner.selection.select`'s.
    `trained=False` (the verifier alarm stopped the step): no sample is kept, and those that
    would have been say why ("verifier_alarm")."""
    records = []
    for i, (q, group) in enumerate(zip(queries, groups)):
        K = len(group)
        for k, r in enumerate(group):
            v = verdicts[i * K + k]
            why = selection.why[i][k]
            if why == "kept" and not trained:
                why = "verifier_alarm"
            records.append({
                "step": step, "query_index": i, "query_id": q.id, "sample": k, "n_samples": K,
                "prompt": prompt[q.id], "response": r.response_text, "finished": r.finished,
                "response_tokens": len(r.response_ids), "outcome": v.outcome, "answer": v.answer,
                "detail": v.detail, "judge": getattr(v, "judge", None), "gold": q.answer, "reward": selection.rewards[i][k],
                "advantage": selection.advantages[i][k], "kept": why == "kept", "why": why,
                "policy_version": r.policy_version, "segments": [list(seg) for seg in segments_of(r)],
            })
    return records


def write_step(run_dir: str | Path, step: int, records: Sequence[dict[str, Any]]) -> Path:
    """Write one step's records as a whole (temp file + rename: never half a step, never twice)."""
    path = step_file(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def read_step(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """A step file's records, and a problem line for each line that is not a record."""
    records, problems = [], []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                problems.append(f"{path.name}:{n}: not a JSON record ({e})")
    return records, problems


def _step_files(run_dir: Path) -> dict[int, Path]:
    files = {}
    for path in sorted((run_dir / RECORDS_DIR).glob("step_*.jsonl")):
        try:
            files[int(path.stem.removeprefix("step_"))] = path
        except ValueError:
            continue
    return files


def logged_samples(run_dir: Path) -> dict[int, int]:
    """`rollout/samples` of each step in metrics.jsonl (the last row of a step wins)."""
    path = Path(run_dir) / "metrics.jsonl"
    out: dict[int, int] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "rollout/samples" in row:
            out[int(row["step"])] = int(row["rollout/samples"])
    return out


def check_step(step: int, records: Sequence[dict[str, Any]], expected: int | None) -> list[str]:
    """Problems with one step's records: duplicates, missing samples, a count that differs
    from what the step logged (`expected`, None = no metrics row for the step)."""
    problems = []
    by_query: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_query[r.get("query_index")].append(r)
        if r.get("step") != step:
            problems.append(f"step {step}: record of query {r.get('query_id')} sample {r.get('sample')} "
                            f"says step {r.get('step')}")
    for qi in sorted(by_query, key=lambda x: (x is None, x if isinstance(x, int) else -1)):
        rows = by_query[qi]
        qid = rows[0].get("query_id")
        ids = {r.get("query_id") for r in rows}
        if len(ids) > 1:
            problems.append(f"step {step}: query_index {qi} holds several queries {sorted(map(str, ids))}")
        K = rows[0].get("n_samples")
        counts = Counter(r.get("sample") for r in rows)
        problems += [f"step {step}: query {qid} sample {k} appears {n} times"
                     for k, n in sorted(counts.items(), key=lambda x: str(x[0])) if n > 1]
        if isinstance(K, int):
            missing = sorted(set(range(K)) - {r.get("sample") for r in rows})
            extra = sorted({r.get("sample") for r in rows} - set(range(K)), key=str)
            if missing:
                problems.append(f"step {step}: query {qid} is missing samples {missing} of {K}")
            if extra:
                problems.append(f"step {step}: query {qid} has samples {extra} outside 0..{K - 1}")
        else:
            problems.append(f"step {step}: query {qid} records have no n_samples")
    if expected is not None and len(records) != expected:
        problems.append(f"step {step}: {len(records)} records, but metrics.jsonl logged "
                        f"rollout/samples={expected}")
    return problems


def check_run(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(one summary row per step, problems); no problems means every sample is there once."""
    run_dir = Path(run_dir)
    files = _step_files(run_dir)
    logged = logged_samples(run_dir)
    if not files:
        return [], [f"{run_dir / RECORDS_DIR}: no rollout records (step_NNNNN.jsonl)"]
    rows, problems = [], []
    for step in sorted(set(files) | set(logged)):
        if step not in files:
            problems.append(f"step {step}: no records file, but metrics.jsonl logged "
                            f"rollout/samples={logged[step]}")
            continue
        records, bad = read_step(files[step])
        problems += [f"step {step}: {b}" for b in bad]
        problems += check_step(step, records, logged.get(step))
        rows.append(summary_row(step, records, logged.get(step)))
    return rows, problems


def summary_row(step: int, records: Sequence[dict[str, Any]], expected: int | None) -> dict[str, Any]:
    outcomes = Counter(r.get("outcome") for r in records)
    return {"step": step, "queries": len({r.get("query_index") for r in records}), "samples": len(records),
            **{o: outcomes.get(o, 0) for o in OUTCOMES}, "kept": sum(bool(r.get("kept")) for r in records),
            "logged": "-" if expected is None else expected}


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The per-step summary as fixed-width text, with a total line."""
    cols = ["step", "queries", "samples", *OUTCOMES, "kept", "logged"]
    total = {c: sum(r[c] for r in rows) for c in cols if c not in ("step", "logged")}
    body = [[str(r[c]) for c in cols] for r in rows] + [["total", *(str(total[c]) for c in cols[1:-1]), ""]]
    widths = [max(len(c), *(len(b[j]) for b in body)) for j, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(x.rjust(w) for x, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.records",
                                     description="Summarise a run's rollout records and check each sample is there once.")
    parser.add_argument("run_dir", type=Path, help="the run folder (holds rollouts/ and metrics.jsonl)")
    args = parser.parse_args(argv)
    rows, problems = check_run(args.run_dir)
    if rows:
        print(table(rows))
    if problems:
        for p in problems[:_MAX_LISTED]:
            print(p, file=sys.stderr)
        if len(problems) > _MAX_LISTED:
            print(f"... and {len(problems) - _MAX_LISTED} more", file=sys.stderr)
        print(f"records check FAILED: {len(problems)} problem(s) in {args.run_dir}", file=sys.stderr)
        return 1
    print(f"records check ok: {sum(r['samples'] for r in rows)} samples in {len(rows)} steps, each exactly once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
