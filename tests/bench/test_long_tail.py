"""The long-tail case of bench.bench_pipeline (bench.long_tail), small and five times faster:
through the real driver step, Ray actors and verifier pool, partial rollouts beat the
tail-bound step, and every query trained had all K samples ended (none cut, none partial)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_partial_rollouts_beat_the_tail_and_train_only_complete_queries(ray_cluster):
    from bench.long_tail import Setting, run

    s = Setting(queries=8, samples=4, tok_per_s=2000.0, max_concurrent=4, train_s=0.2, sync_s=0.02,
                tail_steps=3, partial_steps=5, warmup=2, budget=0.75)
    out = run(s, fresh_first=False)
    print(f"\ntail {out['tail_bound_step_s']:.2f} s, volume {out['volume_bound_s']:.2f} s, partial "
          f"{out['partial_step_s']:.2f} s (steps: tail {[round(r['step_s'], 2) for r in out['tail_steps']]}, "
          f"partial {[round(r['step_s'], 2) for r in out['partial_steps']]})")
    assert out["partial_step_s"] < out["tail_bound_step_s"]
    assert out["trained_complete"]
    assert out["lengths_p99_over_median"] > 5  # log-normal, sigma 1.1: a long tail even in 96 samples
    steps = out["partial_steps"]
    assert len(steps) == 5 and sum(r["partial_carried"] for r in steps) > 0  # samples were cut and carried
    # every drawn query is trained, carried at the end, or dropped with its K samples
    last = steps[-1]["partial_carried"]
    assert out["trained_queries"] + out["dropped_samples"] / 4 <= out["drawn_queries"]
    assert out["trained_queries"] + out["dropped_samples"] / 4 + last >= out["drawn_queries"]
