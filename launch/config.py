"""TrainConfig: the whole run, composed from each component's own config dataclass.

Registered with Hydra's ConfigStore as the schema of `conf/train.yaml`, so a misspelt or
unknown key, or a value of the wrong type, fails at start-up naming the key. Each default
lives in its component's dataclass; `conf/` holds only what a preset changes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from actors.config import RolloutConfig
from launch.state.checkpoint import CkptConfig
from launch.planning.memory_plan import PlanConfig
from launch.placement import check_placement
from launch.data.tasks import TaskConfig
from launch.model.tiny_model import TinyModelConfig, is_local_path
from launch.model.warmup import WarmupConfig
from learner.config import AlgoConfig, LearnerConfig
from verifier.config import VerifierConfig


@dataclass
class ModelConfig:
    # Hub name or local folder of the initial policy; null/"tiny" builds the tiny model. A
    # relative folder is resolved against the launch folder (launch.preflight).
    path: str | None = None
    # A hub model's revision (branch, tag or commit) to pin; null: the default branch. The
    # driver downloads a hub model once, before any role starts (launch.model.hub_model).
    revision: str | None = None
    # Where the driver downloads a hub model to (Hugging Face cache layout); null: the driver's
    # Hugging Face cache ($HF_HOME/hub). On a Ray cluster a folder every node reads: required.
    cache_dir: str | None = None
    # The tiny model made on the spot when `path` is null.
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    # Supervised warm-up on the task's worked solutions before RL (cached).
    warmup: WarmupConfig = field(default_factory=WarmupConfig)

    def __post_init__(self) -> None:
        # A local folder must exist now, before Ray starts. A hub id ("Qwen/...") cannot be
        # checked here: launch.train downloads it before Ray starts (launch.model.hub_model), and
        # fails there naming model.path.
        if self.path and self.path != "tiny" and is_local_path(self.path):
            local = Path(self.path).expanduser()
            if not local.is_dir():
                raise FileNotFoundError(f"model.path={self.path!r}: no such folder (resolved to {local.resolve()})")
            if not (local / "config.json").is_file():
                raise FileNotFoundError(f"model.path={self.path!r}: {local / 'config.json'} not found; "
                                        "expected a Hugging Face model folder")


@dataclass
class RayConfig:
    # Cluster to join ("auto", "ray://..."); null: RAY_ADDRESS if set, else a local cluster.
    address: str | None = None
    # CPUs of a local cluster (null: all of this machine's).
    num_cpus: int | None = None
    # Temp folder of a local cluster (null: Ray's default). Keep it short: Unix socket paths.
    temp_dir: str | None = None
    # Seconds to wait for the learner's and engines' placement groups before failing with
    # what was asked and what the cluster has.
    placement_timeout_s: float = 300.0
    # Before any placement group is requested, compare what the config asks for (learner ranks,
    # engines, verifier actors x their CPUs/GPUs) with ray.cluster_resources() and stop naming
    # the difference (false: skip, e.g. on a cluster that autoscales).
    preflight_check: bool = True


@dataclass
class WandbConfig:
    # offline (default: files only) | online | disabled.
    mode: str = "offline"
    project: str = "oreal"
    entity: str | None = None
    # Run name (null: W&B picks one; a sweep point is named after its swept values, launch/sweep.py).
    name: str | None = None
    # Runs compared together in W&B (null: ungrouped; a sweep's points share the sweep's id).
    group: str | None = None
    # What the run does, to filter by in W&B (train, eval, ...).
    job_type: str = "train"
    tags: list[str] = field(default_factory=list)
    # A table of sampled responses (prompt, response, gold, verdict, reward, w+/w-) every N
    # steps (0 = never), of `table_rows` samples: sample 0 of each query first, then sample 1, ...
    table_every: int = 10
    table_rows: int = 16

    def __post_init__(self) -> None:
        if self.mode not in ("offline", "online", "disabled"):
            raise ValueError(f"wandb.mode must be offline, online or disabled, got {self.mode!r}")
        if self.table_every < 0 or self.table_rows < 1:
            raise ValueError(f"wandb.table_every must be >= 0 and wandb.table_rows >= 1, "
                             f"got {self.table_every} and {self.table_rows}")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    # Checkpoints (every `ckpt.every` steps and after the last) and exact resume (`ckpt.resume`).
    ckpt: CkptConfig = field(default_factory=CkptConfig)
    # Memory plan checked before anything starts (launch.planning.memory_plan; `python -m launch.plan`).
    plan: PlanConfig = field(default_factory=PlanConfig)
    # RL steps (docs/algorithm.md: 10 RM-only steps + 80 policy steps).
    steps: int = 90
    # B: queries per step (docs/algorithm.md: 64).
    prompts_per_step: int = 64
    seed: int = 0
    # Greedy pass@1 on the held-out split before RL, every `eval_every` steps and at the end
    # (0 = only before and after).
    eval_every: int = 10
    # Held-out problems evaluated (0 = all of the held-out split).
    eval_size: int = 0
    # Benchmarks scored with the held-out split, at the same steps, as `python -m launch.eval`
    # scores greedy pass@1 (presets of launch/data/benchmarks.py or paths, read from
    # task.benchmarks_dir); their mean pass@1 (eval/benchmarks/pass1) picks the best checkpoint.
    eval_benchmarks: list[str] = field(default_factory=list)
    # The first N problems of each of them (0 = all).
    eval_benchmark_limit: int = 0
    # Where the run writes metrics, plots and the final policy (null: Hydra's run folder).
    output_dir: str | None = None
    # Save the final policy in Hugging Face format under <output_dir>/policy (every checkpoint
    # also holds one, in <checkpoint>/policy).
    save_policy: bool = False

    def __post_init__(self) -> None:
        if (self.algo.max_staleness or self.algo.tis_cap is not None) and not self.rollout.behaviour_logprobs:
            # one step off-policy: the ratio's pi_old is the sampling engine's log-probs; TIS: its ratio
            self.rollout.behaviour_logprobs = True
        if self.rollout.partial:  # a carried sample's tokens come from several versions: the ratio to its sampler
            self.rollout = dataclasses.replace(self.rollout, behaviour_logprobs=True)
            self.algo = dataclasses.replace(self.algo, off_policy=True)
            if self.algo.dynamic_sampling:
                raise ValueError("rollout.partial=true with algo.dynamic_sampling=true is not supported: refill "
                                 "rounds would carry samples of their own; turn one of them off")
            if self.algo.kl_target == "old":
                raise ValueError("rollout.partial=true with algo.kl_target=old is not supported: the KL to pi_old "
                                 "would need the full distribution of every version that sampled; use kl_target=initial")
        if self.algo.overlong == "penalty" and not self.algo.overlong_buffer < self.rollout.max_new_tokens:
            raise ValueError(f"algo.overlong_buffer={self.algo.overlong_buffer} must be below rollout.max_new_tokens="
                             f"{self.rollout.max_new_tokens}: the penalty ramps over the last overlong_buffer tokens")
        if self.algo.max_staleness and self.algo.kl_target == "old":
            raise ValueError("algo.max_staleness=1 with algo.kl_target=old is not supported: the KL to pi_old "
                             "would need pi_old's full distribution; use kl_target=initial")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.eval_benchmark_limit < 0:
            raise ValueError(f"eval_benchmark_limit must be >= 0, got {self.eval_benchmark_limit}")
        from launch.data.benchmarks import PRESETS

        for name in self.eval_benchmarks:
            if ("/" not in name and not name.endswith((".jsonl", ".parquet")) and not name.startswith("hf:")
                    and name not in PRESETS):
                raise ValueError(f"eval_benchmarks: unknown benchmark {name!r}; presets: {', '.join(PRESETS)}, "
                                 "a path, or hf:<Hugging Face dataset name>")
        if self.prompts_per_step < 1:
            raise ValueError(f"prompts_per_step must be >= 1, got {self.prompts_per_step}")
        if self.eval_every < 0 or self.eval_size < 0:
            raise ValueError("eval_every and eval_size must be >= 0")
        check_placement(self.rollout, self.learner)
        check_warmup(self.model, self.task)

    def prompts_at(self, step: int) -> int:
        """Queries drawn in step `step` (0-based): `algo.rm_only_prompts_per_step` in the RM-only
        steps when set, else `prompts_per_step`."""
        return self.algo.prompts_at(step, self.prompts_per_step)

    @property
    def max_prompts_per_step(self) -> int:
        """The most queries any step draws (what the engines' batch is planned for)."""
        return max(self.prompts_at(0), self.prompts_per_step)


def check_warmup(model: ModelConfig, task: TaskConfig) -> None:
    """The warm-up (`model.warmup`) is the tiny model's SFT on the synthetic task's worked
    solutions; it never runs on a model of the user's or on another task."""
    if not model.warmup.enabled:
        return
    if model.path not in (None, "tiny"):
        raise ValueError(f"model.warmup.enabled=true would fine-tune model.path={model.path!r} on synthetic "
                         "arithmetic before RL (the warm-up is the tiny model's): use model=hf, which turns it "
                         "off, or set model.warmup.enabled=false")
    if task.name != "arith":
        raise ValueError(f"model.warmup.enabled=true is the tiny model's warm-up on synthetic arithmetic; with "
                         f"task.name={task.name!r} set model.warmup.enabled=false (a tiny model without it learns "
                         "nothing from outcome rewards: bring a fine-tuned model with model=hf model.path=...)")


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def to_train_config(cfg: DictConfig) -> TrainConfig:
    """Hydra's DictConfig -> the typed dataclasses (runs every `__post_init__` check), with
    every path key absolute and every input path checked (`launch.preflight.resolve_paths`), and
    `verifier.reward_fn` imported (`launch.preflight.check_reward_fn`)."""
    from launch.preflight import check_reward_fn, resolve_paths

    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, TrainConfig):
        raise TypeError(f"config did not compose into TrainConfig (got {type(obj).__name__}); "
                        "does conf/train.yaml list train_schema first in its defaults?")
    check_reward_fn(obj.verifier)
    return resolve_paths(obj)
