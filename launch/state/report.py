"""What a run leaves behind for a person: summary.json, a summary table and PNG plots."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence


def startup_metrics(stages: dict[str, float], run_began: float, launched_at: float | None = None) -> dict[str, float]:
    """Start-up as metrics: each stage's wall seconds (`timing_s/<stage>` -> `startup/<stage>_s`)
    and `perf/startup_s`, the seconds to now (the first step) from `launched_at` (a
    `time.time()`: the process's launch, given by the entry point for its first run, so that
    the interpreter and the imports count, as `startup/launch_s`) or else from `run_began`
    (the run's own start: a later run of the same process, an ablation's runs)."""
    out = {f"startup/{k.removeprefix('timing_s/')}_s": v for k, v in stages.items()}
    if launched_at is not None:
        out["startup/launch_s"] = run_began - launched_at
    out["perf/startup_s"] = time.time() - (run_began if launched_at is None else launched_at)
    return out


def summary(history: Sequence[dict], evals: Sequence[dict], mode: str, wall_s: float,
            startup: dict[str, float] | None = None) -> dict:
    steps = [r for r in history if "rollout/samples" in r]
    return {
        "mode": mode,
        "steps": len(steps),
        "heldout_pass1_before": evals[0].get("eval/pass1") if evals else None,
        "heldout_pass1_after": evals[-1].get("eval/pass1") if evals else None,
        "heldout_pass1_by_step": {int(e["eval/step"]): e["eval/pass1"] for e in evals if "eval/pass1" in e},
        "benchmarks_pass1_by_step": {int(e["eval/step"]): {k.split("/")[1]: v for k, v in e.items()
                                                          if k.endswith("/pass1") and k.count("/") == 2}
                                     for e in evals if "eval/benchmarks/pass1" in e},
        "train_pass_rate_first": steps[0]["rollout/pass_rate"] if steps else None,
        "train_pass_rate_last": steps[-1]["rollout/pass_rate"] if steps else None,
        "samples": int(sum(r["rollout/samples"] for r in steps)),
        "rl_wall_s": sum(r.get("perf/step_s", 0.0) for r in steps),
        "wall_s": wall_s,
        "startup_s": (startup or {}).get("perf/startup_s"),
        **_batch_summary(steps),
        **_rm_summary(history),
        "startup": {k.removeprefix("startup/"): v for k, v in (startup or {}).items() if k.startswith("startup/")},
    }


def _batch_summary(steps: Sequence[dict]) -> dict:
    """Queries trained per step (mixed ones kept: a pair each) and drawn, on average over the
    run and over its last 10 steps: what algo.dynamic_sampling changes."""
    rows = [r for r in steps if "rollout/queries_drawn" in r and "learner/kept_query_frac" in r]
    if not rows:
        return {}
    kept = [r["learner/kept_query_frac"] * r["rollout/queries_drawn"] for r in rows]
    return {"kept_queries_per_step": sum(kept) / len(kept),
            "kept_queries_per_step_last10": sum(kept[-10:]) / len(kept[-10:]),
            "queries_drawn_per_step": sum(r["rollout/queries_drawn"] for r in rows) / len(rows)}


def _rm_summary(history: Sequence[dict]) -> dict:
    """The token RM's held-out figures at the first and last step they were scored."""
    rows = [r for r in history if "reward_model/heldout_pair_accuracy" in r]
    if not rows:
        return {}
    out = {"rm_heldout_pair_accuracy_before": rows[0]["reward_model/heldout_pair_accuracy"],
           "rm_heldout_pair_accuracy_after": rows[-1]["reward_model/heldout_pair_accuracy"],
           "rm_heldout_bce_after": rows[-1]["reward_model/heldout_bce"]}
    for key in ("first_error_hit", "first_error_chance"):
        if f"reward_model/{key}" in rows[-1]:
            out[f"rm_{key}_after"] = rows[-1][f"reward_model/{key}"]
    return out


def table(s: dict) -> str:
    rows = [
        ("mode", s["mode"]),
        ("RL steps", s["steps"]),
        ("samples generated", s["samples"]),
        ("held-out pass@1 before RL", _pct(s["heldout_pass1_before"])),
        ("held-out pass@1 after RL", _pct(s["heldout_pass1_after"])),
        ("train pass rate, first -> last step", f"{_pct(s['train_pass_rate_first'])} -> {_pct(s['train_pass_rate_last'])}"),
        *([("queries trained / drawn per step",
            f"{s['kept_queries_per_step']:.1f} / {s['queries_drawn_per_step']:.1f}")] if "kept_queries_per_step" in s else []),
        *([("token RM held-out pair accuracy", f"{_pct(s['rm_heldout_pair_accuracy_before'])} -> "
                                                f"{_pct(s['rm_heldout_pair_accuracy_after'])}")]
          if "rm_heldout_pair_accuracy_after" in s else []),
        ("start-up (launch to step 1)", f"{s['startup_s']:.0f} s" if s.get("startup_s") is not None else "-"),
        ("RL wall time", f"{s['rl_wall_s']:.0f} s"),
        ("total wall time", f"{s['wall_s']:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * 22 + "+"
    body = [f"| {k:<{width}} | {str(v):<20} |" for k, v in rows]
    return "\n".join([line, *body, line])


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def write(run_dir: Path, s: dict) -> Path:
    path = Path(run_dir) / "summary.json"
    path.write_text(json.dumps(s, indent=2))
    return path


def plot(run_dir: Path, history: Sequence[dict], evals: Sequence[dict],
         weight_examples: Sequence[dict] = ()) -> list[Path]:
    """reward.png (reward and held-out pass@1 vs step), losses.png (each loss term),
    kept.png (kept-query fraction), token_weights.png (w+/w- along a correct and an
    incorrect sample, when the token RM is on)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    steps = [r for r in history if "rollout/samples" in r]
    x = [r["step"] for r in steps]
    out = []

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, [r["rollout/reward_mean"] for r in steps], label="train reward (mean r)")
    ax.plot(x, [r["rollout/pass_rate"] for r in steps], label="train pass rate")
    if evals:
        held = [e for e in evals if "eval/pass1" in e]
    ax.plot([e["eval/step"] for e in held], [e["eval/pass1"] for e in held], "o-", label="held-out pass@1 (greedy)")
    ax.set(xlabel="RL step", title="Reward and held-out accuracy")
    ax.legend(fontsize=8)
    out.append(_save(fig, run_dir / "reward.png"))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("learner/pos", "positive (BC) term"), ("learner/neg", "negative term"),
                       ("learner/kl", "KL term"), ("learner/loss", "policy loss"),
                       ("reward_model/loss", "token RM loss")):
        pts = [(r["step"], r[key]) for r in steps if key in r]
        if pts:
            ax.plot(*zip(*pts), label=label)
    ax.set(xlabel="RL step", title="Loss terms")
    ax.legend(fontsize=8)
    out.append(_save(fig, run_dir / "losses.png"))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, [r.get("learner/kept_query_frac", 0.0) for r in steps])
    ax.set(xlabel="RL step", ylabel="fraction", ylim=(0, 1.05), title="Queries kept (mixed outcomes)")
    out.append(_save(fig, run_dir / "kept.png"))

    rm = [r for r in history if "reward_model/heldout_pair_accuracy" in r or "reward_model/fit_bce" in r]
    if rm:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key, label in (("reward_model/heldout_pair_accuracy", "held-out pair accuracy"),
                           ("reward_model/heldout_bce", "held-out BCE"), ("reward_model/fit_bce", "BCE on the step's batch"),
                           ("reward_model/first_error_hit", "first-error hit"),
                           ("reward_model/first_error_chance", "first-error hit by chance")):
            pts = [(r["step"], r[key]) for r in rm if key in r]
            if pts:
                ax.plot(*zip(*pts), "o-" if key.startswith("reward_model/heldout") or "first" in key else "-",
                        label=label, markersize=3)
        ax.axhline(0.6931, color="grey", lw=0.6, ls=":")
        ax.set(xlabel="RL step", title="Token RM: held-out pairs (ln 2 dotted)")
        ax.legend(fontsize=8)
        out.append(_save(fig, run_dir / "reward_model.png"))

    if weight_examples:
        fig, axes = plt.subplots(len(weight_examples), 1, figsize=(8, 2.4 * len(weight_examples)), squeeze=False)
        for ax, ex in zip(axes[:, 0], weight_examples):
            t = range(len(ex["w_pos"]))
            ax.bar(t, ex["w_pos"], color="tab:green", label="w+")
            ax.bar(t, [-w for w in ex["w_neg"]], color="tab:red", label="-w-")
            ax.set_xticks(list(t))
            ax.set_xticklabels(ex["tokens"], rotation=90, fontsize=6)
            title = f"{'correct' if ex['correct'] else 'incorrect'} sample"
            if ex.get("first_error") is not None:  # where the response first goes wrong (launch.data.first_error)
                k = ex["first_error"]
                ax.axvspan(k - 0.5, k + 0.5, color="tab:orange", alpha=0.3, label="first wrong token")
                ax.get_xticklabels()[k].set_color("tab:orange")
                title += f" (first wrong token: #{k} {ex['tokens'][k]!r})"
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=7)
        out.append(_save(fig, run_dir / "token_weights.png"))
    return out


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
