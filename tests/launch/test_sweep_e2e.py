"""A 2-point Hydra sweep of the tiny default (`python -m launch.train -m seed=0,1 ...`), end to
end: the points run one after another in one driver, each in its own run folder with its own
offline W&B run, both in the sweep's group and named after their swept value; each run holds
the step axis and a samples table with the token RM's w+/w-."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT
from launch.state.samples_table import COLUMNS
from wandb_files import run_info

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# As small as a run gets: no warm-up (a random policy, so no update is expected: the RM still
# scores), 2 queries x 2 samples of 16 tokens, one step, one held-out problem, no checkpoint.
FAST = ["steps=1", "prompts_per_step=2", "rollout.n_samples=2", "rollout.max_new_tokens=16", "eval_size=1",
        "eval_every=0", "model.warmup.enabled=false", "algo.actor_freeze_steps=0", "ckpt.enabled=false",
        "wandb.table_every=1", "wandb.table_rows=3"]


def test_two_point_sweep_gives_two_runs_in_one_group(tmp_path):
    sweep = tmp_path / "multirun" / "2026-01-01" / "00-00-00"  # Hydra's default layout: group 2026-01-01_00-00-00
    ray_dir = tempfile.mkdtemp(prefix="oreal-ray-", dir="/tmp")  # short: Ray's socket paths
    # its own W&B service and folder (an inherited WANDB_SERVICE may belong to a finished test)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_SERVICE")}
    env["WANDB_DIR"] = str(tmp_path / "wandb")
    (tmp_path / "wandb").mkdir()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "launch.train", "-m", "seed=0,1", *FAST,
                               f"ray.temp_dir={ray_dir}", f"hydra.sweep.dir={sweep}"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    print(f"\nwall: 2-point sweep {time.perf_counter() - t0:.0f} s")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    runs = [json.loads((sweep / str(n) / "wandb.json").read_text()) for n in (0, 1)]
    assert [r["name"] for r in runs] == ["seed=0", "seed=1"]
    assert {r["group"] for r in runs} == {"2026-01-01_00-00-00"} and {r["job_type"] for r in runs} == {"train"}
    assert runs[0]["id"] != runs[1]["id"]
    for n, run in enumerate(runs):
        point = sweep / str(n)
        assert (point / "summary.json").is_file() and (point / "rollouts" / "step_00001.jsonl").is_file()
        assert f"run folder: {point}" in out
        (wandb_dir,) = run["dirs"]
        assert f"wandb sync {wandb_dir}" in out
        read = run_info(wandb_dir)  # the offline run file itself
        assert (read["id"], read["name"], read["group"], read["job_type"]) == \
            (run["id"], f"seed={n}", "2026-01-01_00-00-00", "train")
        assert read["step_metric"] == {"*": "step"}
        assert [h["step"] for h in read["history"] if "rollout/samples" in h] == [1]
        (table_row,) = [h for h in read["history"] if "samples/path" in h]
        assert table_row["step"] == 1
        table = json.loads((Path(wandb_dir) / "files" / table_row["samples/path"]).read_text())
        assert table["columns"] == list(COLUMNS) and len(table["data"]) == 3
        rows = [dict(zip(COLUMNS, r)) for r in table["data"]]
        assert all(r["step"] == 1 and r["verdict"] and r["gold"] for r in rows)
        assert any(r["w_pos_mean"] is not None for r in rows)  # algo oreal: the token RM's weights
