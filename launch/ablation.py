"""`make ablation`: the paper's ablation (Table 2 / Figure 2) on the configured task.

The four modes (reinforce, shaped, bc, oreal) run from the same warmed-up policy, seed and
sample budget (steps x B x K); each run gets fresh roles. Writes results/ablation.json,
results/ablation.md (the table) and results/ablation.png (held-out pass@1 vs step).

    python -m launch.ablation --seeds 0 1 -- steps=40 prompts_per_step=16
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path
from typing import Callable, Sequence

from launch.config import TrainConfig

MODES = ("reinforce", "shaped", "bc", "oreal")


def run_ablation(base: TrainConfig, out_dir: Path, seeds: Sequence[int] = (0,), modes: Sequence[str] = MODES,
                 train_fn: Callable | None = None, roles=None) -> dict:
    """One run per (seed, mode); `roles` shares one topology across runs (tests), with the
    policy reset to the initial weights before each run."""
    from launch.loop import train

    train_fn = train_fn or train
    out_dir = Path(out_dir)
    runs = []
    for seed in seeds:
        for mode in modes:
            cfg = dataclasses.replace(base, seed=seed, algo=dataclasses.replace(base.algo, mode=mode))
            if roles is not None:
                roles.reset_policy()
                roles.learner.set_algo(cfg.algo)
            result = train_fn(cfg, out_dir / "runs" / f"{mode}-seed{seed}", roles=roles)
            curve = {int(e["eval/step"]): e["eval/pass1"] for e in result.evals}
            runs.append({"mode": mode, "seed": seed, "curve": curve,
                         "before": result.summary["heldout_pass1_before"],
                         "after": result.summary["heldout_pass1_after"],
                         "samples": result.summary["samples"], "rl_wall_s": result.summary["rl_wall_s"]})
    table = [_row(mode, [r for r in runs if r["mode"] == mode]) for mode in modes]
    out = {"modes": list(modes), "seeds": list(seeds), "table": table, "runs": runs,
           "settings": {"steps": base.steps, "prompts_per_step": base.prompts_per_step,
                        "n_samples": base.rollout.n_samples, "max_new_tokens": base.rollout.max_new_tokens,
                        "eval_every": base.eval_every, "eval_size": base.eval_size}}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ablation.json").write_text(json.dumps(out, indent=2))
    (out_dir / "ablation.md").write_text(markdown(table))
    _plot(runs, modes, out_dir / "ablation.png")
    return out


def _row(mode: str, runs: list[dict]) -> dict:
    after = [r["after"] for r in runs if r["after"] is not None]
    before = [r["before"] for r in runs if r["before"] is not None]
    return {"mode": mode, "runs": len(runs),
            "pass1_before": statistics.fmean(before) if before else None,
            "pass1_after": statistics.fmean(after) if after else None,
            "pass1_after_std": statistics.pstdev(after) if len(after) > 1 else 0.0,
            "samples": runs[0]["samples"] if runs else 0}


def markdown(table: Sequence[dict]) -> str:
    lines = ["| mode | runs | held-out pass@1 before | after (mean ± std over seeds) | samples per run |",
             "|---|---|---|---|---|"]
    for r in table:
        before = "n/a" if r["pass1_before"] is None else f"{100 * r['pass1_before']:.1f}"
        after = "n/a" if r["pass1_after"] is None else f"{100 * r['pass1_after']:.1f} ± {100 * r['pass1_after_std']:.1f}"
        lines.append(f"| {r['mode']} | {r['runs']} | {before} | {after} | {r['samples']} |")
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
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    args = parser.parse_args(argv)

    from hydra import compose, initialize_config_dir

    from launch.config import register_configs, to_train_config

    register_configs()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        base = to_train_config(compose(config_name="train", overrides=args.overrides))
    out = run_ablation(base, Path(args.out), args.seeds, args.modes)
    print(markdown(out["table"]))
    print(f"results: {Path(args.out).resolve() / 'ablation.json'}")


if __name__ == "__main__":
    main()
