"""Pass rate of every training problem: `python -m launch.passrate [hydra overrides]` (conf/passrate.yaml).

    python -m launch.passrate model.path=/models/my-sft task=math passrate.k=16
    python -m launch.train task=math model.path=/models/my-sft task.passrate_file=<output_dir>/passrate.jsonl

The paper's data step (docs/algorithm.md "Data"): K responses (`passrate.k`, 16) per problem of the
configured task's train split (`task.*`, never re-balanced here), sampled with the policy
training will start from (`model.path`; with `model.warmup.enabled`, the same cached warm-up
that training runs first) at `rollout.temperature` / `rollout.top_p`, graded by the verifier
pool. Only the engines and the verifier start (`launch.eval.EvalRoles`), no learner. Writes
`<output_dir>/passrate.jsonl` (one row per problem: id, pass_rate, k, correct, question; read
by `task.passrate_file`) and `passrate.json` (histogram, throughput, config), and prints the
histogram over `task.rebalance`'s buckets with what re-balancing would make of each.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import hydra
from omegaconf import DictConfig

from actors.config import RolloutConfig
from launch.config import ModelConfig, RayConfig
from launch.data.problem import Problem
from launch.data.rebalance import PassRate, check_buckets, format_histogram, rebalance_counts, write_pass_rates
from launch.data.tasks import TaskConfig
from verifier.config import VerifierConfig


@dataclass
class PassRateConfig:
    # Sampled responses per problem (the paper: 16).
    k: int = 16
    # The first N problems of the train split (0: all).
    limit: int = 0
    # Problems per generation round (the progress bar moves by rounds).
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.k < 1 or self.batch_size < 1 or self.limit < 0:
            raise ValueError(f"need passrate.k >= 1, passrate.batch_size >= 1, passrate.limit >= 0; got "
                             f"{self.k}, {self.batch_size}, {self.limit}")


@dataclass
class PassRateRunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    passrate: PassRateConfig = field(default_factory=PassRateConfig)
    # Seeds the engines and the samples (each problem's samples have their own seed).
    seed: int = 0
    # Where passrate.jsonl and passrate.json go (null: Hydra's run folder).
    output_dir: str | None = None


def register_passrate_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="passrate_schema", node=PassRateRunConfig)


register_passrate_configs()


def to_passrate_config(cfg) -> PassRateRunConfig:
    """Hydra's DictConfig -> PassRateRunConfig (every check runs; paths made absolute)."""
    from omegaconf import OmegaConf, open_dict

    from launch.evaluation.config import policy_folder

    with open_dict(cfg):
        cfg.model.path = policy_folder(cfg.model.path)
    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, PassRateRunConfig):
        raise TypeError(f"config did not compose into PassRateRunConfig (got {type(obj).__name__})")

    def absolute(value: str | None) -> str | None:
        return None if value is None else str(Path(value).expanduser().resolve())

    model = obj.model
    if model.path not in (None, "tiny") and Path(model.path).expanduser().is_dir():
        model = dataclasses.replace(model, path=absolute(model.path))
    from launch.preflight import check_reward_fn

    check_reward_fn(obj.verifier)  # before Ray: one line naming verifier.reward_fn
    ray = dataclasses.replace(obj.ray, temp_dir=absolute(obj.ray.temp_dir))
    return dataclasses.replace(obj, model=model, ray=ray, output_dir=absolute(obj.output_dir))


def problems_and_policy(cfg: PassRateRunConfig) -> tuple[list[Problem], str]:
    """The task's train split (each problem once, the first passrate.limit) and the policy
    training starts from: model.path, warmed up (cached, as training does) when
    model.warmup.enabled."""
    from launch.roles import prepare_policy
    from launch.data.tasks import load_task

    splits = load_task(cfg.task, rebalanced=False)
    return splits.train[: cfg.passrate.limit or None], prepare_policy(cfg, splits)


def measure(cfg: PassRateRunConfig, run_dir: Path, model_path: str, problems: Sequence[Problem],
            prompts: dict[str, str], roles=None) -> dict:
    """K graded samples per problem; writes passrate.jsonl and passrate.json in `run_dir`,
    prints the histogram and returns passrate.json's content. `roles`: started engines and
    verifier (`launch.eval.EvalRoles`) to reuse, else started and shut down here."""
    from tqdm.auto import tqdm

    from launch.eval import EvalRoles

    start = time.perf_counter()
    own = roles is None
    roles = roles or EvalRoles(cfg, model_path, [p.answer for p in problems])
    startup_s = time.perf_counter() - start
    k, size = cfg.passrate.k, cfg.passrate.batch_size
    rates: list[PassRate] = []
    truncated = 0
    gen_s = 0.0
    bar = tqdm(total=len(problems), desc="passrate", unit="problem", dynamic_ncols=True)
    try:
        for r in range(0, len(problems), size):
            chunk = problems[r:r + size]
            t0 = time.perf_counter()
            groups = roles.rollout.generate([p.id for p in chunk], [prompts[p.id] for p in chunk], n=k,
                                            seed_key=(cfg.seed, r))
            gen_s += time.perf_counter() - t0
            flat = [(p, s) for p, g in zip(chunk, groups) for s in g]
            verdicts = roles.verifier.grade([s.response_text for _, s in flat], [p.answer for p, _ in flat],
                                            [s.finished for _, s in flat], questions=[p.question for p, _ in flat])
            correct = {p.id: 0 for p in chunk}
            for (p, s), v in zip(flat, verdicts):
                correct[p.id] += bool(v.correct)
                truncated += not s.finished
            rates += [PassRate(p.id, correct[p.id] / len(g), len(g), correct[p.id], p.question)
                      for p, g in zip(chunk, groups)]
            bar.update(len(chunk))
    finally:
        bar.close()
        if own:
            roles.shutdown()
    wall = time.perf_counter() - start
    run_dir.mkdir(parents=True, exist_ok=True)
    write_pass_rates(run_dir / "passrate.jsonl", rates)
    buckets = check_buckets(cfg.task.rebalance)
    counts = rebalance_counts(problems, {r.id: r.pass_rate for r in rates}, buckets)
    report = {
        "model": model_path,
        "problems": len(rates),
        "k": k,
        "mean_pass_rate": sum(r.pass_rate for r in rates) / max(1, len(rates)),
        "truncated_frac": truncated / max(1, k * len(rates)),
        "histogram": [{"low": lo, "high": hi, "repeats": n, "problems": b, "after_rebalance": a}
                      for (lo, hi, n), b, a in zip(buckets, counts.before, counts.after)],
        "perf": {"wall_s": wall, "startup_s": startup_s, "generate_s": gen_s,
                 "problems_per_s": len(rates) / max(1e-9, wall - startup_s),
                 "samples_per_s": k * len(rates) / max(1e-9, gen_s)},
        "config": asdict(cfg),
    }
    (run_dir / "passrate.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"pass rate of {len(rates)} train problems, {k} samples each (mean {report['mean_pass_rate']:.3f}); "
          f"'after': entries with task.passrate_file set\n{format_histogram(counts)}", flush=True)
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="passrate")
def main(dict_cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from launch.eval import Benchmark, build_prompts

    try:  # bad config, data or model: one line, before Ray starts
        cfg = to_passrate_config(dict_cfg)
        run_dir = Path(cfg.output_dir or HydraConfig.get().runtime.output_dir).resolve()
        problems, model_path = problems_and_policy(cfg)
        prompts = build_prompts(cfg, model_path, [Benchmark("train", problems)])
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        sys.exit(f"error: {e}")
    from launch.eval import init_ray

    init_ray(cfg)
    measure(cfg, run_dir, model_path, problems, prompts)
    import ray

    ray.shutdown()
    print(f"passrate file: {run_dir / 'passrate.jsonl'} (train with task.passrate_file=<it>)", flush=True)


if __name__ == "__main__":
    main()
