"""The bucketed weight-sync protocol (`learner.weight_sync.{buckets,group}`), torch only.

In-process tests of plans, packing and the send/receive pipelining (a loopback fake group),
then the real thing: one sender and two receivers in spawned processes over a stateless gloo
group on 127.0.0.1, a ~220 MB mixed-dtype state dict in 32 MB buckets. No vLLM, no Ray.
"""
from __future__ import annotations

import contextlib
import functools
import math
import pickle
import time
import traceback
import weakref
from datetime import timedelta

import pytest

import torch

from conftest import free_port, run_spawned

from learner.weight_sync.buckets import ALIGN, BucketPlan, pack, plan_buckets, specs_of, unpack
from learner.weight_sync.group import (SyncStats, init_group, raw_broadcast, receive_buckets, receive_per_tensor,
                                       send_buckets, send_per_tensor)

MB = 1 << 20
BUCKET = 32 * MB
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64, torch.int32, torch.int16,
          torch.int8, torch.uint8, torch.bool, torch.complex64, torch.float8_e4m3fn]


def _random(shape, dtype, g):
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    if not dtype.is_floating_point and not dtype.is_complex:
        lo, hi = (-(2**62), 2**62) if dtype == torch.int64 else (torch.iinfo(dtype).min, torch.iinfo(dtype).max)
        return torch.randint(lo, hi, shape, generator=g, dtype=torch.int64).to(dtype)
    return torch.randn(shape, generator=g, dtype=torch.complex64 if dtype.is_complex else torch.float32).to(dtype)


@functools.lru_cache(maxsize=1)
def synthetic_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """~220 MB: an embedding larger than a bucket, six odd-shaped 'layers' of mixed dtypes,
    a 0-d scalar and an empty tensor (cached: tests only read it)."""
    g = torch.Generator().manual_seed(seed)
    sd = {"embed.weight": _random((10007, 1001), torch.float32, g)}  # 40 MB > one bucket
    for i in range(6):
        p = f"layers.{i}."
        sd[p + "attn.weight"] = _random((1536, 4099), torch.bfloat16, g)
        sd[p + "mlp.weight"] = _random((2048, 1027), torch.float16, g)
        sd[p + "proj.weight"] = _random((3001, 997), torch.float32, g)
        sd[p + "ids"] = _random((123457,), torch.int64, g)
        sd[p + "norm.weight"] = _random((4099,), torch.float32, g)
    sd["scale"] = _random((), torch.float32, g)
    sd["empty"] = _random((0, 16), torch.float16, g)
    sd["mask"] = _random((3, 5, 7), torch.bool, g)
    return sd


def qwen25_7b_specs(dtype=torch.bfloat16):
    """Qwen2.5-7B's 339 tensors (28 layers, hidden 3584, intermediate 18944, 28/4 heads)."""
    h, inter, vocab, kv = 3584, 18944, 152064, 4 * (3584 // 28)
    yield "model.embed_tokens.weight", (vocab, h), dtype
    for i in range(28):
        p = f"model.layers.{i}."
        for proj, out in (("q", h), ("k", kv), ("v", kv)):
            yield p + f"self_attn.{proj}_proj.weight", (out, h), dtype
            yield p + f"self_attn.{proj}_proj.bias", (out,), dtype
        yield p + "self_attn.o_proj.weight", (h, h), dtype
        yield p + "mlp.gate_proj.weight", (inter, h), dtype
        yield p + "mlp.up_proj.weight", (inter, h), dtype
        yield p + "mlp.down_proj.weight", (h, inter), dtype
        yield p + "input_layernorm.weight", (h,), dtype
        yield p + "post_attention_layernorm.weight", (h,), dtype
    yield "model.norm.weight", (h,), dtype
    yield "lm_head.weight", (vocab, h), dtype


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))


def check_plan(plan: BucketPlan, specs) -> None:
    specs = [(n, tuple(s), d) for n, s, d in specs]
    assert [(t.name, t.shape, t.torch_dtype) for t in plan.specs()] == specs  # all, once, in order
    for b in plan.buckets:
        assert b.nbytes <= plan.bucket_bytes or len(b.tensors) == 1
        assert b.nbytes % ALIGN == 0 and all(t.offset % ALIGN == 0 for t in b.tensors)
        end = b.tensors[-1].offset + b.tensors[-1].nbytes
        assert b.nbytes == -(-end // ALIGN) * ALIGN
    for prev, b in zip(plan.buckets, plan.buckets[1:]):  # greedy: no boundary without need
        assert prev.nbytes + b.tensors[0].nbytes > plan.bucket_bytes
    over = [t.nbytes > plan.bucket_bytes for t in plan.specs()]
    rest = sum(t.nbytes for t, o in zip(plan.specs(), over) if not o)
    assert len(plan) >= sum(over) + math.ceil(rest / plan.bucket_bytes)


# -- plans and packing ---------------------------------------------------------------------

def test_plan_properties():
    sd = synthetic_state_dict()
    plan = plan_buckets(specs_of(sd.items()), BUCKET, version=7)
    check_plan(plan, specs_of(sd.items()))
    assert plan.version == 7 and plan.with_version(8).version == 8
    assert [len(b.tensors) for b in plan.buckets][0] == 1 and plan.buckets[0].nbytes > BUCKET  # oversize alone


def test_plan_validation_rejects_bad_layouts():
    plan = plan_buckets([("a", (10,), torch.float32), ("b", (3,), torch.int64)], 1024)
    b = plan.buckets[0]
    with pytest.raises(ValueError, match="twice"):
        BucketPlan(0, 1024, ALIGN, (b, type(b)(1, b.nbytes, b.tensors)))
    with pytest.raises(ValueError, match="overlaps"):
        type(b)(0, 128, (b.tensors[0], type(b.tensors[1])("b", (3,), "int64", 0)))
    with pytest.raises(ValueError, match="bucket_bytes"):
        BucketPlan(0, 64, ALIGN, (type(b)(0, 128, b.tensors),))
    with pytest.raises(ValueError, match="multiple of align"):
        plan_buckets([("a", (1,), torch.float32)], 100)


def test_plan_pickles_small_even_for_7b():
    specs = list(qwen25_7b_specs())
    assert len(specs) == 339
    for bucket in (BUCKET, 1 << 30):
        plan = plan_buckets(specs, bucket)
        check_plan(plan, specs)
        size = len(pickle.dumps(plan))
        assert size < 1 << 20, size
    assert 15e9 < plan.total_bytes < 15.5e9 and 14 <= len(plan) <= 16  # 7.6B params in bf16, 1 GiB buckets
    assert len(pickle.dumps(plan_buckets(specs_of(synthetic_state_dict().items()), BUCKET))) < 1 << 20


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_pack_unpack_round_trip(dtype):
    g = torch.Generator().manual_seed(1)
    sd = {"scalar": _random((), dtype, g), "empty": _random((0, 3), dtype, g), "odd": _random((7,), dtype, g),
          "cube": _random((3, 5, 7), dtype, g), "strided": _random((9, 4), dtype, g).t()}
    plan = plan_buckets(specs_of(sd.items()), 256)
    check_plan(plan, specs_of(sd.items()))
    assert len(plan) >= 2  # 256-byte buckets force a split
    out = [kv for b in plan.buckets for kv in unpack(b, pack(b, sd))]
    assert [n for n, _ in out] == list(sd)
    assert all(bit_equal(t, sd[n]) for n, t in out)
    into = [kv for b in plan.buckets for kv in unpack(b, pack(b, sd, out=torch.empty(b.nbytes + 64, dtype=torch.uint8)))]
    assert all(bit_equal(t, sd[n]) for n, t in into)  # packing into a bigger, reused buffer


def test_pack_rejects_a_tensor_that_does_not_match_the_plan():
    plan = plan_buckets([("w", (4, 4), torch.bfloat16)], 1024)
    with pytest.raises(ValueError, match="plan says bfloat16"):
        pack(plan.buckets[0], {"w": torch.zeros(4, 4)})


# -- pipelining, against a loopback fake group ----------------------------------------------

class _Work:
    def __init__(self, group, buf):
        self.group, self.buf, self.done = group, buf, False

    def wait(self):
        if self.group.sent is not None:  # a receiver: the bytes "arrive" now
            self.buf.copy_(self.group.sent.pop(0))
        elif self.group.keep:  # a sender whose bytes a fake receiver replays
            self.group.kept.append(self.buf.clone())
        self.done, self.buf = True, None  # like a finished Work, hold no tensor
        return True


class _FakeGroup:
    """Records broadcasts; as a receiver, replays the buffers a sender broadcast."""

    def __init__(self, sent=None, keep=False):
        self.sent, self.keep, self.kept, self.log, self.works, self.live = sent, keep, [], [], [], []

    def broadcast(self, buf, root):
        self.live = [r for r in self.live if r() is not None] + [weakref.ref(buf)]
        self.log.append(("post", buf.untyped_storage().data_ptr(), len(self.live), sum(not w.done for w in self.works)))
        self.works.append(_Work(self, buf))
        return self.works[-1]


def test_sender_overlaps_and_holds_at_most_two_buckets():
    sd = synthetic_state_dict()
    plan = plan_buckets(specs_of(sd.items()), BUCKET)
    group, gathered = _FakeGroup(), []

    def gather(bucket):  # a plain mapping for one bucket in two, a context manager otherwise
        gathered.append(bucket.index)
        tensors = {t.name: sd[t.name] for t in bucket.tensors}
        return tensors if bucket.index % 2 else contextlib.nullcontext(tensors)

    stats = send_buckets(group, plan, gather)
    assert gathered == list(range(len(plan))) and stats.broadcasts == len(plan) == len(group.works)
    assert stats.bytes == plan.total_bytes
    posts = [e for e in group.log if e[0] == "post"]
    assert max(live for _, _, live, _ in posts) == 2  # packed buckets alive at any broadcast
    assert len({storage for _, storage, _, _ in posts}) == 2  # two pack buffers, reused
    assert [inflight for *_, inflight in posts] == [0] + [1] * (len(plan) - 1)  # i in flight while i+1 starts
    assert all(w.done for w in group.works)


def test_receiver_posts_ahead_skips_and_keeps_yielded_tensors_valid():
    sd = synthetic_state_dict()
    plan = plan_buckets(specs_of(sd.items()), BUCKET)
    packed = [pack(b, sd) for b in plan.buckets]
    group, stats = _FakeGroup(sent=list(packed)), SyncStats()
    got = []
    for name, t in receive_buckets(group, plan, skip={2}, stats=stats):
        got.append((name, t, len(group.works)))
    skipped = {t.name for t in plan.buckets[2].tensors}
    assert [n for n, *_ in got] == [t.name for t in plan.specs() if t.name not in skipped]
    index = {t.name: b.index for b in plan.buckets for t in b.tensors}
    assert all(posted == min(index[n] + 2, len(plan)) for n, _, posted in got)  # i+1 posted before i yields
    assert all(bit_equal(t, sd[n]) for n, t, _ in got)  # still valid after later buckets arrived
    assert (stats.broadcasts, stats.bytes, stats.skipped) == (len(plan), plan.total_bytes, 1)


def test_per_tensor_round_trip_in_process():
    sd = synthetic_state_dict()
    plan = plan_buckets(specs_of(sd.items()), BUCKET)
    sender = _FakeGroup(keep=True)
    sent = send_per_tensor(sender, plan, sd)
    assert sent.broadcasts == len(sd) - 1  # the empty tensor moves nothing
    stats = SyncStats()
    got = dict(receive_per_tensor(_FakeGroup(sent=sender.kept), plan, stats=stats))
    assert list(got) == list(sd) and all(bit_equal(got[n], sd[n]) for n in sd)
    assert (stats.broadcasts, stats.bytes) == (sent.broadcasts, sent.bytes)


# -- real processes over gloo --------------------------------------------------------------

def _rank_main(rank: int, world: int, port: int, plan: BucketPlan, sd, skip_bucket: int, out) -> None:
    """One process of the group. Phases: buckets (cm gather), buckets with receiver 1 skipping
    `skip_bucket`, per tensor, raw broadcast. Reports stats and the names that failed."""
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        pg = init_group("127.0.0.1", port, rank, world, "gloo", timeout=timedelta(seconds=60))
        res = {"t": {"init": time.perf_counter() - t0}}
        if rank == 0:
            res["buckets"] = send_buckets(pg, plan, lambda b: _Gathered(sd, b))
            res["skip"] = send_buckets(pg, plan, lambda b: {t.name: sd[t.name] for t in b.tensors})
            res["per_tensor"] = send_per_tensor(pg, plan, sd)
        else:
            for phase, skip in (("buckets", ()), ("skip", {skip_bucket} if rank == 1 else ())):
                stats = SyncStats()
                got = [(n, bit_equal(t, sd[n])) for n, t in receive_buckets(pg, plan, skip=skip, stats=stats)]
                res[phase] = (stats, [n for n, _ in got], [n for n, ok in got if not ok])
            stats = SyncStats()
            got = [(n, bit_equal(t, sd[n])) for n, t in receive_per_tensor(pg, plan, stats=stats)]
            res["per_tensor"] = (stats, [n for n, _ in got], [n for n, ok in got if not ok])
        res["t"]["phases"] = time.perf_counter() - t0
        res["raw"] = raw_broadcast(pg, 8 * MB)
        out.put((rank, "ok", res))
    except BaseException:
        out.put((rank, "error", traceback.format_exc()))


class _Gathered:
    """A context manager standing in for deepspeed.zero.GatheredParameters."""

    def __init__(self, sd, bucket):
        self.tensors = {t.name: sd[t.name] for t in bucket.tensors}

    def __enter__(self):
        return self.tensors

    def __exit__(self, *exc):
        self.tensors = None


@pytest.fixture(scope="module")
def three_processes():
    sd = {n: t.share_memory_() for n, t in synthetic_state_dict().items()}
    plan = plan_buckets(specs_of(sd.items()), BUCKET, version=1)
    plan = pickle.loads(pickle.dumps(plan))  # it would travel through a Ray call
    port, skip_bucket = free_port(), 3
    results = run_spawned(_rank_main, [(r, 3, port, plan, sd, skip_bucket) for r in range(3)], timeout=120)
    return sd, plan, skip_bucket, results


@pytest.mark.slow
def test_every_tensor_arrives_bit_identical_in_len_plan_broadcasts(three_processes):
    sd, plan, _, res = three_processes
    assert sum(t.nbytes for t in sd.values()) > 200 * MB
    assert len(pickle.dumps(plan)) < 1 << 20
    sent = res[0]["buckets"]
    assert sent.broadcasts == len(plan) and sent.bytes == plan.total_bytes
    for r in (1, 2):
        stats, names, bad = res[r]["buckets"]
        assert names == list(sd) and bad == []
        assert (stats.broadcasts, stats.bytes, stats.skipped) == (len(plan), plan.total_bytes, 0)
    print(f"\n{len(plan)} buckets, {plan.total_bytes / 1e6:.0f} MB to 2 receivers: {sent.seconds:.2f} s "
          f"({sent.gb_per_s:.2f} GB/s); per tensor {res[0]['per_tensor'].seconds:.2f} s; "
          f"group init {max(res[r]['t']['init'] for r in res):.1f} s, all phases {res[0]['t']['phases']:.1f} s")


@pytest.mark.slow
def test_a_skipped_bucket_is_received_and_counted_but_yields_nothing(three_processes):
    sd, plan, skip, res = three_processes
    missing = {t.name for t in plan.buckets[skip].tensors}
    stats, names, bad = res[1]["skip"]
    assert names == [n for n in sd if n not in missing] and bad == []
    assert (stats.broadcasts, stats.bytes, stats.skipped) == (len(plan), plan.total_bytes, 1)
    stats, names, bad = res[2]["skip"]  # the other receiver is unaffected
    assert names == list(sd) and bad == [] and stats.skipped == 0
    assert res[0]["skip"].broadcasts == len(plan)


@pytest.mark.slow
def test_per_tensor_and_raw_broadcast_over_gloo(three_processes):
    sd, plan, _, res = three_processes
    assert res[0]["per_tensor"].broadcasts == len(sd) - 1
    for r in (1, 2):
        stats, names, bad = res[r]["per_tensor"]
        assert names == list(sd) and bad == [] and stats.broadcasts == len(sd) - 1
    assert all(res[r]["raw"] > 0 for r in range(3))


def test_probe_check_runs_the_learner_and_engines_side_by_side():
    """The engines' probe runs while the learner's does: a stand-in learner that waits for
    the engines' call would time out if the two ran one after the other."""
    import threading

    import pytest

    from learner.weight_sync import WeightSyncError, check_in_sync

    engines_called = threading.Event()

    class Learner:
        def probe_logprobs(self, ids):
            assert engines_called.wait(timeout=10), "the engines' probe did not start beside the learner's"
            return [-1.0, -2.0]

    class Rollout:
        def __init__(self, lps):
            self.lps = lps

        def probe_logprobs(self, ids):
            engines_called.set()
            return self.lps

    assert check_in_sync(Learner(), Rollout([[-1.0, -2.0], [-1.0, -2.0 + 1e-6]]), [1, 2, 3], 1e-3, 0).max_abs_diff \
        == pytest.approx(1e-6)
    with pytest.raises(WeightSyncError, match="differ by 0.5"):
        check_in_sync(Learner(), Rollout([[-1.0, -2.5]]), [1, 2, 3], 1e-3, 4)
