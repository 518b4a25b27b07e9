"""bench/bench_memory.py's pieces: today's unchunked log-probs equal the chunked ones (so the
two paths compute the same step), the bench's config plans as the rows say, and the target
arithmetic (the benchmark itself runs with `python -m bench.bench_memory`, ~12 min)."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import bench_memory  # noqa: E402


def test_unchunked_logprobs_equal_the_chunked_ones_with_gradients():
    import torch

    from learner.loss import token_logprobs

    torch.manual_seed(0)
    logits = torch.randn(2, 9, 31, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 31, (2, 9))
    (a, Ha), (b, Hb) = bench_memory.unchunked_token_logprobs(logits, ids, with_entropy=True), \
        token_logprobs(logits, ids, chunk_tokens=4, with_entropy=True)
    assert torch.allclose(a, b.to(a.dtype), atol=1e-6) and torch.allclose(Ha, Hb.to(Ha.dtype), atol=1e-6)
    ga, = torch.autograd.grad(a.sum(), logits)
    gb, = torch.autograd.grad(b.sum(), logits)
    assert torch.allclose(ga, gb, atol=1e-6)


def test_the_bench_config_is_the_104m_model_and_each_path_plans():
    from launch.planning.model_shape import load_shape

    cfg = bench_memory.bench_config("new", 8192)
    assert load_shape(cfg.model.path, cfg.model.tiny).params == 104_873_984
    assert (cfg.learner.world_size, cfg.learner.dtype, cfg.algo.mode, cfg.algo.uses_ref) == (1, "bfloat16", "oreal", True)
    today, new = bench_memory.planned_mb("today", 8192), bench_memory.planned_mb("new", 8192)
    assert today[1] == pytest.approx(new[1])  # same model state
    assert today[0] > 1.8 * new[0]  # today's step holds both rows' activations and float32 logits


def test_targets_read_the_8k_rows():
    rows = [dict(tokens_per_sample=8192, path="today", peak_mb=12000.0, step_mb=8000.0, step_s=100.0, planned_mb=13000.0),
            dict(tokens_per_sample=8192, path="new", peak_mb=5000.0, step_mb=1000.0, step_s=120.0, cpu_s=150.0,
                 planned_mb=5500.0),
            dict(tokens_per_sample=8192, path="new_no_ckpt", peak_mb=7000.0, step_mb=3000.0, step_s=100.0, cpu_s=100.0,
                 planned_mb=7100.0),
            dict(tokens_per_sample=2048, path="new", skipped="no RAM")]
    t = bench_memory.targets(rows, 8192)
    assert t["memory"]["met"] is False and t["memory"]["step_mb_met"] is True  # 5000/12000; 1000/8000
    assert t["time"]["met"] is True and t["time"]["ratio"] == 1.2
    assert t["time"]["cpu_met"] is False and t["time"]["cpu_ratio"] == 1.5
    assert t["planner"]["met"] is True and t["planner"]["errors"]["today"] == pytest.approx(0.083)
