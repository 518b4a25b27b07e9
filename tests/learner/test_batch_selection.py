"""Driver-side data plumbing: judged groups -> kept TrainSamples -> padded rank shards."""
from __future__ import annotations

import random

import pytest
import torch

from actors.types import Rollout
from learner.batch import GlobalCounts, TrainSample, collate, shard
from learner.config import AlgoConfig
from learner.selection import select


def _rollout(qid: str, n_tokens: int, prompt=(5, 6, 7)) -> Rollout:
    return Rollout(query_id=qid, prompt_ids=tuple(prompt), response_ids=tuple(range(10, 10 + n_tokens)),
                   response_text="x", finished=True, logprobs=(0.0,) * n_tokens, policy_version=0)


def test_collate_layout_matches_the_loss_convention():
    # prompt [p0 p1], response [y0 y1 y2], one pad: mask on columns 1..3 (module docstring).
    b = collate([TrainSample((1, 2), (3, 4, 5), 1.0, 0.5), TrainSample((1, 2, 3), (4, 5, 6, 7), -1.0, -0.5)], pad_id=0)
    assert b.input_ids.tolist() == [[1, 2, 3, 4, 5, 0, 0], [1, 2, 3, 4, 5, 6, 7]]
    assert b.mask.tolist() == [[0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]]
    assert b.attention_mask.sum(-1).tolist() == [5, 7]
    assert b.rewards.tolist() == [1.0, -1.0] and b.advantages.tolist() == [0.5, -0.5]
    assert not b.dummy


def test_empty_shard_becomes_a_masked_dummy_micro_batch():
    b = collate([], pad_id=0)
    assert b.dummy and b.mask.sum() == 0


def test_shard_balances_tokens_and_gives_every_rank_equal_micro_batches():
    samples = [TrainSample((1,), tuple(range(n)), 1.0, 0.0) for n in (1, 9, 2, 8, 3, 7, 4)]
    ranks = shard(samples, world_size=2, micro_batch_size=2)
    assert len(ranks) == 2 and len(ranks[0]) == len(ranks[1]) == 2  # 4 + 3 samples -> 2 micro-batches each
    flat = [s for r in ranks for mb in r for s in mb]
    assert sorted(len(s.response_ids) for s in flat) == [1, 2, 3, 4, 7, 8, 9]  # nothing lost or duplicated
    loads = [sum(len(s.response_ids) + 1 for mb in r for s in mb) for r in ranks]
    assert abs(loads[0] - loads[1]) <= 2
    # more ranks than samples: empty micro-batches, still one per rank
    assert [len(r) for r in shard(samples[:1], world_size=3, micro_batch_size=4)] == [1, 1, 1]


def test_global_counts_are_token_totals_of_each_side():
    counts = GlobalCounts.of([TrainSample((1,), (2, 3), 1.0, 1.0), TrainSample((1,), (2, 3, 4), -1.0, -1.0),
                              TrainSample((1,), (5,), 1.0, 1.0)])
    assert counts == GlobalCounts(n_pos_tokens=3, n_neg_tokens=3, n_seqs=3)


def test_filtering_keeps_one_correct_and_one_incorrect_with_full_group_advantages():
    K = 4
    groups = [[_rollout(q, 2 + i) for i in range(K)] for q in "abc"]
    correct = [[True, False, False, False],   # p = 1/4 -> mixed, kept
               [True, True, True, True],      # all correct -> dropped
               [False, False, False, False]]  # all wrong -> dropped
    sel = select(groups, correct, AlgoConfig(mode="oreal"), random.Random(0))
    assert sel.kept_query_frac == pytest.approx(1 / 3)
    assert sel.pass_rates == [0.25, 1.0, 0.0]
    assert len(sel.samples) == 2
    pos, neg = sel.samples
    # A+ = 2K(1-p)/(K-1) = 2*4*0.75/3 = 2.0 ; A- = -2Kp/(K-1) = -2*4*0.25/3 = -2/3
    assert pos.reward == 1.0 and pos.advantage == pytest.approx(2.0)
    assert neg.reward == -1.0 and neg.advantage == pytest.approx(-2 / 3)
    assert pos.response_ids == groups[0][0].response_ids


def test_unfiltered_modes_keep_every_sample():
    groups = [[_rollout("a", 3) for _ in range(4)]]
    for mode in ("reinforce", "shaped"):
        sel = select(groups, [[True, False, True, False]], AlgoConfig(mode=mode), random.Random(0))
        assert len(sel.samples) == 4 and sel.kept_query_frac == 1.0
    # bc with filtering switched off keeps all K too
    sel = select(groups, [[True, False, True, False]], AlgoConfig(mode="bc", filter_groups=False), random.Random(0))
    assert len(sel.samples) == 4


def test_paper_negative_weight_switch():
    groups = [[_rollout("a", 3) for _ in range(4)]]
    sel = select(groups, [[True, False, False, False]], AlgoConfig(mode="bc", neg_weight="paper"), random.Random(0))
    pos, neg = sel.samples
    assert pos.advantage == pytest.approx(2.0)            # positives keep RLOO's A+
    assert neg.advantage == pytest.approx((1 - 0.25) * -1)  # (1 - p) * r


def test_reward_values_switch_paper_one_zero():
    groups = [[_rollout("a", 3) for _ in range(2)]]
    sel = select(groups, [[True, False]], AlgoConfig(mode="reinforce", reward_correct=1.0, reward_incorrect=0.0),
                 random.Random(0))
    assert [s.reward for s in sel.samples] == [1.0, 0.0]


def test_algo_config_errors_name_the_key():
    for kwargs, key in (({"mode": "ppo"}, "algo.mode"), ({"advantage": "gae"}, "algo.advantage"),
                        ({"kl_target": "x"}, "algo.kl_target"), ({"neg_weight": "x"}, "algo.neg_weight"),
                        ({"rm_score": "x"}, "algo.rm_score")):
        with pytest.raises(ValueError, match=key):
            AlgoConfig(**kwargs)
    assert not AlgoConfig(kl_target="old").uses_ref and AlgoConfig().uses_ref
    assert not AlgoConfig(beta=0.0).uses_ref


def test_warmup_cosine_schedule():
    from learner.config import OptimConfig
    from learner.deepspeed_config import warmup_cosine

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, OptimConfig(lr=1.0, min_lr=0.2, warmup_steps=4), total_steps=14)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])   # linear warm-up (step+1)/(warmup+1)
    assert lrs[4] == pytest.approx(1.0)                      # peak
    assert lrs[9] == pytest.approx(0.2 + 0.8 * 0.5)          # half-way down the cosine
    assert lrs[14] == pytest.approx(0.2) and lrs[15] == pytest.approx(0.2)  # floor, then held
