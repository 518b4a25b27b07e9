"""Standalone benchmark evaluation: `python -m launch.eval [hydra overrides]` (conf/eval.yaml).

    python -m launch.eval model.path=/runs/x/ckpt/step_000080 eval.benchmarks=[math500,aime24] \\
        eval.n=16 eval.k=[1,4,16] rollout.temperature=0.6

Only the rollout engines (`actors.group.RolloutGroup`) and the verifier pool
(`verifier.VerifierPool`) start, no learner. Per benchmark: greedy pass@1 (`eval.greedy`)
and, with `eval.n` samples per problem, mean pass@1 over the samples, unbiased pass@k and
maj@k for each k of `eval.k` (`launch.evaluation.passk`), and the truncation rate. The table is printed
and written to `<output_dir>/eval.md` and `eval.json`; every response, its extracted answer
and verdict to `samples.jsonl`; the metrics to W&B (`eval/<benchmark>/<metric>`) when
`wandb.mode` is not disabled. Bad config fails before Ray starts, naming the key.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import hydra
from omegaconf import DictConfig

from launch.evaluation.config import EvalRunConfig, register_eval_configs, to_eval_config
from launch.data.problem import Problem

register_eval_configs()
log = logging.getLogger("oreal")


@dataclass
class Benchmark:
    name: str
    problems: list[Problem]


def load_benchmarks(cfg: EvalRunConfig) -> list[Benchmark]:
    """Each of eval.benchmarks, its first eval.limit problems (before Ray starts)."""
    from launch.data.benchmarks import dataset_stem, load_problems

    out = []
    for name in cfg.eval.benchmarks:
        problems = load_problems(name, cfg.task.benchmarks_dir, cfg.task.answer_field, cfg.task.question_field,
                                 cfg.task.max_question_chars, hub=cfg.task.hub, key="eval.benchmarks")
        out.append(Benchmark(dataset_stem(name), problems[: cfg.eval.limit or None]))
    return out


def build_prompts(cfg: EvalRunConfig, model_path: str, benchmarks: Sequence[Benchmark]) -> dict[str, str]:
    """Every problem's prompt (`launch.data.tasks.task_prompt`: chat template or raw, task.system_prompt,
    task.chat_template, task.chat_template_kwargs); a prompt that leaves no
    room to answer within rollout.max_model_len is refused, naming the key."""
    from launch.data.tasks import load_policy_tokenizer, task_prompt

    tokenizer = load_policy_tokenizer(model_path)
    prompts, too_long = {}, []
    for b in benchmarks:
        for p in b.problems:
            prompts[p.id] = task_prompt(tokenizer, p.question, cfg.task)
            if len(tokenizer(prompts[p.id])["input_ids"]) >= cfg.rollout.max_model_len:
                too_long.append(p.id)
    if too_long:
        raise ValueError(f"{len(too_long)} prompt(s) reach rollout.max_model_len={cfg.rollout.max_model_len} tokens "
                         f"(first: {', '.join(too_long[:3])}); raise rollout.max_model_len")
    return prompts


def init_ray(cfg: EvalRunConfig) -> None:
    from launch.ray_connect import connect_ray

    connect_ray(cfg.ray)


class EvalRoles:
    """The engines and the verifier pool of one evaluation (no learner)."""

    def __init__(self, cfg: EvalRunConfig, model_path: str, golds: list[str]):
        from actors.group import RolloutGroup
        from verifier import VerifierPool

        self.verifier = VerifierPool(cfg.verifier)
        self.verifier.self_check(golds)  # golds the verifier cannot grade: refused before the engines
        # nothing here reads the sampled tokens' log-probs (training's mismatch metric): not asked for
        self.rollout = RolloutGroup(replace(cfg.rollout, behaviour_logprobs=False), model_path, cfg.seed)

    def shutdown(self) -> None:
        self.rollout.shutdown()
        self.verifier.shutdown()


def run_eval(cfg: EvalRunConfig, run_dir: Path, model_path: str, benchmarks: Sequence[Benchmark],
             prompts: dict[str, str], roles: EvalRoles | None = None) -> dict:
    """Evaluate every benchmark; writes eval.json, eval.md, samples.jsonl in `run_dir` and
    returns eval.json's content."""
    from tqdm.auto import tqdm

    from launch.evaluation.report import Scorer, markdown_table, write_outputs
    from launch.state.metrics import RunLogger

    start = time.perf_counter()
    own = roles is None
    roles = roles or EvalRoles(cfg, model_path, [p.answer for b in benchmarks for p in b.problems])
    startup_s = time.perf_counter() - start
    run_dir.mkdir(parents=True, exist_ok=True)
    samples_path = run_dir / "samples.jsonl"
    samples_path.write_text("")
    results: dict[str, dict] = {}
    total = sum(len(b.problems) for b in benchmarks)
    bar = tqdm(total=total, desc="eval", unit="problem", dynamic_ncols=True)
    gen_s = samples = 0.0
    try:
        for b in benchmarks:
            scorer = Scorer(b.name, cfg.eval, roles.verifier)
            size = cfg.eval.batch_size
            for r in range(0, len(b.problems), size):
                chunk = b.problems[r:r + size]
                t0 = time.perf_counter()
                greedy = sampled = None
                ids, texts = [p.id for p in chunk], [prompts[p.id] for p in chunk]
                if cfg.eval.greedy:
                    greedy = roles.rollout.generate(ids, texts, n=1, greedy=True)
                if cfg.eval.n:
                    sampled = roles.rollout.generate(ids, texts, n=cfg.eval.n, seed_key=(cfg.seed, r))
                gen_s += time.perf_counter() - t0
                samples += len(chunk) * (int(cfg.eval.greedy) + cfg.eval.n)
                rows = scorer.add(chunk, greedy, sampled)
                with samples_path.open("a") as f:
                    f.writelines(json.dumps(row) + "\n" for row in rows)
                bar.update(len(chunk))
            results[b.name] = scorer.metrics()
    finally:
        bar.close()
        if own:
            roles.shutdown()
    wall = time.perf_counter() - start
    report = {
        "model": model_path,
        "benchmarks": results,
        "ks": cfg.eval.ks,
        "n": cfg.eval.n,
        "greedy": cfg.eval.greedy,
        "limit": cfg.eval.limit,
        "perf": {"wall_s": wall, "startup_s": startup_s, "generate_s": gen_s,
                 "problems_per_s": total / max(1e-9, wall - startup_s),
                 "samples_per_s": samples / max(1e-9, gen_s)},
        "config": asdict(cfg),
    }
    table = markdown_table(results, cfg.eval)
    write_outputs(run_dir, report, table)
    print(table, flush=True)
    if cfg.wandb.mode != "disabled":
        logger = RunLogger(run_dir, asdict(cfg), cfg.wandb.mode, cfg.wandb.project, cfg.wandb.entity,
                           cfg.wandb.name, list(cfg.wandb.tags), group=cfg.wandb.group, job_type=cfg.wandb.job_type)
        logger.log(0, {f"eval/{name}/{k}": v for name, m in results.items() for k, v in m.items()}
                   | {f"perf/eval_{k}": v for k, v in report["perf"].items()})
        logger.finish()
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(dict_cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from launch.model.tiny_model import resolve_model_path

    try:  # unknown benchmark, missing model folder, bad data: one line, before Ray starts
        cfg = to_eval_config(dict_cfg)
        run_dir = Path(cfg.output_dir or HydraConfig.get().runtime.output_dir).resolve()
        benchmarks = load_benchmarks(cfg)
        model_path = resolve_model_path(cfg.model.path, cfg.model.tiny)
        prompts = build_prompts(cfg, model_path, benchmarks)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        sys.exit(f"error: {e}")
    init_ray(cfg)
    run_eval(cfg, run_dir, model_path, benchmarks, prompts)
    import ray

    ray.shutdown()
    print(f"eval folder: {run_dir}", flush=True)


if __name__ == "__main__":
    main()
