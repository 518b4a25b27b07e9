"""The standalone evaluator (`python -m launch.eval`): config checks before Ray, scoring with a
stand-in verifier (in-process grading), and an e2e run of the tiny model through real engines
and the verifier pool on a slice of two fixture benchmarks."""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import CACHE, FIXTURE_BENCHMARKS, ROOT
from launch.evaluation.config import EvalConfig, policy_folder, register_eval_configs, to_eval_config
from launch.data.problem import Problem
from verifier import grade


def compose_eval(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_eval_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="eval", overrides=overrides)


# ------------------------------------------------------------------------------ config

def test_config_composes_with_the_training_groups():
    cfg = to_eval_config(compose_eval(["eval.benchmarks=[math500,aime24]", "eval.n=8", "task=math",
                                       "verifier.symbol_domain=real", "rollout.temperature=0.6"]))
    assert cfg.eval.benchmarks == ["math500", "aime24"] and cfg.eval.ks == [1, 2, 4, 8]
    assert cfg.rollout.temperature == 0.6 and cfg.verifier.symbol_domain == "real"
    assert cfg.wandb.job_type == "eval"


@pytest.mark.parametrize("overrides,key", [
    (["eval.benchmarks=[math500,mmlu]"], "eval.benchmarks: unknown benchmark 'mmlu'"),
    (["eval.n=4", "eval.k=[8]"], "eval.k"),
    (["eval.greedy=false"], "eval.greedy=false and eval.n=0"),
    (["eval.limit=-1"], "eval.limit"),
    (["model.path=/nonexistent/model"], "model.path='/nonexistent/model'"),
    (["eval.benchmarks=[/nonexistent/b.jsonl]"], "eval.benchmarks: '/nonexistent/b.jsonl'"),
    (["task.benchmarks_dir=/nonexistent"], "task.benchmarks_dir"),
])
def test_bad_config_names_the_key(overrides, key):
    with pytest.raises((ValueError, FileNotFoundError), match=key.replace("(", r"\(").replace("[", r"\[")):
        to_eval_config(compose_eval(overrides))


def test_cli_fails_before_ray_with_one_line(tmp_path):
    """The real command: exit code 1, one `error:` line naming the key, no Ray started."""
    out = subprocess.run([sys.executable, "-m", "launch.eval", "eval.benchmarks=[aime24,nope]",
                          f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("error: eval.benchmarks: unknown benchmark 'nope'")
    assert "Started a local Ray instance" not in out.stdout + out.stderr


def test_checkpoint_folder_means_its_policy(tmp_path):
    step = tmp_path / "ckpt" / "step_000010"
    (step / "policy").mkdir(parents=True)
    (step / "policy" / "config.json").write_text("{}")
    assert policy_folder(str(step)) == str(step / "policy")
    assert policy_folder(str(step / "policy")) == str(step / "policy")
    assert policy_folder("Qwen/Qwen2.5-7B") == "Qwen/Qwen2.5-7B"


def test_default_ks():
    assert EvalConfig(n=0).ks == [] and EvalConfig(n=1).ks == [1]
    assert EvalConfig(n=6).ks == [1, 2, 4, 6] and EvalConfig(n=8, k=[8, 2, 2]).ks == [2, 8]


# ------------------------------------------------------------------------------ scoring

class _InProcessVerifier:
    """VerifierPool's `grade` contract, graded in this process."""

    def grade(self, completions, golds, finished, questions=None):
        questions = questions or [None] * len(completions)
        return [grade(c, g, finished=f, question=q) for c, g, f, q in zip(completions, golds, finished, questions)]


def _rollout(text: str, finished: bool = True):
    return SimpleNamespace(response_text=text, finished=finished, response_ids=(1,) * len(text.split()))


def test_scorer_counts_equivalent_answers_together_for_maj():
    from launch.evaluation.report import Scorer, markdown_table

    cfg = EvalConfig(benchmarks=["math500"], n=4, k=[2, 4])
    p = Problem("t-1", "What is 1/2?", "\\frac12")
    q = Problem("t-2", "What is 2+2?", "4")
    greedy = [[_rollout("\\boxed{0.5}")], [_rollout("\\boxed{5}")]]
    sampled = [[_rollout("\\boxed{3}"), _rollout("\\boxed{\\frac{1}{2}}"), _rollout("\\boxed{0.5}"),
                _rollout("\\boxed{3}", finished=False)],
               [_rollout("\\boxed{5}"), _rollout("\\boxed{5.0}"), _rollout("\\boxed{4}"), _rollout("no answer")]]
    scorer = Scorer("math500", cfg, _InProcessVerifier())
    rows = scorer.add([p, q], greedy, sampled)
    assert len(rows) == 10 and {r["kind"] for r in rows} == {"greedy", "sample"}
    assert rows[0]["answer"] == "0.5" and rows[0]["correct"]
    m = scorer.metrics()
    assert m["greedy_pass@1"] == 0.5
    assert m["pass@1"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert m["pass@2"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    # p: votes 3 (the truncated one does not vote), 1/2 and 0.5 -> 1/2 wins 2 to 1; q: 5 and 5.0 win
    assert m["maj@4"] == pytest.approx(0.5)
    assert m["maj@2"] == pytest.approx(0.0)  # p: tie 3 vs 1/2, the first seen; q: 5
    assert m["truncated_frac"] == pytest.approx(1 / 8)
    table = markdown_table({"math500": m}, cfg)
    assert "| math500 | 2 | 50.0 |" in table and "maj@4" in table


# ------------------------------------------------------------------------------ e2e

@pytest.mark.e2e
@pytest.mark.slow
def test_eval_tiny_model_on_two_benchmarks(ray_cluster, e2e_cfg, tmp_path):
    """Real engines and verifier pool: the table, eval.json, eval.md, samples.jsonl."""
    from launch.eval import load_benchmarks, build_prompts, run_eval
    from launch.roles import prepare_policy
    from launch.data.tasks import load_task

    model_path = prepare_policy(e2e_cfg, load_task(e2e_cfg.task))  # the warmed-up tiny model (cached)
    cfg = to_eval_config(compose_eval([
        f"model.path={model_path}", f"task.benchmarks_dir={FIXTURE_BENCHMARKS}",
        "eval.benchmarks=[gsm8k_test,math500]", "eval.limit=2", "eval.n=4", "eval.k=[2,4]",
        "rollout.max_new_tokens=48", "verifier.num_workers=1", f"ray.temp_dir={CACHE / 'ray'}",
        "wandb.mode=offline", f"output_dir={tmp_path}"]))
    benchmarks = load_benchmarks(cfg)
    assert [len(b.problems) for b in benchmarks] == [2, 2]
    report = run_eval(cfg, tmp_path, model_path, benchmarks, build_prompts(cfg, model_path, benchmarks))

    saved = json.loads((tmp_path / "eval.json").read_text())
    assert set(saved["benchmarks"]) == {"gsm8k_test", "math500"} == set(report["benchmarks"])
    for m in saved["benchmarks"].values():
        assert m["problems"] == 2
        for key in ("greedy_pass@1", "pass@1", "pass@2", "pass@4", "maj@2", "maj@4", "truncated_frac"):
            assert 0.0 <= m[key] <= 1.0, key
        assert m["pass@4"] >= m["pass@2"] >= m["pass@1"]
    assert saved["perf"]["samples_per_s"] > 0
    table = (tmp_path / "eval.md").read_text()
    assert "| gsm8k_test | 2 |" in table and "| math500 | 2 |" in table
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * (1 + 4)  # benchmarks x problems x (greedy + n)
    assert all({"response", "answer", "outcome", "correct", "gold"} <= set(r) for r in rows)
    assert json.loads((tmp_path / "wandb.json").read_text())["job_type"] == "eval"


def test_in_training_benchmark_eval_scores_greedy_pass1():
    """launch.evaluation.evaluate.evaluate_benchmarks (for train()'s eval_every): the same scoring."""
    from launch.evaluation.evaluate import evaluate_benchmarks

    class FakeRollout:
        def generate(self, ids, prompts, n, greedy):
            assert n == 1 and greedy
            return [[_rollout(f"\\boxed{{{p}}}", finished=p != "cut")] for p in prompts]

    benches = {"a": [Problem("a-1", "q", "4"), Problem("a-2", "q", "5")], "b": [Problem("b-1", "q", "1/2")]}
    prompt = {"a-1": "4", "a-2": "6", "b-1": "0.5"}
    m = evaluate_benchmarks(FakeRollout(), _InProcessVerifier(), benches, prompt, batch_size=1)
    assert m["eval/a/pass1"] == 0.5 and m["eval/b/pass1"] == 1.0 and m["eval/benchmarks/pass1"] == 0.75
    assert m["eval/a/truncated_frac"] == 0.0
