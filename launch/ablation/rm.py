"""`make ablation-rm`: what the token RM buys, in the loop.

One row per mode / RM regime, each a list of Hydra overrides of conf/train.yaml on top of the
shared ones (after `--`); every row runs the same seeds from the same warmed-up policy:

    bc                  behaviour cloning of one correct sample per query, shaped negatives
    wo_tokenrm          the authors' no-RM baseline: every correct sample cloned, no freeze
    oreal               the paper's token-RM regime (rm=paper)
    oreal_rm            OREAL with the RM regime that learns (rm=learns; docs/algorithm.md)
    oreal_rm_shuffled   the same, its token weights shuffled among the tokens of their class

Writes results/<name>.{json,md,png} (default `ablation_rm`) after every run, so an
interrupted ablation loses nothing: run it again and the runs whose folder holds a
summary.json are read back, not run again. Each run's folder: results/runs/<name>/<row>-seed<s>.

    python -m launch.ablation.rm --seeds 0 1 2 3 -- steps=100 task.num_heldout=500 eval_size=500
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Callable, Sequence

from launch.ablation.paper import heldout_size, noise, noise_line, output_paths
from launch.state.provenance import invoked, stamp

ROWS: dict[str, list[str]] = {
    "bc": ["algo=bc", "rm=paper"],
    "wo_tokenrm": ["algo=wo_tokenrm", "rm=paper"],
    "oreal": ["algo=oreal", "rm=paper"],
    "oreal_rm": ["algo=oreal", "rm=learns"],
    "oreal_rm_shuffled": ["algo=oreal", "rm=learns", "algo.shuffle_token_weights=true"],
}
# (a, b): the differences the table states, each with its standard error.
COMPARE = (("oreal_rm", "oreal_rm_shuffled"), ("oreal_rm", "bc"), ("oreal_rm", "wo_tokenrm"), ("oreal_rm", "oreal"),
           ("oreal", "bc"))


def run_record(row: str, seed: int, run_dir: Path, freeze_steps: int) -> dict:
    """One finished run, read from its folder (summary.json, metrics.jsonl): held-out pass@1
    before/after, the RM's held-out pair accuracy at the end and its lowest from the end of the
    RM-only steps on, and the mean w+ on positive tokens over the policy's updates."""
    from launch.state.metrics import read_history

    summary = json.loads((run_dir / "summary.json").read_text())
    history = read_history(run_dir / "metrics.jsonl")
    rm = [(r["step"], r["reward_model/heldout_pair_accuracy"]) for r in history
          if "reward_model/heldout_pair_accuracy" in r]
    w_pos = [r["learner/w_pos_mean"] for r in history if "learner/w_pos_mean" in r]
    return {"row": row, "seed": seed, "before": summary["heldout_pass1_before"],
            "after": summary["heldout_pass1_after"],
            "curve": {int(k): v for k, v in summary["heldout_pass1_by_step"].items()},
            "heldout_pair_accuracy": rm[-1][1] if rm else None,
            "heldout_pair_accuracy_min_after_freeze": min((a for s, a in rm if s >= freeze_steps), default=None),
            "rm_curve": {int(s): a for s, a in rm},
            "w_pos_mean": statistics.fmean(w_pos) if w_pos else None,
            "samples": summary["samples"], "rl_wall_s": summary["rl_wall_s"]}


def table_row(row: str, runs: Sequence[dict]) -> dict:
    """Mean over seeds, and the standard error of the mean (sample std / sqrt(n))."""
    def mean(key):
        xs = [r[key] for r in runs if r.get(key) is not None]
        return statistics.fmean(xs) if xs else None

    after = [r["after"] for r in runs if r["after"] is not None]
    sem = statistics.stdev(after) / math.sqrt(len(after)) if len(after) > 1 else None
    return {"row": row, "seeds": len(runs), "pass1_before": mean("before"), "pass1_after": mean("after"),
            "pass1_after_sem": sem, "heldout_pair_accuracy": mean("heldout_pair_accuracy"),
            "heldout_pair_accuracy_min_after_freeze": mean("heldout_pair_accuracy_min_after_freeze"),
            "w_pos_mean": mean("w_pos_mean")}


def differences(table: Sequence[dict]) -> list[dict]:
    """pass@1 after, a - b, with the standard error of the difference sqrt(sem_a^2 + sem_b^2)."""
    by = {r["row"]: r for r in table}
    out = []
    for a, b in COMPARE:
        if a in by and b in by and by[a]["pass1_after"] is not None and by[b]["pass1_after"] is not None:
            diff = by[a]["pass1_after"] - by[b]["pass1_after"]
            sems = [by[x]["pass1_after_sem"] for x in (a, b)]
            se = math.sqrt(sum(s * s for s in sems)) if None not in sems else None
            out.append({"a": a, "b": b, "diff": diff, "se": se, "z": diff / se if se else None})
    return out


def markdown(table: Sequence[dict], diffs: Sequence[dict], stated: dict | None) -> str:
    def pct(x, digits=1):
        return "n/a" if x is None else f"{100 * x:.{digits}f}"

    lines = ["| row | seeds | held-out pass@1 before | after (mean ± s.e.) | RM held-out pair acc. (end) | "
             "lowest after the RM-only steps | mean w+ on positives |", "|---|---|---|---|---|---|---|"]
    for r in table:
        after = f"{pct(r['pass1_after'])} ± {pct(r['pass1_after_sem'])}"
        w = "n/a" if r["w_pos_mean"] is None else f"{r['w_pos_mean']:.2f}"
        lines.append(f"| {r['row']} | {r['seeds']} | {pct(r['pass1_before'])} | {after} | "
                     f"{pct(r['heldout_pair_accuracy'])} | {pct(r['heldout_pair_accuracy_min_after_freeze'])} | {w} |")
    if diffs:
        lines += ["", "| difference in pass@1 after | points | s.e. | z |", "|---|---|---|---|"]
        for d in diffs:
            z = "n/a" if d["z"] is None else f"{d['z']:+.1f}"
            lines.append(f"| {d['a']} − {d['b']} | {100 * d['diff']:+.1f} | {pct(d['se'])} | {z} |")
    if stated is not None:
        lines += ["", noise_line(stated)]
    return "\n".join(lines) + "\n"


def run_rows(configs: dict, out_dir: Path, seeds: Sequence[int], name: str = "ablation_rm",
             train_fn: Callable | None = None) -> dict:
    """Every (seed, row) run in turn, skipping those already finished in their folder; the
    results files are rewritten after each run."""
    paths = output_paths(out_dir, name)
    if train_fn is None:
        from launch.loop import train as train_fn
    runs = []
    for seed in seeds:
        for row, cfg in configs.items():
            run_dir = paths["runs"] / f"{row}-seed{seed}"
            if not (run_dir / "summary.json").is_file():
                import dataclasses
                import shutil

                shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished attempt starts again, empty
                train_fn(dataclasses.replace(cfg, seed=seed), run_dir)
            runs.append(run_record(row, seed, run_dir, cfg.algo.actor_freeze_steps if cfg.algo.uses_rm else 0))
            write(paths, name, configs, seeds, runs)
    return write(paths, name, configs, seeds, runs)


def write(paths: dict, name: str, configs: dict, seeds: Sequence[int], runs: list[dict]) -> dict:
    table = [table_row(row, [r for r in runs if r["row"] == row]) for row in configs if any(r["row"] == row for r in runs)]
    base = next(iter(configs.values()))
    eval_size = heldout_size(base)
    stated = noise(runs, eval_size, min((r["seeds"] for r in table), default=1))  # the seeds finished
    diffs = differences(table)
    out = {"name": name, "rows": {k: ROWS.get(k, []) for k in configs}, "seeds": list(seeds), "table": table,
           "differences": diffs, "runs": runs,
           "settings": {"steps": base.steps, "prompts_per_step": base.prompts_per_step,
                        "n_samples": base.rollout.n_samples, "eval_every": base.eval_every,
                        "heldout_evaluated": eval_size, "noise": stated}}
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    paths["json"].write_text(json.dumps({"provenance": stamp(invoked("launch.ablation.rm")), **out}, indent=2))
    paths["md"].write_text(markdown(table, diffs, stated))
    _plot(runs, list(configs), paths["png"])
    return out


def _plot(runs: Sequence[dict], rows: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    for row in rows:
        for key, axis in (("curve", ax), ("rm_curve", bx)):
            curves = [r[key] for r in runs if r["row"] == row and r[key]]
            if curves:
                steps = sorted(set().union(*curves))
                axis.plot(steps, [statistics.fmean(c[s] for c in curves if s in c) for s in steps], "o-",
                          label=row, markersize=3)
    ax.set(xlabel="RL step", ylabel="held-out pass@1 (greedy)", title="Policy")
    bx.set(xlabel="RL step", ylabel="pair accuracy", title="Token RM on held-out pairs")
    bx.axhline(0.5, color="grey", lw=0.6, ls=":")
    for axis in (ax, bx):
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compose_rows(rows: Sequence[str], overrides: Sequence[str]) -> dict:
    """Each row's TrainConfig: conf/train.yaml + the shared overrides + the row's own."""
    from hydra import compose, initialize_config_dir

    from launch.config import register_configs, to_train_config

    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"--rows: unknown {unknown}; known: {list(ROWS)}")
    register_configs()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base="1.3"):
        return {row: to_train_config(compose(config_name="train", overrides=[*overrides, *ROWS[row]])) for row in rows}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--rows", nargs="+", default=list(ROWS))
    parser.add_argument("--out", default="results")
    parser.add_argument("--name", default="ablation_rm")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml shared by every row")
    args = parser.parse_args(argv)
    output_paths(Path(args.out), args.name)  # a bad --name fails before anything runs
    configs = compose_rows(args.rows, args.overrides)  # a bad override fails before any run
    out = run_rows(configs, Path(args.out), args.seeds, args.name)
    print(markdown(out["table"], out["differences"], out["settings"]["noise"]))
    return out


if __name__ == "__main__":
    main()
