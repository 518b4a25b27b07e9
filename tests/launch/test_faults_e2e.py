"""Dead actors mid-step, on the real system (shared `e2e_roles`): a grading process, a
verifier actor and a rollout engine are SIGKILLed while the step runs. The step completes;
every sample of every query is recorded exactly once; the restarted engine holds the current
weights (probe check); the samples are those of the same step without the faults (seeded
sampling), and every fault is counted in the metrics (faults/...)."""
from __future__ import annotations

import dataclasses
import os
import random
import signal

import psutil
import pytest

from tests.verifier.verifier_targets import BROKEN, SLOW

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _kill_once(killed: set, name: str, pid: int) -> None:
    """SIGKILL `pid` the first time `name` is asked for, and wait until it is gone."""
    if name in killed:
        return
    killed.add(name)
    os.kill(pid, signal.SIGKILL)
    try:
        psutil.Process(pid).wait(timeout=30)
    except (psutil.NoSuchProcess, psutil.TimeoutExpired):  # a zombie until its parent reaps it
        pass


def test_dead_grader_verifier_actor_and_engine_mid_step(fresh_policy, e2e_cfg, tmp_path):
    from launch import records
    from launch.loop import rl_step
    from launch.data.tasks import build_prompt, load_task
    from learner.config import AlgoConfig
    from transformers import AutoTokenizer
    from verifier import VerifierPool

    roles = fresh_policy
    cfg = dataclasses.replace(e2e_cfg, prompts_per_step=16, algo=dataclasses.replace(e2e_cfg.algo, mode="reinforce"))
    roles.learner.set_algo(cfg.algo)
    splits = load_task(cfg.task)
    tokenizer = AutoTokenizer.from_pretrained(roles.model_path)
    queries = splits.train[:cfg.prompts_per_step]
    prompt = {q.id: build_prompt(tokenizer, q.question, cfg.task.system_prompt) for q in queries}
    probe_ids = tokenizer(prompt[queries[0].id] + queries[0].answer)["input_ids"]
    roles.probe_ids = probe_ids
    B, K = cfg.prompts_per_step, cfg.rollout.n_samples

    # The same step without faults: what the faulty one must reproduce.
    calm, _, _ = rl_step(cfg, roles, queries, prompt, probe_ids, 7, random.Random(0), run_dir=tmp_path / "calm")
    assert all(calm[f"faults/{k}"] == 0 for k in ("verifier_worker_restarts", "verifier_actor_restarts",
                                                   "regraded_samples", "rollout_engine_restarts", "reissued_queries"))
    roles.reset_policy()

    shared_verifier = roles.verifier
    roles.verifier = VerifierPool(cfg.verifier, target=SLOW)  # grading lasts ~1 s: time to kill in it
    engine_pid = roles.rollout.pids()[1]
    engine_core = [p for p, _ in roles.rollout._procs[1][1]]
    pool_pids = roles.verifier.pids()
    stream, grade, killed = roles.rollout.stream, roles.verifier.grade, set()

    # Each dies at a fixed point of the step (a timer could land after a tiny model's
    # generation is already over, and the engine would then die between steps instead):
    def stream_and_kill(*a, **kw):  # engine 1 dies as the step's generation is sent out
        _kill_once(killed, "engine", engine_pid)
        return stream(*a, **kw)

    def grade_and_kill(*a, **kw):  # a grading process and a verifier actor die as grading starts
        _kill_once(killed, "grader", pool_pids[0]["grader"])
        _kill_once(killed, "actor", pool_pids[1]["actor"])
        return grade(*a, **kw)

    roles.rollout.stream, roles.verifier.grade = stream_and_kill, grade_and_kill
    try:
        metrics, groups, _ = rl_step(cfg, roles, queries, prompt, probe_ids, 7, random.Random(0),
                                     run_dir=tmp_path / "faulty")
    finally:
        del roles.rollout.stream, roles.verifier.grade
        roles.verifier.shutdown()
        roles.verifier = shared_verifier
        roles.learner.set_algo(AlgoConfig(**dataclasses.asdict(e2e_cfg.algo)))

    print(f"\nfaulty step: generate {metrics['timing_s/generate']:.1f} s, verify {metrics['timing_s/verify']:.1f} s, "
          f"faults {({k: v for k, v in metrics.items() if k.startswith('faults/')})}")
    assert metrics["faults/rollout_engine_restarts"] == 1 and metrics["faults/reissued_queries"] > 0
    assert metrics["faults/verifier_worker_restarts"] == 1
    assert metrics["faults/verifier_actor_restarts"] == 1 and metrics["faults/regraded_samples"] > 0
    assert roles.rollout.pids()[1] != engine_pid
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in engine_core), "the dead engine's vLLM engine core was left running"
    # every sample of every query exactly once, as in the calm step: same responses, same verdicts
    faulty, problems = records.read_step(records.step_file(tmp_path / "faulty", 8))
    assert problems == [] and records.check_step(8, faulty, B * K) == []
    calm_records, _ = records.read_step(records.step_file(tmp_path / "calm", 8))
    assert [(r["query_id"], r["sample"], r["response"], r["outcome"]) for r in faulty] == \
           [(r["query_id"], r["sample"], r["response"], r["outcome"]) for r in calm_records]
    # the step trained and synced; the restarted engine samples from the learner's policy
    assert metrics["sync/max_abs_logprob_diff"] <= cfg.learner.sync_tolerance
    from learner.weight_sync import check_in_sync

    check_in_sync(roles.learner, roles.rollout, probe_ids, cfg.learner.sync_tolerance, roles.rollout.version)


def test_broken_verifier_stops_the_run_before_training_with_a_checkpoint(fresh_policy, e2e_cfg, tmp_path):
    """Every verdict `error` (past verifier.stop_frac): train() raises VerifierAlarm before the
    learner sees the step, with a checkpoint of the state before it; the policy is untouched."""
    import json

    import ray
    from safetensors.torch import load

    from launch.loop import train
    from verifier import VerifierAlarm, VerifierPool

    roles = fresh_policy
    cfg = dataclasses.replace(e2e_cfg, steps=2, eval_every=0)
    before = load(ray.get(roles.learner.async_publish_weights()))
    shared_verifier, roles.verifier = roles.verifier, VerifierPool(cfg.verifier, target=BROKEN)
    try:
        with pytest.raises(VerifierAlarm, match="verifier"):
            train(cfg, tmp_path, roles=roles)
    finally:
        roles.verifier.shutdown()
        roles.verifier = shared_verifier
    assert (tmp_path / "ckpt" / "step_000000" / "COMPLETE").is_file()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert not any("rollout/samples" in r for r in rows)  # step 1 was never logged as trained
    records = [json.loads(x) for x in (tmp_path / "rollouts" / "step_00001.jsonl").read_text().splitlines()]
    assert records and all(r["outcome"] == "error" for r in records)
    after = load(ray.get(roles.learner.async_publish_weights()))
    assert all(bool((before[k] == after[k]).all()) for k in before)


def test_golds_the_verifier_cannot_grade_stop_start_up_and_free_every_role(e2e_roles, e2e_cfg):
    """The self-check runs beside the engines' start: its refusal ends start-up with its own
    error, and the engine that was starting is stopped and its placement group removed (the
    cluster's CPUs are free again), so nothing is left holding memory."""
    import time

    import ray

    from launch.roles import Roles

    cfg = dataclasses.replace(e2e_cfg, rollout=dataclasses.replace(e2e_cfg.rollout, num_engines=1))
    free = ray.available_resources().get("CPU", 0.0)
    with pytest.raises(ValueError, match="gold"):
        Roles(cfg, e2e_roles.model_path, ["\\frac{1}{"] * 20)  # no gold can be graded
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0.0) < free and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0.0) == free
