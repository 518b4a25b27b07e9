"""RunLogger: the only writer of metrics. W&B (offline by default) + a local JSONL copy.

Names follow `role/quantity[/stat]`: `rollout/...`, `verifier/...`, `learner/...`,
`reward_model/...`, `timing_s/<stage>`, `perf/...`, `eval/...`. The table of every metric is
in docs/metrics.md.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


# metrics.jsonl's marker row of a resume: {"step": s, "resume/from_step": s}. Rows above it
# with a step after s were logged before the interruption and are superseded by what follows.
RESUME_KEY = "resume/from_step"
# W&B's x axis for every value: the RL step as in metrics.jsonl (0: before RL).
STEP_METRIC = "step"
# The run folder's record of its W&B run (`RunLogger._write_wandb_json`).
WANDB_JSON = "wandb.json"


class RunLogger:
    def __init__(self, run_dir: Path, config: dict[str, Any], mode: str = "offline",
                 project: str = "oreal", entity: str | None = None, name: str | None = None,
                 tags: list[str] | None = None, resume_step: int | None = None, run_id: str | None = None,
                 group: str | None = None, job_type: str = "train"):
        """`resume_step`: a resumed run; `history` starts with metrics.jsonl's rows up to that
        step, a marker row is appended, and W&B continues the run `run_id` (offline: a new
        local folder with the same id; `wandb sync` them in order, as `finish` prints).

        Every W&B value is plotted against `step` (metrics.jsonl's), not W&B's own counter:
        a resumed run logs steps again that its killed part had logged, and W&B drops rows
        whose `step=` goes back; with a step metric they land on the right x."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.run_dir / "metrics.jsonl"
        self.history: list[dict[str, float]] = []
        if resume_step is not None:
            self.history = read_history(self.jsonl, upto=resume_step)
            _end_cut_line(self.jsonl)
            self._append({"step": resume_step, RESUME_KEY: float(resume_step)})
        self.wandb_run = None
        if mode != "disabled":
            import wandb

            again = dict(id=run_id, resume="must") if resume_step is not None and run_id else {}
            self.wandb_run = wandb.init(project=project, entity=entity, name=name, group=group, job_type=job_type,
                                        tags=tags, mode=mode, config=config, reinit="finish_previous", **again)
            self.wandb_run.define_metric(STEP_METRIC)
            self.wandb_run.define_metric("*", step_metric=STEP_METRIC, step_sync=True)
            self._write_wandb_json(mode, resume_step is not None)

    @property
    def run_id(self) -> str | None:
        """The W&B run's id (None when W&B is disabled)."""
        return None if self.wandb_run is None else self.wandb_run.id

    def _append(self, row: dict[str, Any]) -> None:
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        self.history.append(row)
        self._append(row)
        if self.wandb_run is not None:
            self.wandb_run.log({STEP_METRIC: step, **metrics})

    def log_table(self, step: int, key: str, table) -> None:
        """A `wandb.Table` (e.g. `launch.state.samples_table`) at RL step `step`; W&B only."""
        if self.wandb_run is not None:
            self.wandb_run.log({STEP_METRIC: step, key: table})

    def _write_wandb_json(self, mode: str, resumed: bool) -> None:
        """wandb.json in the run folder: the W&B run's id, name, group, job type and local
        folders (a resumed offline run adds one), for `wandb sync` and for tools."""
        path = self.run_dir / WANDB_JSON
        run = self.wandb_run
        before = json.loads(path.read_text()) if resumed and path.is_file() else {}
        dirs = before.get("dirs", []) if before.get("id") == run.id else []
        info = {"id": run.id, "name": run.name, "group": run.group, "job_type": run.job_type,
                "project": run.project, "mode": mode, "dirs": [*dirs, self.wandb_dir]}
        path.write_text(json.dumps(info, indent=1) + "\n")

    @property
    def wandb_dir(self) -> str | None:
        return None if self.wandb_run is None else str(Path(self.wandb_run.dir).parent)

    def finish(self) -> None:
        """Close the W&B run; an offline one prints the line that uploads it."""
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
            info = json.loads((self.run_dir / WANDB_JSON).read_text())
            if info["mode"] == "offline":
                print(f"W&B offline run {info['id']}: upload with  wandb sync {' '.join(info['dirs'])}", flush=True)


def read_history(path: Path, upto: int | None = None) -> list[dict[str, float]]:
    """metrics.jsonl's rows as the run stands: rows superseded by a later resume marker are
    dropped, and so is the marker; `upto` keeps rows up to that step. A line cut short by a
    kill is skipped."""
    rows: list[dict[str, float]] = []
    for line in Path(path).read_text().splitlines() if Path(path).is_file() else []:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if RESUME_KEY in row:
            rows = [r for r in rows if r["step"] <= row["step"]]
        else:
            rows.append(row)
    return [r for r in rows if upto is None or r["step"] <= upto]


def evals_of(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """The held-out evaluations (`launch.evaluation.evaluate.evaluate`'s dicts) among logged rows."""
    return [{k: v for k, v in row.items() if k.startswith("eval/") or k.startswith("timing_s/eval")}
            for row in history if "eval/pass1" in row or "eval/benchmarks/pass1" in row]


def logged_steps(path: Path) -> int:
    """The last RL step metrics.jsonl has a row for (0: none)."""
    return max((int(r["step"]) for r in read_history(path) if "rollout/samples" in r), default=0)


def _end_cut_line(path: Path) -> None:
    """End a last line cut short by a kill, so that the next row starts a line of its own."""
    if not path.is_file() or not path.stat().st_size:
        return
    with path.open("rb+") as f:
        f.seek(-1, 2)
        if f.read(1) != b"\n":
            f.write(b"\n")


@contextmanager
def opened_beside(open_logger: Callable[[], RunLogger], timings: dict[str, float]) -> Iterator[Future]:
    """Opens the run's logger in a thread while the block runs (W&B's start takes seconds
    that the driver would otherwise wait for after the roles have started); yields its
    future. Its wall seconds go to `timings["timing_s/logger"]`. When the block fails, the
    logger opened is finished, so that no W&B run is left open."""
    def timed_open() -> RunLogger:
        with timed(timings, "logger"):
            return open_logger()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="run-logger") as side:
        opening = side.submit(timed_open)
        try:
            yield opening
        except BaseException:
            if opening.exception() is None:
                opening.result().finish()
            raise


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Adds the stage's wall seconds to `timings["timing_s/<stage>"]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        key = f"timing_s/{stage}"
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start
