"""The memory planner (launch/planning/memory_plan.py, plan_check.py, plan.py): parameter counts equal
the real modules', hand-checked bytes for one small case, the paper's 7B preset fits on
8 x 80 GB, configs that cannot fit are refused naming the keys, and the CLI's exit codes.
No weights anywhere: shapes come from config.json folders written here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import compose
from launch.config import to_train_config
from launch.planning.memory_plan import GiB, build_plan, layer_bytes_per_token, logits_bytes
from launch.planning.model_shape import ModelShape, ShapeError, load_shape
from launch.plan import render
from launch.planning.plan_check import check
from launch.model.tiny_model import TinyModelConfig

ROOT = Path(__file__).resolve().parents[2]
# Qwen2.5-7B's and -32B's config.json (the keys the planner reads).
QWEN_7B = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=3584, intermediate_size=18944,
               num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
               max_position_embeddings=32768, tie_word_embeddings=False, rms_norm_eps=1e-6)
QWEN_32B = dict(QWEN_7B, hidden_size=5120, intermediate_size=27648, num_hidden_layers=64, num_attention_heads=40,
                num_key_value_heads=8)


def model_dir(tmp_path: Path, config: dict, name: str) -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.fixture
def qwen7b(tmp_path):
    return model_dir(tmp_path, QWEN_7B, "qwen2.5-7b")


def planned(overrides: list[str]):
    cfg = to_train_config(compose(overrides))
    return cfg, check(cfg, load_shape(cfg.model.path, cfg.model.tiny))


# ---------------------------------------------------------------- counts and hand-checked bytes
def test_parameter_counts_equal_the_modules():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    hf = Qwen2Config(**{k: v for k, v in QWEN_7B.items() if k not in ("architectures", "model_type")})
    with torch.device("meta"):
        model = Qwen2ForCausalLM(hf)
    shape = ModelShape.from_hf_config(hf)
    assert shape.params == sum(p.numel() for p in model.parameters()) == 7_615_616_512
    assert shape.backbone_params == sum(p.numel() for p in model.model.parameters())
    assert (shape.num_kv_heads, shape.head_dim, shape.qkv_bias) == (4, 128, True)


def test_chunk_size_is_the_losss_default():
    import inspect

    from launch.planning.memory_plan import LOGPROB_CHUNK_TOKENS
    from learner.loss import token_logprobs

    assert inspect.signature(token_logprobs).parameters["chunk_tokens"].default == LOGPROB_CHUNK_TOKENS


def test_hand_checked_bytes_of_the_tiny_model():
    """Tiny default: hidden 64, 2 layers, 1 head of 64, MLP 256, vocab 512, tied.
    Psi = 512*64 (embedding) + 2 * (3*(64*64 + 64) [q,k,v + bias] + 64*64 [o] + 3*64*256 [MLP]
    + 2*64 [norms]) + 64 [final norm] = 32768 + 2*65856 + 64 = 164544."""
    shape = ModelShape.from_tiny(TinyModelConfig())
    psi = 164_544
    assert shape.params == shape.backbone_params == psi
    cfg, plan = planned(["learner.world_size=2", "learner.dtype=float32"])  # the demo, ZeRO-3 on 2 ranks
    policy, rm, ref = plan.rank.models
    # fp32 weights and grads 4 B, fp32 master + Adam m, v 12 B, each over 2 ranks
    assert (policy.weights, policy.grads, policy.optimizer) == (4 * psi / 2, 4 * psi / 2, 12 * psi / 2)
    assert policy.buffers == 4 * psi  # the CPU touches the gradient bucket up to Psi elements
    assert rm.params == psi + 64 and ref.grads == ref.optimizer == ref.buffers == 0 and ref.weights == 2 * psi
    assert policy.step == (4 + 8) * psi / 2  # fp32 gradient copy + Adam's temporaries on the CPU
    bf16 = build_plan(to_train_config(compose(["learner.dtype=bfloat16"])), shape).rank.models[0]
    assert (bf16.weights, bf16.grads, bf16.optimizer) == (2 * psi / 2, 2 * psi / 2, 12 * psi / 2)
    # one layer's saved bytes per token, fp32: norms 2*(4+8)*64, attention 4*(3*64 + 2*64) + 4 lse,
    # MLP 4*4*256
    assert layer_bytes_per_token(shape, 4, rows=2) == 1536 + 1280 + 4 + 4096
    # demo micro-batch: 16 rows x 256 tokens; logits and their gradient, 3 float32 chunks
    assert (plan.rank.rows, plan.rank.tokens) == (16, 4096)
    assert logits_bytes(shape, 4, 4096, 1024) == (2 * 4096 * 512 * 4, 3 * 1024 * 512 * 4)


def test_the_embedded_demo_fits_this_machine():
    cfg, plan = planned([])
    assert plan.fits, plan.problems
    assert not plan.rank.on_gpu and not plan.engine.on_gpu
    assert 3 * GiB < plan.node_total < 8 * GiB  # measured: the whole demo loop peaks at ~4.7 GB
    # the engines' batch is planned for the demo's largest step, its 96-query RM-only steps
    assert plan.engine.sequences == 96 // cfg.rollout.num_engines * cfg.rollout.n_samples
    assert "(the largest step's queries, algo.rm_only_prompts_per_step / num_engines" in render(plan, cfg)
    pc, paper = planned(["rm=paper"])
    assert paper.engine.sequences == pc.prompts_per_step // pc.rollout.num_engines * pc.rollout.n_samples
    assert "(prompts_per_step / num_engines x n_samples)" in render(paper, pc)


# ---------------------------------------------------------------- the paper preset and refusals
def test_paper_7b_preset_fits_on_8_x_80gb(qwen7b):
    cfg, plan = planned(["+experiment=paper_7b", f"model.path={qwen7b}"])
    assert plan.fits, plan.problems
    assert cfg.learner.world_size == 8 and cfg.plan.gpu_memory_gib == 80
    assert plan.rank.on_gpu and plan.rank.tokens == 17408 and plan.rank.rows == 1
    assert 40 * GiB < plan.rank.peak < 77 * GiB
    text = render(plan, cfg)
    assert "7.62B params" in text and text.endswith("fits")


@pytest.mark.parametrize("overrides,keys", [
    # no checkpointing, 3 x 17408 tokens per micro-batch
    (["learner.gradient_checkpointing=false", "learner.max_tokens_per_micro_batch=65536"],
     ["learner.gradient_checkpointing=true", "learner.max_tokens_per_micro_batch=17408", "learner.world_size="]),
    # the whole model state of three 7B models on one GPU
    (["learner.world_size=1"], ["learner.world_size=8 (", "learner.offload_optimizer=[policy,rm]"]),
])
def test_a_learner_that_cannot_fit_is_refused_naming_the_keys(qwen7b, overrides, keys):
    cfg, plan = planned(["+experiment=paper_7b", f"model.path={qwen7b}", *overrides])
    assert not plan.fits and len(plan.problems) == 1
    line = plan.problems[0]
    assert line.startswith("learner rank: needs") and "plan.gpu_memory_gib=80" in line
    for key in keys:
        assert key in line
    assert "fits)" in line  # at least one single change is planned to fit


def test_32b_at_world_size_1_is_refused(tmp_path):
    path = model_dir(tmp_path, QWEN_32B, "qwen2.5-32b")
    cfg, plan = planned(["+experiment=paper_7b", f"model.path={path}", "learner.world_size=1"])
    assert not plan.fits and "learner.world_size=" in plan.problems[0]
    assert plan.rank.peak > 500 * GiB


def test_an_engine_without_room_for_one_sequence_is_refused(qwen7b):
    cfg, plan = planned(["+experiment=paper_7b", f"model.path={qwen7b}", "rollout.gpu_memory_utilization=0.15"])
    assert [p.split(":")[0] for p in plan.problems] == ["engine"]
    assert "rollout.gpu_memory_utilization>=0.21" in plan.problems[0]


def test_colocated_engine_and_rank_share_one_gpu(qwen7b):
    colocated = ["+experiment=paper_7b", f"model.path={qwen7b}", "learner.colocate=true", "rollout.num_engines=8",
                 "rollout.num_gpus_per_actor=0.5", "learner.num_gpus_per_rank=0.5"]
    cfg, plan = planned(colocated)  # 54 GiB rank + 0.85 x 80 GiB engine on one GPU
    assert plan.problems[0].startswith("learner rank + colocated engine") and "rollout.gpu_memory_utilization<=" in plan.problems[0]
    cfg, plan = planned([*colocated, "rollout.gpu_memory_utilization=0.25"])
    assert plan.fits, plan.problems


def test_a_cpu_node_too_small_is_refused():
    cfg, plan = planned(["plan.cpu_memory_gib=2"])
    assert not plan.fits and plan.problems[0].startswith("CPU node: needs") and "plan.cpu_memory_gib=2" in plan.problems[0]


def test_a_hub_name_not_in_the_cache_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ShapeError, match=r"model.path='nobody/no-such-model' .*not in the local Hugging Face cache"):
        load_shape("nobody/no-such-model", TinyModelConfig())


# ---------------------------------------------------------------- the CLI and launch.train
def _run(module: str, *overrides: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_exits_0_on_the_demo_and_1_naming_the_keys_on_a_bad_config(qwen7b):
    ok = _run("launch.plan")
    assert ok.returncode == 0, ok.stderr
    assert "learner: 2 rank(s), on the CPU" in ok.stdout and ok.stdout.rstrip().endswith("fits")
    bad = _run("launch.plan", "+experiment=paper_7b", f"model.path={qwen7b}", "learner.gradient_checkpointing=false")
    assert bad.returncode == 1
    assert "DOES NOT FIT: learner rank" in bad.stdout
    assert "memory plan: learner rank: needs" in bad.stderr and "learner.gradient_checkpointing=true" in bad.stderr


def test_train_runs_the_check_before_anything_starts(tmp_path):
    """A config that cannot fit stops `launch.train` at once (no Ray, no model built)."""
    out = _run("launch.train", "plan.cpu_memory_gib=1", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert out.returncode == 1
    assert "memory plan: CPU node: needs" in out.stderr and "plan.check=false" in out.stderr
    assert "Started a local Ray instance" not in out.stdout + out.stderr
