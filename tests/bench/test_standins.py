"""The stand-in engine (bench.standins) keeps the real engine's partial-rollout contract
(RolloutEngine.generate_stream) on simulated time: no Ray, no model, a fast clock."""
from __future__ import annotations

import pytest

from actors.config import RolloutConfig
from actors.partial import must_end, segments_of
from bench.standins import StandInEngine, planned_length, sampled_by

IDS = [str(i) for i in range(6)]
SEEDS = [11 * i for i in range(6)]


def _engine(**kw) -> StandInEngine:
    cfg = RolloutConfig(n_samples=4, max_new_tokens=4000)
    return StandInEngine(cfg, "stand-in", seed=0, tok_per_s=1e6, sigma=1.0, **kw)


def _run(engine, **kw) -> list[tuple[int, list]]:
    return list(engine.generate_stream(IDS, ["p"] * len(IDS), seeds=SEEDS, **kw))


def test_without_partial_arguments_the_samples_are_the_unlimited_engines():
    e = _engine()
    old = dict(_run(e))
    assert sorted(old) == list(range(6))
    for i, group in old.items():
        assert [len(r.response_ids) for r in group] == e._lengths(IDS[i], 4, SEEDS[i])
        assert all(r.prompt_ids == (1,) and r.logprobs == () and r.finished and not r.cut for r in group)
    # a budget of 1 ends every sample: the same lengths and answers, now with the plan and log-probs
    full = dict(_run(_engine(), partial_budget=1.0))
    for i, group in full.items():
        assert [len(r.response_ids) for r in group] == [len(r.response_ids) for r in old[i]]
        assert all(planned_length(r) == len(r.response_ids) and not r.cut for r in group)


def test_the_budget_cuts_the_longest_and_they_continue_on_the_next_version():
    e = _engine()
    out = _run(e, partial_budget=0.75)
    assert sorted(i for i, _ in out) == list(range(6))  # every query once
    samples = [r for _, g in out for r in g]
    ended = [r for r in samples if not r.cut]
    cut = [r for r in samples if r.cut]
    assert len(ended) >= must_end(24, 0.75) == 18 and cut
    assert max(planned_length(r) for r in ended) <= min(planned_length(r) for r in cut)  # the tail is cut
    assert all(0 < len(r.response_ids) < planned_length(r) and not r.finished for r in cut)
    first_cut = next(n for n, (_, g) in enumerate(out) if any(r.cut for r in g))
    assert all(not r.cut for _, g in out[:first_cut] for r in g)  # whole queries come first

    e.set_version(1)
    carried = {i: [r for r in g if r.cut] for i, g in out if any(r.cut for r in g)}
    prefixes = [carried.get(i) for i in range(6)]
    again = dict(_run(e, prefixes=prefixes))
    for i, pre in carried.items():
        assert len(again[i]) == len(pre)  # just the continued samples, in order
        for p, r in zip(pre, again[i]):
            assert not r.cut and len(r.response_ids) == planned_length(p)
            assert r.response_ids[:len(p.response_ids)] == p.response_ids
            assert segments_of(r) == ((0, len(p.response_ids)), (1, planned_length(p) - len(p.response_ids)))
            assert [sampled_by(lp) for lp in r.logprobs] == [0] * len(p.response_ids) + [1] * (
                planned_length(p) - len(p.response_ids))
            assert r.policy_version == 0
    fresh = [i for i in range(6) if i not in carried]
    assert all(len(again[i]) == 4 for i in fresh)  # the others: fresh samples on version 1


def test_a_concurrency_limit_queues_samples_and_bounds_the_throughput():
    e = _engine(max_concurrent=2)
    lengths = [n for i in range(6) for n in e._lengths(IDS[i], 4, SEEDS[i])]
    starts = e._slots(lengths)
    assert starts[:2] == [0.0, 0.0] and all(s > 0 for s in starts[2:])
    ends = sorted(s + n / e.tok_per_s for s, n in zip(starts, lengths))
    assert ends[-1] >= sum(lengths) / (2 * e.tok_per_s) - 1e-12  # never faster than 2 sequences at once
    out = _run(e, partial_budget=0.5)
    cut = [r for _, g in out for r in g if r.cut]
    assert len(cut) <= 12 and any(len(r.response_ids) == 0 for r in cut)  # some never got a slot


@pytest.mark.parametrize("budget", [0.5, 0.9])
def test_every_query_is_yielded_once_with_its_samples_in_order(budget):
    out = _run(_engine(max_concurrent=3), partial_budget=budget)
    assert sorted(i for i, _ in out) == list(range(6))
    assert all(len(g) == 4 and all(r.query_id == IDS[i] for r in g) for i, g in out)


def test_continued_samples_can_take_the_slots_first():
    out = _run(_engine(max_concurrent=2), partial_budget=0.5)
    prefixes = [[r for r in g if r.cut] or None for _, g in sorted(out, key=lambda x: x[0])]
    fcfs, first = _engine(max_concurrent=2), _engine(max_concurrent=2, continued_first=True)
    late = dict(_run(fcfs, prefixes=prefixes, partial_budget=0.5))
    early = dict(_run(first, prefixes=prefixes, partial_budget=0.5))
    last = max(i for i, p in enumerate(prefixes) if p)  # its samples queue behind every fresh one
    assert sum(len(r.response_ids) for r in early[last]) > sum(len(r.response_ids) for r in late[last])
