"""The cluster throughput model's arithmetic, by hand for one small setting."""
from __future__ import annotations

import pytest

from bench.cluster_model import HW, RUN, Figure, schedules, step_parts


def _with(base: dict, **values) -> dict:
    return {**base, **{k: Figure(v, "test") for k, v in values.items()}}


def test_step_parts_by_hand():
    run = _with(RUN, queries=2, samples=4, mean_response_tokens=1000, max_response_tokens=2000,
                prompt_tokens=100, trained_frac=0.5, params=1e9)
    hw = _with(HW, decode_tok_s_per_gpu=100, single_seq_tok_s=50, flops_per_token_per_param=18,
               peak_flops=1e12, mfu=0.5, verify_s=1)
    p = step_parts(run, hw, rollout_gpus=2, train_gpus=4)
    assert p["decode_volume_s"] == pytest.approx(8 * 1000 / (2 * 100))  # 40 s of volume
    assert p["decode_tail_s"] == pytest.approx(2000 / 50)  # 40 s for the longest response
    assert p["train_s"] == pytest.approx(4 * 1100 * 18 * 1e9 / (4 * 1e12 * 0.5))  # 39.6 s


def test_pipelining_hides_the_shorter_stage_and_colocation_uses_every_gpu():
    run = _with(RUN, steps=10)
    r = schedules(run, HW, sync=Figure(2.0, "test"))
    half = r["split"]
    assert r["pipelined"]["step_s"] == pytest.approx(max(half["decode_s"] + half["verify_s"], half["train_s"]) + 2.0)
    assert r["pipelined"]["step_s"] <= r["split"]["step_s"]
    assert r["colocated"]["train_s"] == pytest.approx(half["train_s"] / 2)
    assert r["colocated"]["hours"] == pytest.approx(r["colocated"]["step_s"] * 10 / 3600)
