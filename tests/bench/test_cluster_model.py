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


def test_the_length_model_puts_the_longest_of_a_step_at_the_cap():
    from bench.cluster_model import Lengths, length_sigma

    sigma = length_sigma(RUN).value
    lengths = Lengths(RUN["mean_response_tokens"].value, sigma, RUN["max_response_tokens"].value)
    n = RUN["queries"].value * RUN["samples"].value
    assert lengths.quantile(1 - 1 / n) == pytest.approx(RUN["max_response_tokens"].value)
    assert lengths.upto(lengths.cap) == pytest.approx(RUN["mean_response_tokens"].value, rel=0.01)  # the cap cuts little
    assert lengths.above(lengths.quantile(0.9)) == pytest.approx(0.1)


def test_partial_rollouts_bound_decode_by_the_cut_not_the_longest():
    from bench.cluster_model import PARTIAL, Lengths, length_sigma, partial_parts

    p = partial_parts(RUN, HW, HW["gpus"].value, PARTIAL)
    full = step_parts(RUN, HW, HW["gpus"].value, HW["gpus"].value)
    assert p["decode_cut_s"] == pytest.approx(p["cut_tokens"] / HW["single_seq_tok_s"].value)
    assert p["decode_s"] == pytest.approx(max(p["decode_volume_s"], p["decode_cut_s"]))
    assert p["decode_s"] < full["decode_tail_s"] / 4  # the issue: 205 s of tail against ~20 s of volume
    # nothing dropped at the default age: the carried tokens make up the rest of the volume
    assert p["dropped_query_frac"] == 0.0
    assert p["fresh_volume_s"] + p["carried_volume_s"] == pytest.approx(full["decode_volume_s"])
    # the steady state: as many samples end as start, and they are the budget's share of those in flight
    lengths = Lengths(RUN["mean_response_tokens"].value, length_sigma(RUN).value, RUN["max_response_tokens"].value)
    assert p["carried_per_fresh"] == pytest.approx(sum(lengths.above(a * p["cut_tokens"]) for a in range(1, 5)))
    assert 1 / (1 + p["carried_per_fresh"]) == pytest.approx(PARTIAL["partial_budget"].value, rel=1e-6)
    # a lower budget cuts sooner and carries more, and drops queries whose samples outlive the age
    low = partial_parts(RUN, HW, HW["gpus"].value, {**PARTIAL, "partial_budget": Figure(0.8, "test")})
    assert low["cut_tokens"] < p["cut_tokens"] and low["carried_per_fresh"] > p["carried_per_fresh"]
    assert low["dropped_query_frac"] > 0


def test_each_schedule_has_its_partial_row():
    r = schedules(RUN, HW, sync=Figure(2.0, "test"))
    for name in ("colocated", "split", "pipelined"):
        cut = r[f"{name}_partial"]
        assert cut["train_s"] == r[name]["train_s"] and cut["step_s"] < r[name]["step_s"]
        assert cut["decode_tail_s"] == cut["decode_cut_s"]
