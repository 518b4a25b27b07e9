"""bench_peer's clocks and report: step clocks, the machine's foreign load, the summaries of a
run, the comparison with TRL, and the writers (results/peer.json, results/peer.png, the
printed table). Imports neither trl nor ray, so the unit tests run without them."""
from __future__ import annotations

import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from launch.state.provenance import invoked, stamp

RESULTS = Path(__file__).resolve().parents[1] / "results"
OUT_JSON = RESULTS / "peer.json"
OUT_PNG = RESULTS / "peer.png"
SYSTEMS = ("trl", "shaped", "oreal")
LABELS = {"trl": "TRL GRPOTrainer", "shaped": "ours: shaped", "oreal": "ours: oreal"}


class StepClock:
    """Wall time per step from consecutive end-of-step stamps, evaluation time subtracted.

    `start()` when the system is ready to run its first step; `step(...)` at the end of each
    step, *before* any evaluation done at that step; `evaluated(seconds, pass1, step)` after
    it (the evaluation's time is then not charged to the next step).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.last: float | None = None
        self.steps: list[dict[str, float]] = []
        self.evals: list[dict[str, float]] = []

    def start(self) -> None:
        self.last = self.clock()

    def step(self, samples: int, tokens: int, train_pass_rate: float | None = None, eval_s: float = 0.0,
             foreign_cpu_frac: float = 0.0) -> None:
        now = self.clock()
        wall = now - (self.last if self.last is not None else now) - eval_s
        self.steps.append({"step": len(self.steps) + 1, "wall_s": wall, "samples": float(samples),
                           "tokens": float(tokens),
                           "train_pass_rate": float("nan") if train_pass_rate is None else train_pass_rate,
                           "foreign_cpu_frac": foreign_cpu_frac})
        self.last = now

    def evaluated(self, seconds: float, pass1: float, step: int | None = None) -> None:
        step = len(self.steps) if step is None else step
        self.evals.append({"step": step, "pass1": pass1, "eval_s": seconds,
                           "wall_s": sum(s["wall_s"] for s in self.steps[:step])})
        if self.last is not None:
            self.last += seconds


class ForeignLoad:
    """CPU used by processes outside this run, per interval, as a fraction of the machine.

    The machine is shared (other jobs on the same 2 cores make any step several times
    slower, TRL's two-thread torch the most), so every step records how busy the rest of the
    machine was: (all busy CPU time in /proc/stat - CPU time of this process and its
    descendants: Ray, vLLM, learner ranks, verifier workers) / (elapsed x cores).
    """

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.me = psutil.Process()
        self.cores = psutil.cpu_count() or 1
        self.mark()

    @staticmethod
    def _busy_s() -> float:
        with open("/proc/stat") as f:
            v = [float(x) for x in f.readline().split()[1:9]]
        user, nice, system, idle, iowait, irq, softirq, steal = v
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    def _own(self) -> dict[int, float]:
        out = {}
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                pass
        return out

    def mark(self) -> None:
        self.t, self.busy, self.own = time.perf_counter(), self._busy_s(), self._own()

    def interval(self) -> float:
        """Foreign CPU fraction since the last mark/interval (then marks)."""
        t, busy, own = time.perf_counter(), self._busy_s(), self._own()
        own_delta = sum(v - self.own.get(pid, 0.0) for pid, v in own.items())
        frac = (busy - self.busy - own_delta) / max(1e-9, (t - self.t) * self.cores)
        self.t, self.busy, self.own = t, busy, own
        return min(1.0, max(0.0, frac))


# A step during which other processes used more than this share of the machine is
# "contended": left out of the headline rates (when enough quiet steps remain).
CONTENDED = 0.25


def summarise(steps: Sequence[dict[str, float]], evals: Sequence[dict[str, float]], startup_s: float,
              skip: int = 1) -> dict[str, Any]:
    """samples/s, tokens/s and step seconds; the headline ("steady") rates leave out the first
    `skip` steps when there are more (lazy initialisation; oreal's RM-only steps)."""
    def rates(rows):
        wall = sum(r["wall_s"] for r in rows)
        samples = sum(r["samples"] for r in rows)
        tokens = sum(r["tokens"] for r in rows)
        return {"samples_per_s": samples / wall if wall > 0 else float("nan"),
                "tokens_per_s": tokens / wall if wall > 0 else float("nan"),
                "step_s_mean": wall / len(rows) if rows else float("nan")}

    steady = list(steps[skip:]) if 0 < skip < len(steps) else list(steps)
    quiet = [r for r in steady if r.get("foreign_cpu_frac", 0.0) <= CONTENDED]
    enough = len(quiet) >= max(2, len(steady) // 3)
    used = quiet if enough else steady
    walls = [r["wall_s"] for r in used]
    head, every, all_steady = rates(used), rates(steps), rates(steady)
    foreign = [r.get("foreign_cpu_frac", 0.0) for r in steps]
    return {
        **head,
        "headline_steps": len(used),
        "headline_quiet_only": enough and len(quiet) < len(steady),
        "contended_steps": sum(f > CONTENDED for f in foreign),
        "foreign_cpu_frac_mean": statistics.fmean(foreign) if foreign else 0.0,
        "samples_per_s_steady_incl_contended": all_steady["samples_per_s"],
        "step_s_median": statistics.median(walls) if walls else float("nan"),
        "samples_per_s_all_steps": every["samples_per_s"],
        "tokens_per_s_all_steps": every["tokens_per_s"],
        "step_s_mean_all_steps": every["step_s_mean"],
        "first_step_s": steps[0]["wall_s"] if steps else float("nan"),
        "steady_from_step": (skip + 1) if 0 < skip < len(steps) else 1,
        "steps": len(steps),
        "samples_per_step": steps[0]["samples"] if steps else float("nan"),
        "mean_new_tokens": (sum(r["tokens"] for r in steps) / max(1.0, sum(r["samples"] for r in steps))),
        "startup_s": startup_s,
        "train_wall_s": sum(r["wall_s"] for r in steps),
        "eval_s_total": sum(e["eval_s"] for e in evals),
        "pass1_start": evals[0]["pass1"] if evals else float("nan"),
        "pass1_end": evals[-1]["pass1"] if evals else float("nan"),
        "accuracy_vs_wall": [{"step": e["step"], "wall_s": e["wall_s"], "pass1": e["pass1"]} for e in evals],
        "per_step": list(steps),
    }


def accuracy_at(series: Sequence[dict[str, float]], wall_s: float) -> float:
    """Held-out pass@1 of the latest evaluation at or before `wall_s` of training time."""
    best = float("nan")
    for p in sorted(series, key=lambda p: p["wall_s"]):
        if p["wall_s"] <= wall_s + 1e-9:
            best = p["pass1"]
    return best


def compare(setting: dict[str, Any]) -> dict[str, Any]:
    """Speed-ups over TRL and accuracy at equal wall time (the shortest run's training time)."""
    systems = setting["systems"]
    out: dict[str, Any] = {}
    trl = systems.get("trl")
    present = [s for s in SYSTEMS if s in systems]
    if not present:
        return out
    horizon = min(systems[s]["train_wall_s"] for s in present)
    out["equal_wall_s"] = horizon
    for s in present:
        out[f"{s}_pass1_at_equal_wall"] = accuracy_at(systems[s]["accuracy_vs_wall"], horizon)
        if trl and s != "trl":
            out[f"{s}_samples_per_s_x_trl"] = systems[s]["samples_per_s"] / trl["samples_per_s"]
            out[f"{s}_tokens_per_s_x_trl"] = systems[s]["tokens_per_s"] / trl["tokens_per_s"]
    return out


HEADLINE = "long"  # where real runs spend their time; the small setting is reported beside it


def build_report(settings: dict[str, dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """results/peer.json: headline keys (the long setting if run, else the first; the full
    system `oreal`) + everything."""
    for s in settings.values():
        s["comparison"] = compare(s)
    report: dict[str, Any] = {}
    if settings:
        name = HEADLINE if HEADLINE in settings else next(iter(settings))
        systems = settings[name]["systems"]
        ours = systems.get("oreal") or systems.get("shaped") or {}
        trl = systems.get("trl", {})
        report.update({
            "headline_setting": name,
            "headline_ours_mode": "oreal" if "oreal" in systems else "shaped",
            "ours_samples_per_s": ours.get("samples_per_s", float("nan")),
            "trl_samples_per_s": trl.get("samples_per_s", float("nan")),
            "ours_shaped_samples_per_s": systems.get("shaped", {}).get("samples_per_s", float("nan")),
            "ours_tokens_per_s": ours.get("tokens_per_s", float("nan")),
            "trl_tokens_per_s": trl.get("tokens_per_s", float("nan")),
        })
        t = report["trl_samples_per_s"]
        report["speedup_samples_per_s"] = report["ours_samples_per_s"] / t if t and t == t else float("nan")
    # The same headline numbers for every setting, both of our modes.
    report["by_setting"] = {}
    for name, s in settings.items():
        systems = s["systems"]
        row = {f"{k}_{q}": systems[k][q] for k in SYSTEMS if k in systems
               for q in ("samples_per_s", "tokens_per_s", "step_s_mean", "step_s_median", "startup_s",
                         "pass1_start", "pass1_end", "foreign_cpu_frac_mean") if q in systems[k]}
        row.update({k: v for k, v in s["comparison"].items()})
        report["by_setting"][name] = row
    report["settings"] = settings
    report["meta"] = meta
    return report


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def write_json(report: dict[str, Any], path: Path = OUT_JSON) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite({"provenance": stamp(invoked("bench.bench_peer")), **report}), indent=2,
                               sort_keys=False) + "\n")
    return path


def write_plot(report: dict[str, Any], path: Path = OUT_PNG) -> Path:
    """Per setting: held-out pass@1 vs training wall time, and a bar of samples/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = report["settings"]
    n = max(1, len(settings))
    fig, axes = plt.subplots(n, 2, figsize=(11, 3.8 * n), squeeze=False,
                             gridspec_kw={"width_ratios": [2.2, 1]})
    colors = {"trl": "tab:gray", "shaped": "tab:blue", "oreal": "tab:red"}
    for row, (name, s) in zip(axes, settings.items()):
        ax, bar = row
        systems = s["systems"]
        for key in SYSTEMS:
            if key not in systems:
                continue
            pts = systems[key]["accuracy_vs_wall"]
            ax.plot([p["wall_s"] for p in pts], [p["pass1"] for p in pts], marker="o", color=colors[key],
                    label=f"{LABELS[key]} ({systems[key]['samples_per_s']:.0f} samples/s; other jobs used "
                          f"{systems[key].get('foreign_cpu_frac_mean', 0.0):.0%} of the CPUs)")
        ax.set_xlabel("training wall time (s, start-up and evaluation excluded)")
        ax.set_ylabel("held-out greedy pass@1")
        ax.set_title(f"{name}: {s.get('description', '')}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        keys = [k for k in SYSTEMS if k in systems]
        vals = [systems[k]["samples_per_s"] for k in keys]
        bars = bar.bar([LABELS[k].replace("ours: ", "") for k in keys], vals, color=[colors[k] for k in keys])
        for b, v in zip(bars, vals):
            bar.annotate(f"{v:.1f}" if v < 10 else f"{v:.0f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                         fontsize=8)
        bar.set_ylabel("completions / s (step wall time)")
        bar.set_title(f"{name}: samples/s", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_table(report: dict[str, Any]) -> str:
    head = (f"{'setting':<7} {'system':<16} {'samples/s':>9} {'tokens/s':>9} {'step s':>7} {'1st step':>8} "
            f"{'start-up':>8} {'new tok':>7} {'pass@1 start->end':>17} {'train wall':>10} {'steps used/contended':>20}")
    lines = [head, "-" * len(head)]
    for name, s in report["settings"].items():
        for key in SYSTEMS:
            r = s["systems"].get(key)
            if r is None:
                continue
            lines.append(
                f"{name:<7} {LABELS[key]:<16} {r['samples_per_s']:>9.1f} {r['tokens_per_s']:>9.0f} "
                f"{r['step_s_mean']:>7.2f} {r['first_step_s']:>8.2f} {r['startup_s']:>8.1f} "
                f"{r['mean_new_tokens']:>7.1f} {r['pass1_start']:>8.3f}->{r['pass1_end']:<8.3f} "
                f"{r['train_wall_s']:>10.1f} {r.get('headline_steps', r['steps']):>10}/{r.get('contended_steps', 0):<9}")
        c = s.get("comparison", {})
        if c:
            accs = ", ".join(f"{k}={c.get(f'{k}_pass1_at_equal_wall', float('nan')):.3f}" for k in SYSTEMS
                             if f"{k}_pass1_at_equal_wall" in c)
            sp = ", ".join(f"{k} x{c[f'{k}_samples_per_s_x_trl']:.2f}" for k in ("shaped", "oreal")
                           if f"{k}_samples_per_s_x_trl" in c)
            lines.append(f"{'':<7} samples/s vs TRL: {sp}; pass@1 at equal wall "
                         f"({c['equal_wall_s']:.1f} s): {accs}")
    return "\n".join(lines)
