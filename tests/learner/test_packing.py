"""Token-budget micro-batches (learner.max_tokens_per_micro_batch) and per-model offload.

The packer is checked as a pure function (budget in padded tokens, every sample exactly once,
equal micro-batch counts per rank, oversize samples alone, fewest micro-batches), then for the
thing it must not change: a 2-rank ZeRO-3 step on gloo gives the same losses, gradients and
updated weights with and without the budget.
"""
from __future__ import annotations

import itertools
import math
import os
import random
import time
import traceback

import pytest

from conftest import free_port, run_spawned

from learner.batch import TrainSample, collate, pack, padded_tokens, shard
from learner.config import LearnerConfig, OptimConfig


def _samples(lengths, rng=None) -> list[TrainSample]:
    """Samples of the given total lengths (prompt + response), prompts of 1-4 tokens."""
    rng = rng or random.Random(0)
    out = []
    for i, n in enumerate(lengths):
        p = min(n - 1, rng.randint(1, 4))
        out.append(TrainSample(tuple(rng.randrange(3, 500) for _ in range(p)),
                               tuple(rng.randrange(3, 500) for _ in range(n - p)),
                               reward=1.0 if i % 2 else -1.0, advantage=0.5 if i % 2 else -0.5))
    return out


def _n(s: TrainSample) -> int:
    return len(s.prompt_ids) + len(s.response_ids)


def _check(samples, ranks, budget, max_rows):
    """The packer's invariants on one `shard` result."""
    # every rank runs the same number of micro-batches (ZeRO-3 collectives stay in step)
    assert len({len(r) for r in ranks}) == 1 and len(ranks[0]) >= 1
    # every sample exactly once (by identity: equal samples are distinct rows)
    placed = [id(s) for r in ranks for mb in r for s in mb]
    assert sorted(placed) == sorted(id(s) for s in samples)
    for r in ranks:
        for mb in r:
            assert len(mb) <= max_rows
            if len(mb) > 1:  # padded size rows x longest row within the budget (a lone
                assert padded_tokens(mb) <= budget, [_n(s) for s in mb]  # sample may exceed it)
    # a micro-batch is padded exactly as `collate` pads it
    some = next((mb for r in ranks for mb in r if mb), None)
    if some:
        assert collate(some, pad_id=0).input_ids.numel() == padded_tokens(some)


def test_budget_packs_by_padded_tokens_and_rows():
    samples = _samples([30, 8, 9, 10, 25, 7, 6, 12])
    mbs = pack(samples, max_tokens=40, max_rows=3)
    assert [[_n(s) for s in mb] for mb in mbs] == [[30], [25], [12, 10, 9], [8, 7, 6]]
    assert all(padded_tokens(mb) <= 40 for mb in mbs)
    # micro_batch_size still caps the rows: 2 rows of 8 would fit in 40 tokens five times over
    assert [len(mb) for mb in pack(samples, max_tokens=1000, max_rows=2)] == [2, 2, 2, 2]


def test_a_sample_over_the_budget_gets_a_micro_batch_of_its_own():
    samples = _samples([50, 5, 120, 6, 7])
    mbs = pack(samples, max_tokens=20, max_rows=8)
    assert [[_n(s) for s in mb] for mb in mbs] == [[120], [50], [7, 6], [5]]
    # even a budget below every sample keeps all of them, one per micro-batch
    assert [len(mb) for mb in pack(samples, max_tokens=1, max_rows=8)] == [1] * 5


def test_no_budget_keeps_the_sequence_count_micro_batches():
    samples = _samples(range(2, 25))
    for world, mbs in ((1, 4), (2, 3), (3, 8), (5, 1)):
        ranks = shard(samples, world, mbs)
        n_samples = [sum(len(mb) for mb in r) for r in ranks]
        assert [len(r) for r in ranks] == [max(math.ceil(n / mbs) for n in n_samples)] * world
        assert all(len(mb) == mbs for r in ranks for mb in r[:-1] if r[-1])  # full but the last


def test_the_budget_changes_micro_batches_not_the_ranks_shares():
    samples = _samples([40, 3, 17, 22, 9, 9, 31, 5, 2, 14, 28])
    plain = shard(samples, 3, 4)
    packed = shard(samples, 3, 4, 45)
    for a, b in zip(plain, packed):
        assert sorted(id(s) for mb in a for s in mb) == sorted(id(s) for mb in b for s in mb)
    _check(samples, packed, 45, 4)


def test_more_ranks_than_samples_pads_with_empty_micro_batches():
    samples = _samples([10, 300])
    ranks = shard(samples, 4, 8, 64)
    assert [len(r) for r in ranks] == [1, 1, 1, 1]
    assert sorted(len(r[0]) for r in ranks) == [0, 0, 1, 1]  # the empty ones become dummies
    assert [len(r) for r in shard([], 2, 8, 64)] == [1, 1]


def _lengths(rng: random.Random, n: int) -> list[int]:
    kind = rng.choice(["uniform", "lognormal", "bimodal", "equal", "tiny", "huge"])
    if kind == "uniform":
        return [rng.randint(2, 400) for _ in range(n)]
    if kind == "lognormal":  # long-tailed, like reasoning traces
        return [min(4000, max(2, int(rng.lognormvariate(4.5, 1.0)))) for _ in range(n)]
    if kind == "bimodal":  # short answers and truncated long ones
        return [rng.choice([rng.randint(2, 30), rng.randint(300, 512)]) for _ in range(n)]
    if kind == "equal":
        return [rng.randint(2, 200)] * n
    if kind == "tiny":
        return [2] * n
    return [rng.randint(500, 3000) for _ in range(n)]  # mostly over the budget


def test_property_random_length_distributions():
    rng = random.Random(1234)
    for _ in range(400):
        samples = _samples(_lengths(rng, rng.randint(0, 70)), rng)
        world, rows, budget = rng.randint(1, 8), rng.randint(1, 16), rng.choice([1, 16, 64, 256, 700, 2048])
        ranks = shard(samples, world, rows, budget)
        _check(samples, ranks, budget, rows)
        for r in ranks:  # the longest sample leads each micro-batch; oversize ones are alone
            for mb in r:
                if mb and _n(mb[0]) > budget:
                    assert len(mb) == 1


def _fewest(lengths: list[int], budget: int, rows: int) -> int:
    """Brute force: the fewest micro-batches any partition of `lengths` needs."""
    best = len(lengths)

    def ok(group):
        return len(group) <= rows and (len(group) == 1 or len(group) * max(group) <= budget)

    def go(rest, groups):
        nonlocal best
        if len(groups) >= best:
            return
        if not rest:
            best = len(groups)
            return
        head, tail = rest[0], rest[1:]
        for k in range(len(tail) + 1):
            for mates in itertools.combinations(tail, k):
                if ok((head, *mates)):
                    left = list(tail)
                    for m in mates:
                        left.remove(m)
                    go(left, groups + [(head, *mates)])

    go(sorted(lengths, reverse=True), [])
    return best


def test_first_fit_decreasing_gives_the_fewest_micro_batches():
    rng = random.Random(7)
    for _ in range(60):
        lengths = [rng.randint(2, 40) for _ in range(rng.randint(1, 7))]
        budget, rows = rng.randint(10, 90), rng.randint(1, 5)
        assert len(pack(_samples(lengths), budget, rows)) == _fewest(lengths, budget, rows), (lengths, budget, rows)


# -- config and DeepSpeed offload switches ---------------------------------------------------

def test_budget_and_offload_keys_are_validated_by_name():
    with pytest.raises(ValueError, match="learner.max_tokens_per_micro_batch"):
        LearnerConfig(max_tokens_per_micro_batch=0)
    with pytest.raises(ValueError, match="learner.offload_params"):
        LearnerConfig(offload_params=["critic"])
    with pytest.raises(ValueError, match="learner.offload_optimizer.*reference has no optimizer"):
        LearnerConfig(offload_optimizer=["reference"])
    with pytest.raises(ValueError, match="learner.offload_params.*twice"):
        LearnerConfig(offload_params=["rm", "rm"])
    with pytest.raises(ValueError, match="learner.offload_params needs learner.zero_stage 3"):
        LearnerConfig(zero_stage=2, offload_params=["policy"])
    LearnerConfig(zero_stage=2, offload_optimizer=["policy"])  # optimizer offload: ZeRO 1-3


def test_offload_goes_to_the_named_models_only():
    from learner.deepspeed_config import ds_config

    cfg = LearnerConfig(offload_params=["policy", "reference"], offload_optimizer=["rm"])
    zero = {m: ds_config(cfg, o, m)["zero_optimization"]
            for m, o in (("policy", cfg.policy_optim), ("rm", cfg.rm_optim), ("reference", None))}
    cpu = {"device": "cpu", "pin_memory": False}  # no GPU here: nothing to pin for
    assert zero["policy"] == {"stage": 3, "offload_param": cpu}
    assert zero["rm"] == {"stage": 3, "offload_optimizer": cpu}
    assert zero["reference"] == {"stage": 3, "offload_param": cpu}
    # without offload the model may stay unnamed (today's calls); with it, it must be named
    assert ds_config(LearnerConfig(), None)["zero_optimization"] == {"stage": 3}
    with pytest.raises(ValueError, match="needs `model`"):
        ds_config(cfg, cfg.policy_optim)
    with pytest.raises(ValueError, match="model must be one of"):
        ds_config(cfg, cfg.policy_optim, "critic")


def _offload_main(port: int, model_path: str, out) -> None:
    """One rank, the worker's recipe (HfDeepSpeedConfig, from_pretrained, initialize) with
    and without offload: a trained policy (params + Adam state on the CPU) and a frozen
    reference (params on the CPU). Reports the policy's weights after two steps and the
    reference's log-probs."""
    import deepspeed
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig

    from learner.deepspeed_config import ds_config
    from learner.jit_ops import steady_jit_builds

    torch.set_num_threads(1)
    try:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
        steady_jit_builds()  # as the learner: no shared-memory op compiled (50 s on a fresh clone)
        deepspeed.init_distributed(dist_backend="gloo")
        ids = torch.randint(3, 500, (2, 24), generator=torch.Generator().manual_seed(0))
        res = {}
        for off in ([], ["policy", "reference"]):
            cfg = LearnerConfig(world_size=1, backend="gloo", offload_params=off, offload_optimizer=off[:1],
                                policy_optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=0))
            conf = ds_config(cfg, cfg.policy_optim, "policy")
            hf = HfDeepSpeedConfig(conf)  # noqa: F841  (alive during from_pretrained)
            policy, *_ = deepspeed.initialize(model=AutoModelForCausalLM.from_pretrained(model_path), config=conf)
            for _ in range(2):
                policy.backward(policy(input_ids=ids, labels=ids, use_cache=False).loss)
                policy.step()
            conf = ds_config(cfg, None, "reference")
            hf = HfDeepSpeedConfig(conf)  # noqa: F841
            ref = AutoModelForCausalLM.from_pretrained(model_path).eval().requires_grad_(False)
            ref, *_ = deepspeed.initialize(model=ref, config=conf)
            with torch.no_grad():
                ref_logits = ref(input_ids=ids, use_cache=False).logits.numpy()
            res[bool(off)] = {"zero": (policy.config["zero_optimization"], ref.config["zero_optimization"]),
                              "policy": _full(policy, "param"), "ref_logits": ref_logits}
        out.put((0, "ok", res))
    except BaseException:
        out.put((0, "error", traceback.format_exc()))


@pytest.mark.slow
def test_offloaded_models_initialise_step_and_match_on_cpu():
    import numpy as np
    import torch.multiprocessing as tmp

    from launch.model.tiny_model import TinyModelConfig, ensure_tiny_model

    ctx = tmp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_offload_main, args=(free_port(), str(ensure_tiny_model(TinyModelConfig())), q))
    proc.start()
    try:
        _, status, res = q.get(timeout=170)
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    assert status == "ok", res
    policy_zero, ref_zero = res[True]["zero"]
    assert policy_zero["offload_param"]["device"] == policy_zero["offload_optimizer"]["device"] == "cpu"
    assert ref_zero["offload_param"]["device"] == "cpu" and "offload_optimizer" not in ref_zero
    for name, w in res[False]["policy"].items():  # 1% of a step of lr 1e-3 (Adam: ~lr * sign(g))
        np.testing.assert_allclose(res[True]["policy"][name], w, rtol=0, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(res[True]["ref_logits"], res[False]["ref_logits"], rtol=0, atol=1e-5)


# -- the same step with and without the budget: 2 ranks, ZeRO-3, gloo --------------------------

BUDGET = 96  # padded tokens; the lengths below are 14-63 tokens
LENGTHS = [63, 14, 40, 22, 51, 17, 30, 45, 19, 60, 26, 35]


def _full(engine, what: str) -> dict:
    """Full (gathered) parameters or gradients of a ZeRO-3 engine: collective."""
    import deepspeed
    from deepspeed.utils import safe_get_full_grad

    out = {}
    for name, p in engine.module.named_parameters():
        if what == "grad":
            out[name] = safe_get_full_grad(p).detach().clone().numpy()
        else:
            with deepspeed.zero.GatheredParameters([p]):
                out[name] = p.detach().clone().numpy()
    return out


def _record_grads(engine) -> list[dict]:
    """Wrap `engine.step` so that each step first records the reduced, unclipped gradients."""
    store, step = [], engine.step

    def recording_step(*args, **kwargs):
        store.append(_full(engine, "grad"))
        return step(*args, **kwargs)

    engine.step = recording_step
    return store


def _paired(samples: list[TrainSample]) -> list[TrainSample]:
    """Sample 2k+1 (positive) takes the prompt of sample 2k (negative), same total length: one
    query's kept pair, as the loop's filtering gives (reward_model/pair_accuracy pairs them)."""
    out = list(samples)
    for i in range(1, len(out), 2):
        prompt, s = out[i - 1].prompt_ids, out[i]
        n = len(s.prompt_ids) + len(s.response_ids)
        out[i] = TrainSample(prompt, (s.response_ids * 2)[: n - len(prompt)], s.reward, s.advantage)
    return out


def _rank_main(rank: int, port: int, model_path: str, out) -> None:
    """One rank: two learners from the same initial weights, one fed `micro_batch_size`
    micro-batches, one fed the token budget's; three steps each (mode oreal: the RM learns at
    step 0, the policy gets non-zero token weights at step 1 and a non-zero KL at step 2).
    Reports metrics, the reduced gradients before each optimiser step and the weights after."""
    import torch

    from learner.batch import GlobalCounts
    from learner.config import AlgoConfig
    from learner.worker import LearnerWorker

    torch.set_num_threads(1)
    try:
        samples = _paired(_samples(LENGTHS))
        counts = GlobalCounts.of(samples)
        cfg = LearnerConfig(world_size=2, backend="gloo", micro_batch_size=4,
                            policy_optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=0),
                            rm_optim=OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=0))
        res = {}
        for budget in (None, BUDGET):
            t0 = time.perf_counter()
            w = LearnerWorker(rank, cfg, AlgoConfig(mode="oreal", actor_freeze_steps=0, beta=0.05), model_path,
                              seed=0, total_steps=4)
            w.setup("127.0.0.1", port)  # the second learner finds the process group up
            grads = {"policy": _record_grads(w.policy), "rm": _record_grads(w.rm)}
            t1 = time.perf_counter()
            mbs = shard(samples, 2, cfg.micro_batch_size, budget)[rank]
            metrics = [w.train_step(mbs, counts, step) for step in range(3)]
            res[budget] = {"n_mb": len(mbs), "shapes": [(len(mb), max(map(_n, mb), default=0)) for mb in mbs],
                           "metrics": metrics, "grads": grads, "seconds": (t1 - t0, time.perf_counter() - t1),
                           "weights": {"policy": _full(w.policy, "param"), "rm": _full(w.rm, "param")}}
        out.put((rank, "ok", res))
    except BaseException:
        out.put((rank, "error", traceback.format_exc()))


@pytest.fixture(scope="module")
def two_ranks():
    from launch.model.tiny_model import TinyModelConfig, ensure_tiny_model

    path = str(ensure_tiny_model(TinyModelConfig()))
    port = free_port()
    return run_spawned(_rank_main, [(r, port, path) for r in range(2)], timeout=170)


@pytest.mark.slow
def test_two_rank_step_is_the_same_with_and_without_the_budget(two_ranks):
    import numpy as np

    plain, packed = two_ranks[0][None], two_ranks[0][BUDGET]
    # the budget really changed the micro-batches (more of them, uneven rows, within budget)
    assert plain["shapes"] != packed["shapes"] and packed["n_mb"] == two_ranks[1][BUDGET]["n_mb"]
    assert all(rows * longest <= BUDGET for rows, longest in packed["shapes"] if rows > 1)
    # logged sums: per-rank shares of global losses, so compare the sum over ranks
    for step in range(3):
        for key in plain["metrics"][step]:
            a = sum(two_ranks[r][None]["metrics"][step][key] for r in (0, 1))
            b = sum(two_ranks[r][BUDGET]["metrics"][step][key] for r in (0, 1))
            assert b == pytest.approx(a, rel=1e-5, abs=1e-6), (step, key)
    assert plain["metrics"][1]["learner/grad_norm"] > 0 and plain["metrics"][2]["learner/kl"] > 0
    # The RM's instruments are gathered over the ranks (pairs split across them included): every
    # rank reports the same share of the same global value.
    for step in range(3):
        rm_keys = [k for k in plain["metrics"][step] if k.startswith("reward_model/") and
                   k not in ("reward_model/loss", "reward_model/correct", "reward_model/fit_bce")]
        assert "reward_model/pair_accuracy" in rm_keys and len(rm_keys) >= 13, rm_keys
        for key in rm_keys:
            assert two_ranks[1][None]["metrics"][step][key] == pytest.approx(plain["metrics"][step][key]), key
    for role in ("policy", "rm"):
        assert len(plain["grads"][role]) == len(packed["grads"][role]) == 3
        for step, (ga, gb) in enumerate(zip(plain["grads"][role], packed["grads"][role])):
            scale = max(float(np.abs(g).max()) for g in ga.values())
            assert scale > 0 or (role, step) == ("policy", 0)  # a zero RM head gives w+ = w- = 0
            # (a sample lost or counted twice would move them by ~scale / 12)
            for name in ga:
                np.testing.assert_allclose(gb[name], ga[name], rtol=1e-4, atol=1e-4 * scale + 1e-12,
                                           err_msg=f"{role} step {step} {name}")
        # Adam's first steps move each weight by about lr * sign(g): compare on that scale
        lr = 1e-3 if role == "policy" else 1e-2
        for name, wa in plain["weights"][role].items():
            np.testing.assert_allclose(packed["weights"][role][name], wa, rtol=0, atol=0.05 * lr, err_msg=name)
    print("\nset-up, 3 steps (s): " + "; ".join(f"budget {b}: {two_ranks[0][b]['seconds'][0]:.1f}, "
                                                f"{two_ranks[0][b]['seconds'][1]:.1f}" for b in (None, BUDGET)))
