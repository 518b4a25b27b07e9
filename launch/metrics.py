"""RunLogger: the only writer of metrics. W&B (offline by default) + a local JSONL copy.

Names follow `role/quantity[/stat]`: `rollout/...`, `verifier/...`, `learner/...`,
`reward_model/...`, `timing_s/<stage>`, `perf/...`, `eval/...`. The table of every metric is
in README.md ("Logged metrics").
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


class RunLogger:
    def __init__(self, run_dir: Path, config: dict[str, Any], mode: str = "offline",
                 project: str = "oreal", entity: str | None = None, name: str | None = None,
                 tags: list[str] | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.run_dir / "metrics.jsonl"
        self.history: list[dict[str, float]] = []
        self.wandb_run = None
        if mode != "disabled":
            import wandb

            self.wandb_run = wandb.init(project=project, entity=entity, name=name, tags=tags, mode=mode,
                                        config=config, reinit="finish_previous")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        self.history.append(row)
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)

    @property
    def wandb_dir(self) -> str | None:
        return None if self.wandb_run is None else str(Path(self.wandb_run.dir).parent)

    def finish(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Adds the stage's wall seconds to `timings["timing_s/<stage>"]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        key = f"timing_s/{stage}"
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start
