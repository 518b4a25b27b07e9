"""The demo's pieces: the SFT warm-up, the run report, the ablation runner."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch


def _token_accuracy(model_path: str, examples) -> float:
    """Teacher-forced next-token accuracy on the response tokens (argmax)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    hits = total = 0
    for prompt, response in examples:
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([p + r])
        with torch.no_grad():
            pred = model(ids).logits[0, len(p) - 1:-1].argmax(-1)
        hits += int((pred == torch.tensor(r)).sum())
        total += len(r)
    return hits / total


def test_warmup_raises_accuracy_on_a_tiny_budget(tmp_path):
    from transformers import AutoTokenizer

    from launch.data.tasks import TaskConfig, build_prompt, load_task
    from launch.model.tiny_model import TinyModelConfig, ensure_tiny_model
    from launch.model.warmup import WarmupConfig, ensure_warmup_model

    base = ensure_tiny_model(TinyModelConfig())
    tok = AutoTokenizer.from_pretrained(base)
    task = TaskConfig(num_train=300, num_heldout=20, max_digits=1)
    splits = load_task(task)
    train = [(build_prompt(tok, p.question, task.system_prompt), p.solution) for p in splits.train]
    heldout = [(build_prompt(tok, p.question, task.system_prompt), p.solution) for p in splits.heldout]
    cfg = WarmupConfig(enabled=True, steps=60, batch_size=16, lr=3e-3)
    path = ensure_warmup_model(base, train, cfg, cache_root=tmp_path)
    before, after = _token_accuracy(base, heldout), _token_accuracy(path, heldout)
    assert after > before + 0.3, (before, after)
    stats = json.loads((tmp_path / path.split("/")[-1] / "warmup.json").read_text())
    assert stats["last_loss"] < stats["first_loss"] / 2
    assert ensure_warmup_model(base, train, cfg, cache_root=tmp_path) == path  # cached


def test_warmup_weights_do_not_depend_on_the_callers_thread_count(tmp_path):
    """The demo's starting figure must hold on another machine: the warm-up trains on
    `warmup.threads` whatever torch's thread count is, and gives it back afterwards."""
    import hashlib

    import torch
    from transformers import AutoTokenizer

    from launch.data.tasks import TaskConfig, build_prompt, load_task
    from launch.model.tiny_model import TinyModelConfig, ensure_tiny_model
    from launch.model.warmup import WarmupConfig, sft

    base = ensure_tiny_model(TinyModelConfig())
    tok = AutoTokenizer.from_pretrained(base)
    task = TaskConfig(num_train=64, num_heldout=4, max_digits=2)
    train = [(build_prompt(tok, p.question, task.system_prompt), p.solution) for p in load_task(task).train]

    def weights(threads_outside: int, **cfg) -> str:
        out = tmp_path / f"w{threads_outside}-{len(cfg)}-{cfg.get('threads', 2)}"
        before = torch.get_num_threads()
        torch.set_num_threads(threads_outside)
        try:
            sft(base, train, WarmupConfig(enabled=True, steps=12, batch_size=16, **cfg), out)
            assert torch.get_num_threads() == threads_outside  # restored
        finally:
            torch.set_num_threads(before)
        return hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()

    assert weights(1) == weights(2)
    assert weights(2, threads=1) != weights(2, threads=2)


def test_report_writes_summary_table_and_plots(tmp_path):
    from launch.state import report

    history = [{"step": s, "rollout/samples": 8.0, "rollout/reward_mean": -0.5 + 0.1 * s,
                "rollout/pass_rate": 0.25 + 0.05 * s, "learner/kept_query_frac": 0.5, "learner/pos": 0.1,
                "learner/neg": -0.05, "learner/kl": 0.001, "learner/loss": 0.051, "reward_model/loss": 0.69,
                "perf/step_s": 2.0} for s in (1, 2, 3)]
    evals = [{"eval/step": 0.0, "eval/pass1": 0.25}, {"eval/step": 3.0, "eval/pass1": 0.5}]
    s = report.summary(history, evals, "oreal", wall_s=42.0)
    assert (s["heldout_pass1_before"], s["heldout_pass1_after"], s["samples"], s["steps"]) == (0.25, 0.5, 24, 3)
    assert "25.0%" in report.table(s) and "50.0%" in report.table(s)
    assert json.loads(report.write(tmp_path, s).read_text())["heldout_pass1_after"] == 0.5
    examples = [{"correct": True, "tokens": ["1", "+", "2"], "w_pos": [0.1, 0.5, 0.9], "w_neg": [0, 0, 0]},
                {"correct": False, "tokens": ["1", "+", "3"], "w_pos": [0, 0, 0], "w_neg": [0.2, 0.1, 0.8]}]
    paths = report.plot(tmp_path, history, evals, examples)
    assert {p.name for p in paths} == {"reward.png", "losses.png", "kept.png", "token_weights.png"}
    assert all(p.stat().st_size > 1000 for p in paths)


def test_startup_metrics_name_each_stage_and_time_from_launch():
    import time

    import psutil

    from launch.state import report

    launched = psutil.Process().create_time()
    m = report.startup_metrics({"timing_s/init_ray": 3.0, "timing_s/roles": 20.0}, time.time(), launched)
    assert m["startup/init_ray_s"] == 3.0 and m["startup/roles_s"] == 20.0
    # from this process's launch, interpreter and imports included
    assert 0 < time.time() - launched - m["perf/startup_s"] < 5
    s = report.summary([], [], "oreal", wall_s=1.0, startup=m)
    assert s["startup_s"] == m["perf/startup_s"] and s["startup"]["roles_s"] == 20.0
    assert "start-up (launch to step 1)" in report.table(s)


def test_a_later_run_of_the_same_process_times_its_start_up_from_its_own_start():
    """An ablation runs its modes one after the other in one process: the second run's
    start-up is not the first run's whole wall time."""
    import time

    from launch.state import report

    m = report.startup_metrics({}, time.time() - 2.0)
    assert 2.0 <= m["perf/startup_s"] < 3.0
    assert "startup/launch_s" not in m  # no launch of its own to report


def test_the_first_run_reports_the_seconds_before_it_began():
    """startup/launch_s: from the process's launch to train()'s start (the interpreter,
    Hydra and the imports), which no stage covers."""
    import time

    from launch.state import report

    began = time.time() - 1.0
    m = report.startup_metrics({"timing_s/roles": 1.0}, began, launched_at=began - 4.0)
    assert m["startup/launch_s"] == pytest.approx(4.0)
    assert m["perf/startup_s"] >= 5.0


def test_the_run_logger_opens_beside_the_roles_and_closes_when_they_fail(tmp_path):
    """W&B's start overlaps the roles' start-up; a failing start-up finishes the run it opened."""
    import threading

    from launch.state.metrics import RunLogger, opened_beside

    timings, threads, finished = {}, [], []

    class Logger(RunLogger):
        def __init__(self):
            threads.append(threading.current_thread().name)
            super().__init__(tmp_path, {}, mode="disabled")

        def finish(self):
            finished.append(True)

    with opened_beside(Logger, timings) as opening:
        logger = opening.result()
    assert isinstance(logger, Logger) and threads[0].startswith("run-logger") and "timing_s/logger" in timings
    with pytest.raises(RuntimeError, match="roles failed"):
        with opened_beside(Logger, timings):
            raise RuntimeError("roles failed")
    assert finished == [True]


@pytest.mark.e2e
@pytest.mark.slow
def test_ablation_runner_gives_one_row_per_mode(e2e_roles, e2e_cfg, tmp_path):
    from launch.ablation.paper import MODES, run_ablation

    base = dataclasses.replace(e2e_cfg, steps=1, eval_every=0, eval_size=4, prompts_per_step=8,
                               algo=dataclasses.replace(e2e_cfg.algo, actor_freeze_steps=0))
    out = run_ablation(base, tmp_path, seeds=[0], roles=e2e_roles)
    assert [r["mode"] for r in out["table"]] == list(MODES)
    assert all(r["runs"] == 1 and r["samples"] == 8 * base.rollout.n_samples for r in out["table"])
    assert all(0.0 <= r["pass1_after"] <= 1.0 for r in out["table"])
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert len(saved["runs"]) == 4 and saved["settings"]["steps"] == 1
    assert (tmp_path / "ablation.png").stat().st_size > 1000
    md = (tmp_path / "ablation.md").read_text()
    assert md.count("\n") == 2 + len(MODES) + 2  # the table, a blank line, the noise line
    assert md.splitlines()[-1].startswith("Noise: 4 held-out problems")


def test_progress_bar_says_why_a_step_has_no_policy_loss():
    from launch.loop import _loss_text

    assert _loss_text({"learner/loss": 0.01234}) == "0.0123"
    assert _loss_text({"learner/policy_frozen": 1.0}) == "RM only"
    assert _loss_text({"learner/policy_frozen": 0.0, "learner/skipped": 1.0}) == "no update"
