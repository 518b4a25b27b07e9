"""`python -m bench.demo_builds`: does `make demo`'s figure hold for a user? N builds from empty caches.

Each build runs `make demo CACHE=<a new empty folder>`: the tiny model, its tokenizer, the
supervised warm-up, vLLM's and DeepSpeed's caches are all made afresh, as on a fresh clone (the
installed `.venv` is shared: it holds no state of the run). Per build it records the demo's
summary (held-out pass@1 and the token RM's held-out pair accuracy before and after RL, wall
time) and the SHA-256 of the warmed-up weights, so a reader sees both whether the start is
reproduced bit for bit and how far RL's own nondeterminism (Ray and vLLM scheduling) spreads
the end. Then, for scale, the starting held-out pass@1 of warm-ups that differ from the
default one in a seed or in the thread count they trained on (`--warmups`): what a machine of
another CPU kind, whose float sums round differently, may start from. Writes
results/demo_builds.json and prints a table.

    python -m bench.demo_builds [--builds 3] [--warmups]
    python -m bench.demo_builds --collect CACHE=LOG ... --collect-warmups OVERRIDE=RUN_DIR ...  # already made
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from launch.state.provenance import invoked, stamp

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "results" / "demo_builds.json"
BUILD_COMMAND = "make demo CACHE=<a new empty folder>"
# Warm-ups other than the demo's (model.warmup.seed=0, threads=2), one key changed each.
WARMUP_VARIANTS = ("model.warmup.threads=1", "model.warmup.threads=4", "model.warmup.seed=1", "model.warmup.seed=2")
FIGURES = ("heldout_pass1_before", "heldout_pass1_after", "rm_heldout_pair_accuracy_before",
           "rm_heldout_pair_accuracy_after", "wall_s")


def run_folder(log: str) -> Path:
    """The run folder `launch.train` names on its last `run folder: ...` line."""
    found = re.findall(r"run folder: (\S+)", log)
    if not found:
        raise ValueError("the demo's output has no 'run folder: ...' line: did it finish?")
    return Path(found[-1])


def warmup_sha256(cache: Path) -> str | None:
    """SHA-256 of the warmed-up weights the build made (None when it made none or several)."""
    found = sorted((cache / "oreal").glob("warmup-*/model.safetensors"))
    return hashlib.sha256(found[0].read_bytes()).hexdigest() if len(found) == 1 else None


def build_record(cache: Path, log_path: Path, build_s: float | None = None) -> dict:
    """One build's row, from its cache folder and the log of its `make demo`."""
    log = log_path.read_text(errors="replace")
    run = run_folder(log)
    summary = json.loads((run / "summary.json").read_text())
    row = {k: summary.get(k) for k in FIGURES}
    row.update({"warmup_sha256": warmup_sha256(cache), "run_dir": str(run), "build_s": build_s,
                "warmup": sorted(p.name for p in (cache / "oreal").glob("warmup-*"))})
    return row


def spread(builds: Sequence[dict]) -> dict:
    """Mean, sample SD, min and max of each figure over the builds."""
    out = {}
    for k in FIGURES:
        xs = [b[k] for b in builds if isinstance(b.get(k), (int, float))]
        if xs:
            out[k] = {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0,
                      "min": min(xs), "max": max(xs), "n": len(xs)}
    hashes = {b.get("warmup_sha256") for b in builds}
    out["warmup_identical"] = len(hashes) == 1 and None not in hashes
    return out


def warmup_record(override: str, run: Path) -> dict:
    """The starting held-out pass@1 of a run whose warm-up differs by `override`."""
    summary = json.loads((run / "summary.json").read_text())
    return {"override": override, "heldout_pass1_before": summary.get("heldout_pass1_before"), "run_dir": str(run)}


def run_warmup_variant(override: str) -> dict:
    """One step of the demo with `override`: its warm-up is built (cached) and evaluated first."""
    run = Path(tempfile.mkdtemp(prefix="oreal-warmup-variant-")) / "run"
    cmd = [sys.executable, "-m", "launch.train", override, "steps=1", "algo.rm_eval_every=0", "wandb.mode=disabled",
           "ckpt.enabled=false", f"output_dir={run}"]
    if subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
        raise SystemExit(f"{' '.join(cmd)} failed")
    return warmup_record(override, run)


def make_build(i: int, keep: bool) -> dict:
    cache = Path(tempfile.mkdtemp(prefix=f"oreal-demo-build{i}-"))
    log_path = cache / "demo.log"
    t = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.run(["make", "demo", f"CACHE={cache}"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc:
        raise SystemExit(f"build {i}: make demo exited {rc}; its output: {log_path}")
    row = build_record(cache, log_path, time.perf_counter() - t)
    if not keep:
        for big in ("vllm", "torch_extensions", "ray"):
            shutil.rmtree(cache / big, ignore_errors=True)
    return row


def table(builds: Sequence[dict], s: dict) -> str:
    lines = ["build | pass@1 before | pass@1 after | RM pair acc before | RM pair acc after | run s | warm-up sha256",
             "---|---|---|---|---|---|---"]
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}"  # noqa: E731
    for i, b in enumerate(builds, 1):
        lines.append(f"{i} | {pct(b['heldout_pass1_before'])} | {pct(b['heldout_pass1_after'])} | "
                     f"{pct(b['rm_heldout_pair_accuracy_before'])} | {pct(b['rm_heldout_pair_accuracy_after'])} | "
                     f"{b['wall_s']:.0f} | {(b['warmup_sha256'] or 'n/a')[:12]}")
    lines.append(f"warm-up identical over the builds: {s['warmup_identical']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--builds", type=int, default=3)
    ap.add_argument("--collect", nargs="+", metavar="CACHE=LOG",
                    help="read builds already made with `make demo CACHE=<CACHE>`, output in LOG")
    ap.add_argument("--warmups", action="store_true", help=f"also the start of the warm-ups {WARMUP_VARIANTS}")
    ap.add_argument("--collect-warmups", nargs="+", metavar="OVERRIDE=RUN_DIR", default=[],
                    help="read warm-up variants already run (`launch.train OVERRIDE steps=1 output_dir=RUN_DIR`)")
    ap.add_argument("--keep", action="store_true", help="keep each build's vLLM / DeepSpeed / Ray caches")
    ap.add_argument("--out", type=Path, default=OUT_JSON)
    args = ap.parse_args(argv)
    if args.collect:
        pairs = [c.split("=", 1) for c in args.collect]
        if any(len(p) != 2 for p in pairs):
            ap.error("--collect takes CACHE=LOG pairs")
        builds = [build_record(Path(c), Path(log)) for c, log in pairs]
    else:
        builds = [make_build(i, args.keep) for i in range(1, args.builds + 1)]
    s = spread(builds)
    if args.collect_warmups:
        pairs = [c.rsplit("=", 1) for c in args.collect_warmups]
        warmups = [warmup_record(o, Path(r)) for o, r in pairs]
    else:
        warmups = [run_warmup_variant(o) for o in WARMUP_VARIANTS] if args.warmups else []
    starts = [b["heldout_pass1_before"] for b in builds[:1]] + [w["heldout_pass1_before"] for w in warmups]
    out = {"provenance": stamp(invoked("bench.demo_builds")), "build_command": BUILD_COMMAND,
           "builds": builds, "spread": s, "warmup_variants": warmups}
    if warmups:
        out["warmup_start_spread"] = {"min": min(starts), "max": max(starts), "mean": statistics.fmean(starts),
                                      "sd": statistics.stdev(starts), "n": len(starts)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(table(builds, s))
    for w in warmups:
        print(f"{w['override']}: held-out pass@1 before RL {100 * w['heldout_pass1_before']:.1f}")
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
