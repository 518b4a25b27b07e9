"""The driver's delivery check: every worker of every engine loaded every bucket of the plan."""
import pytest

from learner.weight_sync import WeightSyncError, check_delivery
from learner.weight_sync.buckets import plan_buckets


def _plan():
    return plan_buckets([("a", (1024,), "float32"), ("b", (1024,), "float32"), ("c", (8,), "int64")], 4096, version=3)


def _report(plan, rank=0, skipped=0, version=3, missing=0):
    return {"rank": rank, "buckets": len(plan) - missing, "bytes": plan.total_bytes, "skipped": skipped,
            "version": version}


def test_complete_delivery_passes():
    plan = _plan()
    assert len(plan) == 3
    check_delivery(plan, [[_report(plan)], [_report(plan, rank=1), _report(plan, rank=2)]], version=3)


@pytest.mark.parametrize("bad, match", [
    (dict(skipped=1), "engine 1 worker 2 loaded 2 of 3 buckets"),
    (dict(missing=1), "engine 1 worker 2 loaded 2 of 3 buckets"),
    (dict(version=2), "version 2"),
])
def test_a_short_or_stale_worker_is_named(bad, match):
    plan = _plan()
    with pytest.raises(WeightSyncError, match=match):
        check_delivery(plan, [[_report(plan)], [_report(plan, rank=1), _report(plan, rank=2, **bad)]], version=3)
