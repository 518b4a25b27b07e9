"""Rollout and judge streamed (launch.streaming) through real Ray actors and the real verifier
pool, around stand-in engines of known, different speeds (bench.standins): grading starts
before generation ends, and the result is the batch result, in query order."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def standin_rollout(ray_cluster):
    from actors.config import RolloutConfig
    from actors.group import RolloutGroup
    from bench.standins import StandInEngine

    cfg = RolloutConfig(num_engines=2, n_samples=4, max_new_tokens=4000, num_cpus_per_actor=0.1)
    # engine 0 decodes 4x faster than engine 1: its queries finish long before engine 1's
    group = RolloutGroup(cfg, "stand-in", seed=0, engine_cls=StandInEngine,
                         engine_kwargs=[{"tok_per_s": 2000.0}, {"tok_per_s": 500.0}])
    yield group
    group.shutdown()


@pytest.fixture(scope="module")
def pool(ray_cluster):
    from verifier import VerifierConfig, VerifierPool

    p = VerifierPool(VerifierConfig(num_workers=2, chunk_size=4))
    yield p
    p.shutdown()


def test_first_verdict_arrives_before_the_last_query_is_generated(standin_rollout, pool):
    from launch.streaming import generate_and_grade

    ids = [str(i) for i in range(12)]
    out = generate_and_grade(standin_rollout, pool, ids, ["p"] * 12, ids, seed_key=(0, 1))
    first_verdict, last_generated = min(out.graded_at), max(out.generated_at)
    print(f"\nfirst verdict at {first_verdict:.2f} s, last query generated at {last_generated:.2f} s, "
          f"grading left after it {out.verify_tail_s:.2f} s")
    assert first_verdict < last_generated
    assert all(g <= v for g, v in zip(out.generated_at, out.graded_at))  # a query is graded after it is generated
    # in query order, K verdicts each, each verdict the one of its own sample
    assert [g[0].query_id for g in out.groups] == ids and len(out.verdicts) == 12 * 4
    for i, group in enumerate(out.groups):
        for r, v in zip(group, out.verdicts[4 * i:4 * i + 4]):
            assert v.correct == (r.response_text.endswith(f"{{{i}}}"))


def test_streamed_equals_batch(standin_rollout, pool):
    """The same samples and verdicts as generating everything, then grading everything."""
    from launch.streaming import generate_and_grade

    ids = [str(i) for i in range(8)]
    streamed = generate_and_grade(standin_rollout, pool, ids, ["p"] * 8, ids, seed_key=(0, 2))
    groups = standin_rollout.generate(ids, ["p"] * 8, seed_key=(0, 2))
    flat = [r for g in groups for r in g]
    verdicts = pool.grade([r.response_text for r in flat], [r.query_id for r in flat], [r.finished for r in flat])
    assert streamed.groups == groups
    assert [v.outcome for v in streamed.verdicts] == [v.outcome for v in verdicts]
