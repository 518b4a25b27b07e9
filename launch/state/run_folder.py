"""One run per run folder: a fresh run never appends to, or reads, another run's record.

A run folder's record is what the loop writes there (metrics.jsonl, the rollout records, the
summary, the saved policy, the RM's held-out pairs, which a resumed run reads back). A fresh
run (`ckpt.resume` null) into a folder that holds one is refused before Ray starts; a
`ckpt.resume=auto` run that finds no checkpoint but a record (an attempt killed before its
first checkpoint, retried by Slurm or KubeRay) moves that record into `previous_attempt_<n>/`
and starts at step 0, so nothing is lost and nothing is mixed. Hydra's own files (`.hydra/`,
the log) are not a record: they are written before the run starts.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from launch.state.metrics import logged_steps

log = logging.getLogger("oreal")

# The loop's record in a run folder (files and folders), as the loop names them.
RECORD = ("metrics.jsonl", "rollouts", "summary.json", "policy", "rm_heldout_pairs.jsonl", "samples.jsonl")
ASIDE = "previous_attempt_"


def record_in(run_dir: Path) -> list[str]:
    """What of a run's record `run_dir` holds, each as a short phrase (empty: none)."""
    run_dir = Path(run_dir)
    found = []
    for name in RECORD:
        path = run_dir / name
        if path.is_file() and path.stat().st_size:
            found.append(f"{name} (steps 1-{logged_steps(path)})" if name == "metrics.jsonl" and logged_steps(path)
                         else name)
        elif path.is_dir() and any(path.iterdir()):
            found.append(f"{name}/")
    return found


def set_aside(run_dir: Path) -> Path | None:
    """Move the record in `run_dir` into a new `previous_attempt_<n>/` of it; returns that
    folder (None: nothing to move)."""
    run_dir = Path(run_dir)
    names = [n for n in RECORD if (run_dir / n).exists()]
    if not record_in(run_dir):
        return None
    n = 1 + max((int(p.name[len(ASIDE):]) for p in run_dir.glob(ASIDE + "*") if p.name[len(ASIDE):].isdigit()),
                default=0)
    aside = run_dir / f"{ASIDE}{n}"
    aside.mkdir()
    for name in names:
        shutil.move(str(run_dir / name), str(aside / name))
    return aside
