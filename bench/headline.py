"""The README's results table: a few rows of docs/benchmarks.md, read from the same results
files by `python -m bench.report` (which writes it between the README's markers and checks it
with `--check`), so the README's figures never drift from the measurements."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _load(results: Path, name: str) -> dict[str, Any]:
    try:
        return json.loads((results / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}


def _pct(x: Any) -> str:
    return "n/a" if not isinstance(x, (int, float)) else f"{100 * x:.1f}"


def _best_probe_variant(results: Path) -> tuple[str, dict[str, Any]] | None:
    """(file stem, variant row) of the best `bench.rm_probe` variant over every rm_probe*.json,
    by the probe's own ranking (`bench.rm_probe.best_of`); the paper-regime `loop` row and the
    shuffled-label control are not candidates."""
    from bench.rm_probe import CONTROL, best_of

    cands = [(path.stem, row) for path in sorted(results.glob("rm_probe*.json"))
             for row in _load(results, path.stem).get("variants", [])
             if row.get("variant") not in ("loop", CONTROL) and "curve" in row and "mean" in row]
    if not cands:
        return None
    best = best_of([row for _, row in cands])
    return next((stem, row) for stem, row in cands if row["variant"] == best)


def rows(results: Path) -> list[tuple[str, str, str]]:
    """(what, figure, source file) for each headline the results hold."""
    out = []
    abl = _load(results, "ablation_rm")
    by = {r.get("row"): r for r in abl.get("table", [])}
    if by:
        seeds = max(r.get("seeds", 0) for r in by.values())
        steps = abl.get("settings", {}).get("steps")
        cells = ", ".join(f"`{k}` {_pct(by[k].get('pass1_after'))}" for k in
                          ("bc", "wo_tokenrm", "oreal", "oreal_rm", "oreal_rm_shuffled") if k in by)
        k = abl.get("settings", {}).get("n_samples")
        out.append((f"held-out pass@1 after {steps} steps, demo task, K = {k}, mean of {seeds} seed(s) (before: "
                    f"{_pct(next(iter(by.values())).get('pass1_before'))})", cells, "ablation_rm.json"))
        rm = ", ".join(f"`{k}` {_pct(by[k].get('heldout_pair_accuracy'))}" for k in ("oreal", "oreal_rm") if k in by)
        out.append(("token RM's held-out pair accuracy at the end (chance 50.0): paper regime, `rm=learns`", rm,
                    "ablation_rm.json"))
    demo = _load(results, "demo_builds")
    sp = demo.get("spread", {})
    if "heldout_pass1_after" in sp:
        def ms(k: str) -> str:
            return f"{_pct(sp[k]['mean'])} +- {_pct(sp[k]['sd'])}" if k in sp else "n/a"
        out.append((f"`make demo` from empty caches ({sp['heldout_pass1_after']['n']} builds, mean +- sd): held-out "
                    "pass@1 before -> after; token RM held-out pair accuracy after",
                    f"{ms('heldout_pass1_before')} -> {ms('heldout_pass1_after')}; "
                    f"{ms('rm_heldout_pair_accuracy_after')}", "demo_builds.json"))
    ws = demo.get("warmup_start_spread")
    if ws:
        out.append((f"the demo's start over {ws['n']} warm-ups (its own and {ws['n'] - 1} with another seed or thread "
                    "count): held-out pass@1 before RL", f"{_pct(ws['min'])} to {_pct(ws['max'])}", "demo_builds.json"))
    probe = _best_probe_variant(results)
    if probe:
        name, best = probe
        m = best.get("mean", {})
        out.append((f"token RM offline, best regime (`{best['variant']}`): held-out pair accuracy / BCE / "
                    "first-error hit (chance)",
                    f"{_pct(m.get('heldout_pair_accuracy'))} / {m.get('heldout_bce', float('nan')):.2f} / "
                    f"{_pct(m.get('first_error_hit'))} ({_pct(m.get('first_error_chance'))})", f"{name}.json"))
    peer = _load(results, "peer")
    if "speedup_samples_per_s" in peer:
        out.append(("samples/s against Hugging Face TRL `GRPOTrainer`, same task and machine (long setting)",
                    f"{peer['speedup_samples_per_s']:.2f}x ({peer['ours_samples_per_s']:.2f} vs "
                    f"{peer['trl_samples_per_s']:.2f})", "peer.json"))
    pipe = _load(results, "bench_pipeline")
    if "pipelined_over_ceiling" in pipe:
        out.append(("one-step off-policy step time over its ceiling (generation alone + sync)",
                    f"{pipe['pipelined_over_ceiling']:.2f} (target <= {pipe.get('target', 'n/a')})",
                    "bench_pipeline.json"))
    if "startup_s" in pipe:
        out.append(("demo start-up, launch to the first step (median of the launches)", f"{pipe['startup_s']:.1f} s",
                    "bench_pipeline.json"))
    fz = _load(results, "fuzz")
    if "inputs" in fz:
        out.append(("hostile inputs to grading, loaders and eval report (`bench.fuzz`): crashes / hangs / false "
                    "positives; slowest grading", f"{fz['inputs']:,}: {fz['crashes']} / {fz['hangs']} / "
                    f"{fz['false_positives']}; {fz['slowest_grade_s']:.2f} s", "fuzz.json"))
    return out


def block(results: Path) -> str:
    lines = [BEGIN, "| what | figure | from |", "|---|---|---|"]
    lines += [f"| {what} | {fig} | [results/{src}](docs/benchmarks.md) |" for what, fig, src in rows(results)]
    return "\n".join(lines + [END])


def splice(readme: str, new_block: str) -> str:
    """`readme` with the text between the markers (markers included) replaced; ValueError when
    the markers are missing."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no {BEGIN} ... {END} block")
    return readme[:start] + new_block + readme[end + len(END):]
