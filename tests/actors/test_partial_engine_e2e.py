"""End-to-end: `RolloutEngine`'s partial rollouts with vLLM's engine core in a process of its own
(`rollout.in_process_engine=false`, the layout GPUs use), through `RolloutGroup.stream`: a call
cut at its budget yields cut samples that keep their tokens and log-probs, and the next call
continues exactly those from their prefixes as a second segment."""
from __future__ import annotations

import dataclasses

import pytest

from conftest import compose

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_cut_and_continued_through_a_separate_engine_core(ray_cluster):
    from actors.group import RolloutGroup
    from launch.config import to_train_config
    from launch.data.tasks import load_task, task_prompt
    from launch.roles import prepare_policy
    from transformers import AutoTokenizer

    cfg = to_train_config(compose(["rollout.in_process_engine=false", "rollout.n_samples=4"]))
    splits = load_task(cfg.task)
    path = prepare_policy(cfg, splits)  # the warmed-up policy: responses of different lengths
    tok = AutoTokenizer.from_pretrained(path)
    problems = splits.train[:8]
    ids, prompts = [p.id for p in problems], [task_prompt(tok, p.question, cfg.task) for p in problems]
    group = RolloutGroup(dataclasses.replace(cfg.rollout, num_cpus_per_actor=0), path, seed=0)
    try:
        first = dict(group.stream(ids, prompts, seed_key=(0, 0), partial_budget=0.5))
        assert sorted(first) == list(range(8))
        samples = [r for g in first.values() for r in g]
        cut = [r for r in samples if r.cut]
        ended = [r for r in samples if not r.cut]
        assert len(ended) >= 16 and cut, "half of the 32 samples end, and some are cut"
        assert all(not r.finished and len(r.logprobs) == len(r.response_ids) < cfg.rollout.max_new_tokens for r in cut)
        waiting = {i: [r for r in g if r.cut] for i, g in first.items() if any(r.cut for r in g)}
        order = sorted(waiting)
        second = dict(group.stream([ids[i] for i in order], [prompts[i] for i in order], seed_key=(0, 1),
                                   prefixes=[waiting[i] for i in order]))
        for pos, i in enumerate(order):
            before, after = waiting[i], second[pos]
            assert len(after) == len(before)
            for b, a in zip(before, after):
                assert a.response_ids[:len(b.response_ids)] == b.response_ids and a.logprobs[:len(b.logprobs)] == b.logprobs
                assert a.prompt_ids == b.prompt_ids and a.response_text.startswith(b.response_text)
                assert not a.cut and (a.finished or len(a.response_ids) == cfg.rollout.max_new_tokens)
                grown = len(a.response_ids) - len(b.response_ids)
                assert grown > 0 and a.segments == ((0, len(b.response_ids)), (0, grown))
    finally:
        group.shutdown()
