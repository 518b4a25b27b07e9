"""Config of the standalone evaluator (`python -m launch.eval`, schema of `conf/eval.yaml`).

Only the groups that apply to evaluation: `model` (a model folder or a checkpoint folder),
`task` (the prompt's system prompt, `task.benchmarks_dir`, the question/answer fields),
`rollout` (engines, temperature, top-p, lengths), `verifier`, `ray`, `wandb`, and `eval`.
Every check runs here, before Ray starts, and names the key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from actors.config import RolloutConfig
from launch.config import ModelConfig, RayConfig, WandbConfig
from launch.data.tasks import TaskConfig
from verifier.config import VerifierConfig


@dataclass
class EvalConfig:
    # Benchmarks: preset names of launch/data/benchmarks.py (math500, math_test_full, aime24, aime25,
    # amc23, gsm8k_test, olympiadbench, minerva_math), paths (with a "/") of a JSONL file, a
    # Parquet file or a `save_to_disk` dataset folder, or "hf:<name>", a Hugging Face dataset by
    # name read with task.hf_config / hf_split / hf_revision (task.answer_field / question_field apply).
    benchmarks: list[str] = field(default_factory=lambda: ["math500"])
    # The first N problems of each benchmark (0 = all).
    limit: int = 0
    # Greedy pass@1: one temperature-0 response per problem.
    greedy: bool = True
    # Sampled responses per problem at rollout.temperature / rollout.top_p (0 = greedy only):
    # mean pass@1 over them, pass@k, maj@k, truncation rate.
    n: int = 0
    # k of pass@k and maj@k, each <= n; empty = 1, 2, 4, ... below n, and n.
    k: list[int] = field(default_factory=list)
    # Problems per generation round (the progress bar moves by rounds).
    batch_size: int = 64
    # Distinct answers of one problem clustered by the verifier for maj@k; answers past this
    # many (the rarer ones) are merged only when their normalised text is the same.
    max_cluster_answers: int = 32

    def __post_init__(self) -> None:
        from launch.data.benchmarks import PRESETS

        if not self.benchmarks:
            raise ValueError("eval.benchmarks is empty; name at least one (e.g. eval.benchmarks=[math500])")
        for name in self.benchmarks:
            if "/" not in name and not name.startswith("hf:") and name.removesuffix(".jsonl") not in PRESETS:
                raise ValueError(f"eval.benchmarks: unknown benchmark {name!r}; presets: {', '.join(PRESETS)} "
                                 "(or a JSONL path with a '/', or hf:<Hugging Face dataset name>)")
        if self.limit < 0 or self.n < 0:
            raise ValueError(f"eval.limit and eval.n must be >= 0, got {self.limit} and {self.n}")
        if not self.greedy and not self.n:
            raise ValueError("nothing to evaluate: eval.greedy=false and eval.n=0")
        bad = [k for k in self.k if not 1 <= k <= self.n]
        if bad:
            raise ValueError(f"eval.k values must be in [1, eval.n={self.n}], got {bad}")
        if self.batch_size < 1 or self.max_cluster_answers < 1:
            raise ValueError("eval.batch_size and eval.max_cluster_answers must be >= 1")

    @property
    def ks(self) -> list[int]:
        """The k values reported (sorted, distinct)."""
        if self.k:
            return sorted(set(self.k))
        if not self.n:
            return []
        ks, k = [], 1
        while k < self.n:
            ks.append(k)
            k *= 2
        return ks + [self.n]


@dataclass
class EvalRunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Seeds the engines and the sampled responses (each problem's samples have their own seed).
    seed: int = 0
    # Where eval.json, eval.md and samples.jsonl go (null: Hydra's run folder).
    output_dir: str | None = None


def register_eval_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="eval_schema", node=EvalRunConfig)


def policy_folder(path: str | None) -> str | None:
    """A checkpoint folder (`<run>/ckpt/step_NNNNNN`, no config.json of its own but a
    `policy/` model folder) -> its `policy/` folder; anything else unchanged."""
    if not path:
        return path
    folder = Path(path).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file() and (folder / "policy" / "config.json").is_file():
        return str(folder / "policy")
    return path


def to_eval_config(cfg) -> EvalRunConfig:
    """Hydra's DictConfig -> EvalRunConfig (every check runs; paths made absolute)."""
    import dataclasses

    from omegaconf import OmegaConf, open_dict

    with open_dict(cfg):
        cfg.model.path = policy_folder(cfg.model.path)
    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, EvalRunConfig):
        raise TypeError(f"config did not compose into EvalRunConfig (got {type(obj).__name__}); "
                        "does conf/eval.yaml list eval_schema first in its defaults?")

    def absolute(value: str | None) -> str | None:
        return None if value is None else str(Path(value).expanduser().resolve())

    from launch.model.tiny_model import is_local_path

    model = obj.model
    if model.path not in (None, "tiny") and (is_local_path(model.path) or Path(model.path).is_dir()):
        model = dataclasses.replace(model, path=absolute(model.path))
    task = obj.task
    if task.benchmarks_dir is not None:
        folder = absolute(task.benchmarks_dir)
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"task.benchmarks_dir={task.benchmarks_dir!r}: no such folder (resolved to {folder})")
        task = dataclasses.replace(task, benchmarks_dir=folder)
    for name in obj.eval.benchmarks:
        if "/" in name and not name.startswith("hf:") and not Path(name).expanduser().exists():
            raise FileNotFoundError(f"eval.benchmarks: {name!r}: no such file or dataset folder "
                                    f"(resolved to {absolute(name)})")
    from launch.preflight import check_reward_fn

    check_reward_fn(obj.verifier)  # before Ray: one line naming verifier.reward_fn
    ray = dataclasses.replace(obj.ray, temp_dir=absolute(obj.ray.temp_dir))
    return dataclasses.replace(obj, model=model, task=task, ray=ray, output_dir=absolute(obj.output_dir))
