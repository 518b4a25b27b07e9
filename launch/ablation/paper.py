"""`make ablation`: the paper's ablation (Table 2 / Figure 2) on the configured task.

The four modes (reinforce, shaped, bc, oreal) run from the same warmed-up policy, seed and
sample budget (steps x B x K); each run gets fresh roles. Writes results/<name>.json,
results/<name>.md (the table, with the held-out noise under it) and results/<name>.png
(held-out pass@1 vs step); --name defaults to `ablation`. Each run's folder is
results/runs/<mode>-seed<seed> for the default name, results/runs/<name>/<mode>-seed<seed> else.

    python -m launch.ablation --seeds 0 1 -- steps=40 prompts_per_step=16
    python -m launch.ablation --name ablation_long --seeds 0 1 -- steps=100 task.num_heldout=500 eval_size=500
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import statistics
from pathlib import Path
from typing import Callable, Sequence

from launch.config import TrainConfig
from launch.state.provenance import invoked, stamp

MODES = ("reinforce", "shaped", "bc", "oreal")
DEFAULT_NAME = "ablation"
# Per run, from its summary: queries trained (pairs) and drawn per step (algo.dynamic_sampling).
BATCH_KEYS = ("kept_queries_per_step", "kept_queries_per_step_last10", "queries_drawn_per_step")


def output_paths(out_dir: Path, name: str = DEFAULT_NAME) -> dict[str, Path]:
    """Where an ablation named `name` writes: <out>/<name>.{json,md,png} and its run folders
    (<out>/runs for the default name, as before; <out>/runs/<name> for any other)."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"--name must be a plain file stem, got {name!r}")
    out_dir = Path(out_dir)
    runs = out_dir / "runs" if name == DEFAULT_NAME else out_dir / "runs" / name
    return {"json": out_dir / f"{name}.json", "md": out_dir / f"{name}.md", "png": out_dir / f"{name}.png",
            "runs": runs}


def binomial_se(p: float, n: int) -> float:
    """Standard error of a pass@1 measured on n independent problems at true rate p."""
    if n <= 0:
        raise ValueError(f"the held-out size must be > 0, got {n}")
    return math.sqrt(p * (1.0 - p) / n)


def noise(runs: Sequence[dict], eval_size: int, seeds: int) -> dict | None:
    """The stated noise of the table: the binomial standard error of one run's held-out
    pass@1 at the mean over all runs, and of a mode's mean over `seeds` runs (one run's
    divided by sqrt(seeds)). None without a held-out evaluation."""
    after = [r["after"] for r in runs if r.get("after") is not None]
    if not after or eval_size <= 0:
        return None
    p = statistics.fmean(after)
    se_run = binomial_se(p, eval_size)
    return {"eval_size": eval_size, "at_pass1": p, "se_run": se_run, "se_mean": se_run / math.sqrt(max(seeds, 1)),
            "seeds": seeds}


def noise_line(n: dict | None) -> str:
    if n is None:
        return "Noise: no held-out evaluation."
    return (f"Noise: {n['eval_size']} held-out problems; the binomial standard error of one run's pass@1 at "
            f"the observed mean ({100 * n['at_pass1']:.1f}) is {100 * n['se_run']:.1f} points, of a mode's "
            f"mean over {n['seeds']} seeds {100 * n['se_mean']:.1f} points.")


def run_ablation(base: TrainConfig, out_dir: Path, seeds: Sequence[int] = (0,), modes: Sequence[str] = MODES,
                 train_fn: Callable | None = None, roles=None, name: str = DEFAULT_NAME) -> dict:
    """One run per (seed, mode); `roles` shares one topology across runs (tests), with the
    policy reset to the initial weights before each run."""
    paths = output_paths(out_dir, name)
    if train_fn is None:
        from launch.loop import train as train_fn
    out_dir = Path(out_dir)
    runs = []
    for seed in seeds:
        for mode in modes:
            cfg = dataclasses.replace(base, seed=seed, algo=dataclasses.replace(base.algo, mode=mode))
            if roles is not None:
                roles.reset_policy()
                roles.learner.set_algo(cfg.algo)
            run_dir = paths["runs"] / f"{mode}-seed{seed}"
            shutil.rmtree(run_dir, ignore_errors=True)  # the ablation's own run: rerunning it replaces it
            result = train_fn(cfg, run_dir, roles=roles)
            curve = {int(e["eval/step"]): e["eval/pass1"] for e in result.evals}
            runs.append({"mode": mode, "seed": seed, "curve": curve,
                         "before": result.summary["heldout_pass1_before"],
                         "after": result.summary["heldout_pass1_after"],
                         "samples": result.summary["samples"], "rl_wall_s": result.summary["rl_wall_s"],
                         **{k: result.summary[k] for k in BATCH_KEYS if k in result.summary}})
    table = [_row(mode, [r for r in runs if r["mode"] == mode]) for mode in modes]
    eval_size = heldout_size(base)
    stated = noise(runs, eval_size, len(seeds))
    out = {"name": name, "modes": list(modes), "seeds": list(seeds), "table": table, "runs": runs,
           "settings": {"steps": base.steps, "prompts_per_step": base.prompts_per_step,
                        "n_samples": base.rollout.n_samples, "max_new_tokens": base.rollout.max_new_tokens,
                        "eval_every": base.eval_every, "eval_size": base.eval_size,
                        "num_heldout": base.task.num_heldout, "heldout_evaluated": eval_size,
                        "actor_freeze_steps": base.algo.actor_freeze_steps,
                        "freeze_without_rm": base.algo.freeze_without_rm, "noise": stated}}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths["json"].write_text(json.dumps({"provenance": stamp(invoked("launch.ablation")), **out}, indent=2))
    paths["md"].write_text(markdown(table, stated))
    _plot(runs, modes, paths["png"])
    return out


def heldout_size(base: TrainConfig) -> int:
    """Held-out problems each evaluation scores: eval_size of them (0: all num_heldout)."""
    n = base.task.num_heldout
    return min(base.eval_size, n) if base.eval_size else n


def _row(mode: str, runs: list[dict]) -> dict:
    after = [r["after"] for r in runs if r["after"] is not None]
    before = [r["before"] for r in runs if r["before"] is not None]
    return {"mode": mode, "runs": len(runs),
            "pass1_before": statistics.fmean(before) if before else None,
            "pass1_after": statistics.fmean(after) if after else None,
            "pass1_after_std": statistics.pstdev(after) if len(after) > 1 else 0.0,
            "samples": runs[0]["samples"] if runs else 0}


def markdown(table: Sequence[dict], stated: dict | None = None) -> str:
    lines = ["| mode | runs | held-out pass@1 before | after (mean ± std over seeds) | samples per run |",
             "|---|---|---|---|---|"]
    for r in table:
        before = "n/a" if r["pass1_before"] is None else f"{100 * r['pass1_before']:.1f}"
        after = "n/a" if r["pass1_after"] is None else f"{100 * r['pass1_after']:.1f} ± {100 * r['pass1_after_std']:.1f}"
        lines.append(f"| {r['mode']} | {r['runs']} | {before} | {after} | {r['samples']} |")
    if stated is not None:
        lines += ["", noise_line(stated)]
    return "\n".join(lines) + "\n"


def _plot(runs: Sequence[dict], modes: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for mode in modes:
        curves = [r["curve"] for r in runs if r["mode"] == mode]
        steps = sorted(set().union(*curves)) if curves else []
        mean = [statistics.fmean(c[s] for c in curves if s in c) for s in steps]
        ax.plot(steps, mean, "o-", label=mode)
    ax.set(xlabel="RL step", ylabel="held-out pass@1 (greedy)", title="Ablation: one part at a time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--out", default="results")
    parser.add_argument("--name", default=DEFAULT_NAME,
                        help="file stem of the outputs: <out>/<name>.{json,md,png} (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    args = parser.parse_args(argv)

    from hydra import compose, initialize_config_dir

    from launch.config import register_configs, to_train_config

    register_configs()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base="1.3"):
        base = to_train_config(compose(config_name="train", overrides=args.overrides))
    paths = output_paths(Path(args.out), args.name)  # a bad --name fails before any run
    out = run_ablation(base, Path(args.out), args.seeds, args.modes, name=args.name)
    print(markdown(out["table"], out["settings"]["noise"]))
    print(f"results: {paths['json'].resolve()}")


if __name__ == "__main__":
    main()
