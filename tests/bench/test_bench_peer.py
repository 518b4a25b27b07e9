"""bench/bench_peer.py's pure pieces: the reward mapping, the step clock, the summaries and
the JSON/plot writers on synthetic numbers. Nothing here needs TRL (`make test` does not
install it), except the one GRPOConfig test, which is skipped without it."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` is not an installed package: import it from the work tree
    sys.path.insert(0, str(ROOT))

from bench import bench_peer as bp  # noqa: E402

EOS = 2


def test_module_import_needs_neither_trl_nor_ray():
    code = ("import sys; import bench.bench_peer; "
            "bad = [m for m in ('trl', 'ray', 'datasets', 'vllm', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


@pytest.mark.parametrize("completion, gold, finished, expected", [
    ("3 + 4 = 7. The answer is \\boxed{7}.", "7", True, 1.0),
    ("3 + 4 = 8. The answer is \\boxed{8}.", "7", True, -1.0),
    ("3 + 4 = 7. The answer is \\boxed{7}.", "7", False, -1.0),  # cut at max tokens: truncated
    ("3 + 4 = 7. The answer is", "7", True, -1.0),  # no answer
    ("", "7", True, -1.0),
])
def test_outcome_reward_maps_verdicts_to_plus_minus_one(completion, gold, finished, expected):
    assert bp.outcome_reward(completion, gold, finished) == expected


def test_outcome_reward_uses_the_configured_values():
    assert bp.outcome_reward("\\boxed{5}", "5", True, 1.0, 0.0) == 1.0
    assert bp.outcome_reward("\\boxed{6}", "5", True, 1.0, 0.0) == 0.0


def test_trl_reward_function_reads_eos_from_completion_ids_and_counts():
    reward = bp.OutcomeReward(eos_token_id=EOS)
    assert reward.__name__ == "outcome_reward"
    out = reward(prompts=["p"] * 3,
                 completions=["\\boxed{7}", "\\boxed{7}", "\\boxed{9}"],
                 completion_ids=[[5, 6, EOS], [5, 6, 7, 8], [9, EOS]],  # the second never stopped
                 answer=["7", "7", "7"], trainer_state=None, log_extra=None, log_metric=None)
    assert out == [1.0, -1.0, -1.0]
    assert (reward.samples, reward.tokens, reward.correct) == (3, 9, 1)
    reward(completions=["\\boxed{1}"], completion_ids=[[EOS]], answer=["1"])
    assert (reward.samples, reward.tokens, reward.correct) == (4, 10, 2)


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_step_clock_subtracts_evaluation_time():
    fake = FakeClock()
    clock = bp.StepClock(fake)
    clock.evaluated(5.0, 0.25, step=0)  # before start(): not charged to anything
    clock.start()
    fake.t += 2.0
    clock.step(64, 640, 0.5)
    fake.t += 7.0  # a 7 s evaluation after step 1 ...
    clock.evaluated(7.0, 0.5)
    fake.t += 3.0  # ... then a 3 s step
    clock.step(64, 1280)
    assert [s["wall_s"] for s in clock.steps] == [2.0, 3.0]
    assert [(e["step"], e["wall_s"], e["pass1"]) for e in clock.evals] == [(0, 0.0, 0.25), (1, 2.0, 0.5)]


def _synthetic_system(step_s: float, pass1: list[float], samples: int = 64, tokens: int = 30) -> dict:
    steps = [{"step": i + 1, "wall_s": step_s * (2 if i == 0 else 1), "samples": float(samples),
              "tokens": float(samples * tokens), "train_pass_rate": 0.3} for i in range(4)]
    cum = [0.0] + [sum(s["wall_s"] for s in steps[:k]) for k in (2, 4)]
    evals = [{"step": st, "pass1": p, "eval_s": 1.0, "wall_s": w} for st, p, w in zip((0, 2, 4), pass1, cum)]
    return bp.summarise(steps, evals, startup_s=12.0)


def test_summarise_leaves_out_the_first_step():
    r = _synthetic_system(0.5, [0.2, 0.3, 0.4])
    assert r["samples_per_s"] == pytest.approx(64 / 0.5)
    assert r["tokens_per_s"] == pytest.approx(64 * 30 / 0.5)
    assert r["samples_per_s_all_steps"] == pytest.approx(4 * 64 / 2.5)
    assert r["first_step_s"] == 1.0 and r["step_s_mean"] == pytest.approx(0.5)
    assert r["pass1_start"] == 0.2 and r["pass1_end"] == 0.4
    assert r["accuracy_vs_wall"][-1] == {"step": 4, "wall_s": 2.5, "pass1": 0.4}
    assert r["mean_new_tokens"] == pytest.approx(30)


def test_accuracy_at_takes_the_latest_evaluation_not_after_the_time():
    series = [{"wall_s": 0.0, "pass1": 0.1}, {"wall_s": 5.0, "pass1": 0.3}, {"wall_s": 9.0, "pass1": 0.6}]
    assert bp.accuracy_at(series, 4.9) == 0.1
    assert bp.accuracy_at(series, 5.0) == 0.3
    assert bp.accuracy_at(series, 100.0) == 0.6


def _report():
    settings = {
        "small": {"description": "2x64 model", "settings": {"max_new_tokens": 48},
                  "systems": {"trl": _synthetic_system(0.2, [0.25, 0.27, 0.30]),
                              "shaped": _synthetic_system(0.5, [0.25, 0.35, 0.45]),
                              "oreal": _synthetic_system(0.4, [0.25, 0.40, 0.50])}},
        "long": {"description": "4x256 model", "settings": {"max_new_tokens": 320},
                 "systems": {"trl": _synthetic_system(30.0, [0.1, 0.1, 0.12], tokens=250),
                             "shaped": _synthetic_system(12.0, [0.1, 0.15, 0.2], tokens=250),
                             "oreal": _synthetic_system(6.0, [0.1, 0.2, 0.25], tokens=250)}},
    }
    return bp.build_report(settings, {"versions": {"trl": "test"}})


def test_report_has_headline_and_comparison_keys():
    report = _report()
    # The headline is the long setting (where real runs spend their time), though small ran first.
    assert report["headline_setting"] == "long" and report["headline_ours_mode"] == "oreal"
    assert report["ours_samples_per_s"] == pytest.approx(64 / 6.0)
    assert report["trl_samples_per_s"] == pytest.approx(64 / 30.0)
    assert report["speedup_samples_per_s"] == pytest.approx(5.0)
    small = report["by_setting"]["small"]
    assert small["oreal_samples_per_s_x_trl"] == pytest.approx(0.5)
    c = report["settings"]["long"]["comparison"]
    assert c["oreal_samples_per_s_x_trl"] == pytest.approx(5.0)
    assert c["equal_wall_s"] == pytest.approx(6.0 * 5)  # the shortest run's training time
    assert c["oreal_pass1_at_equal_wall"] == 0.25 and c["trl_pass1_at_equal_wall"] == 0.1
    table = bp.format_table(report)
    assert "TRL GRPOTrainer" in table and "ours: oreal" in table and "long" in table


def test_headline_falls_back_to_the_only_setting_run():
    only_small = {"small": {"systems": {"trl": _synthetic_system(0.2, [0.2, 0.3, 0.4]),
                                        "oreal": _synthetic_system(0.4, [0.2, 0.3, 0.4])}}}
    report = bp.build_report(only_small, {})
    assert report["headline_setting"] == "small"
    assert report["speedup_samples_per_s"] == pytest.approx(0.5)


def test_writers_produce_nonempty_files_with_the_required_keys(tmp_path):
    report = _report()
    report["settings"]["small"]["systems"]["trl"]["pass1_end"] = float("nan")  # written as null
    j = bp.write_json(report, tmp_path / "peer.json")
    data = json.loads(j.read_text())
    for key in ("ours_samples_per_s", "trl_samples_per_s", "settings", "meta"):
        assert key in data
    for name in ("small", "long"):
        for system in ("trl", "shaped", "oreal"):
            r = data["settings"][name]["systems"][system]
            for key in ("samples_per_s", "tokens_per_s", "step_s_mean", "startup_s", "accuracy_vs_wall"):
                assert key in r
    assert data["settings"]["small"]["systems"]["trl"]["pass1_end"] is None
    png = bp.write_plot(report, tmp_path / "peer.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_parse_args_quick_and_lists():
    a = bp.parse_args(["--quick", "--systems", "trl,oreal", "--steps", "3"])
    assert a.quick and a.systems == "trl,oreal" and a.steps == 3 and a.settings == "small,long"


def test_trl_arguments_match_our_config(tmp_path):
    cfg = bp.compose_config(bp.setting_overrides("small", 5, 2, 8, "shaped", tmp_path))
    args = bp.trl_args(cfg, tmp_path)
    B, K = cfg.prompts_per_step, cfg.rollout.n_samples
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == B * K
    assert args["num_generations"] == K and args["max_completion_length"] == cfg.rollout.max_new_tokens
    assert (args["temperature"], args["top_p"]) == (cfg.rollout.temperature, cfg.rollout.top_p)
    assert args["learning_rate"] == cfg.learner.policy_optim.lr and args["beta"] == cfg.algo.beta
    assert args["max_steps"] == 5 and args["use_vllm"] is False and args["use_cpu"] is True
    assert cfg.algo.mode == "shaped" and cfg.eval_size == 8 and cfg.wandb.mode == "disabled"
    long_cfg = bp.compose_config(bp.setting_overrides("long", 2, 1, None, "oreal", tmp_path))
    assert long_cfg.rollout.max_new_tokens >= 256 and long_cfg.model.tiny.hidden_size == 256


@pytest.mark.slow
def test_grpo_config_accepts_the_arguments(tmp_path):
    pytest.importorskip("trl")
    from trl import GRPOConfig

    cfg = bp.compose_config(bp.setting_overrides("small", 5, 2, 8, "shaped", tmp_path))
    args = GRPOConfig(**bp.trl_args(cfg, tmp_path))
    assert args.generation_batch_size == cfg.prompts_per_step * cfg.rollout.n_samples
    assert args.num_generations == cfg.rollout.n_samples and not args.use_vllm


def test_contended_steps_are_left_out_of_the_headline_when_enough_remain():
    steps = [{"step": i + 1, "wall_s": w, "samples": 64.0, "tokens": 640.0, "train_pass_rate": 0.3,
              "foreign_cpu_frac": f}
             for i, (w, f) in enumerate([(2.0, 0.0), (1.0, 0.0), (10.0, 0.9), (1.0, 0.1), (1.0, 0.0)])]
    r = bp.summarise(steps, [], startup_s=1.0)
    assert r["headline_steps"] == 3 and r["contended_steps"] == 1 and r["headline_quiet_only"]
    assert r["samples_per_s"] == pytest.approx(64.0)
    assert r["samples_per_s_steady_incl_contended"] == pytest.approx(4 * 64 / 13.0)
    for s in steps[1:]:
        s["foreign_cpu_frac"] = 0.8  # all contended: nothing to leave out
    r = bp.summarise(steps, [], startup_s=1.0)
    assert r["headline_steps"] == 4 and not r["headline_quiet_only"]


def test_foreign_load_probe_reads_a_fraction():
    probe = bp.ForeignLoad()
    sum(i * i for i in range(200_000))  # our own CPU time is not foreign
    assert 0.0 <= probe.interval() <= 1.0
