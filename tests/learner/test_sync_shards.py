"""The shards weight sync (`learner.weight_sync.shards`, `learner.sync_mode=shards`), torch only.

- `split` (ZeRO-3's partition layout as a helper) against DeepSpeed's own partitioning: two
  spawned ranks build a model under `deepspeed.zero.Init` (gloo); each rank's `p.ds_tensor`
  must be `split(full, 2)[rank]` on its valid elements, and the parts `partition_reader` reads
  from the real partitions must reassemble into the gathered parameters bit for bit.
- In process, against replaying fake groups: part layouts, reassembly of every dtype and odd
  shape, the receiver's posting order and its two reused slots, skips, W = 1.
- Real processes over gloo, no vLLM, no DeepSpeed: W = 2 learner ranks, each holding only its
  partitions of a ~220 MB mixed-dtype state dict (`test_sync_protocol.synthetic_state_dict`),
  each broadcasting on its own group to 2 receivers that joined both groups.
"""
from __future__ import annotations

import math
import os
import pickle
import traceback
import weakref
from datetime import timedelta

import pytest

import torch

from conftest import free_port, run_spawned

from learner.weight_sync.buckets import ALIGN, pack, plan_buckets, specs_of, unpack
from learner.weight_sync.group import SyncStats, init_group
from learner.weight_sync.shards import partition_numel, receive_shards, send_shards, shard_layout, split
from test_sync_protocol import BUCKET, DTYPES, MB, _random, bit_equal, bits, synthetic_state_dict

W = 2


def partitions_of(sd: dict, rank: int, world: int) -> dict[str, torch.Tensor]:
    """What learner rank `rank` holds under ZeRO-3: its partition of every tensor, and nothing else."""
    return {n: split(t, world)[rank] for n, t in sd.items()}


# -- the layout ------------------------------------------------------------------------------

@pytest.mark.parametrize("numel", [0, 1, 2, 3, 7, 8, 1001])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_split_is_zero3s_layout(numel, world):
    t = torch.arange(numel, dtype=torch.float32) + 1
    chunks = split(t, world)
    s = partition_numel(numel, world)
    assert s == math.ceil(numel / world) and [c.shape for c in chunks] == [(s,)] * world
    assert torch.equal(torch.cat(chunks)[:numel], t) and not torch.cat(chunks)[numel:].any()  # zero padding


def test_shard_layout_matches_the_plan_bucket_for_bucket():
    sd = synthetic_state_dict()
    plan = plan_buckets(specs_of(sd.items()), BUCKET, version=4)
    for world in (2, 3):
        parts = shard_layout(plan, world)
        assert (len(parts), parts.version, parts.align) == (len(plan), 4, plan.align)
        for b, p in zip(plan.buckets, parts.buckets):
            assert [t.name for t in p.tensors] == [t.name for t in b.tensors]
            assert all(pt.shape == (partition_numel(math.prod(t.shape), world),) and pt.dtype == t.dtype
                       for t, pt in zip(b.tensors, p.tensors))
            assert p.nbytes <= b.nbytes and all(t.offset % ALIGN == 0 for t in p.tensors)
    one = shard_layout(plan, 1)  # W = 1: the part IS the bucket, byte for byte
    assert [(b.nbytes, [t.offset for t in b.tensors]) for b in one.buckets] == \
           [(b.nbytes, [t.offset for t in b.tensors]) for b in plan.buckets]


# -- in process, against fake groups ----------------------------------------------------------

class _Work:
    def __init__(self, buf, data):
        self.buf, self.data = buf, data

    def wait(self):
        if self.data is not None:
            self.buf.copy_(self.data)
        self.buf = self.data = None
        return True


class _Slots:
    """The receive buffers (their base tensors) alive at each post, over all groups."""

    def __init__(self):
        self.live: list[weakref.ref] = []
        self.most_bytes = self.most_buffers = 0

    def posted(self, buf):
        base = buf._base if buf._base is not None else buf
        self.live = [r for r in self.live if r() is not None]
        if all(r() is not base for r in self.live):
            self.live.append(weakref.ref(base))
        self.most_buffers = max(self.most_buffers, len(self.live))
        self.most_bytes = max(self.most_bytes, sum(r().numel() for r in self.live))


class _Replay:
    """A receiver's end of one group: broadcast k delivers what the sender packed k-th."""

    def __init__(self, sent, slots: _Slots | None = None):
        self.sent, self.slots, self.posts = list(sent), slots or _Slots(), 0

    def broadcast(self, buf, root):
        assert root == 0 and buf.is_contiguous()
        self.slots.posted(buf)
        self.posts += 1
        return _Work(buf, self.sent.pop(0))


def _packed(sd, plan, world):
    """Every rank's packed parts of every bucket, as `send_shards` would broadcast them."""
    parts = shard_layout(plan, world)
    return [[pack(b, partitions_of({t.name: sd[t.name] for t in b.tensors}, r, world)) for b in parts.buckets]
            for r in range(world)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_and_odd_shape_reassembles_bit_identical(dtype):
    g = torch.Generator().manual_seed(2)
    sd = {"scalar": _random((), dtype, g), "empty": _random((0, 3), dtype, g), "odd": _random((7,), dtype, g),
          "cube": _random((3, 5, 7), dtype, g), "one": _random((1, 1), dtype, g)}
    plan = plan_buckets(specs_of(sd.items()), 256)
    for world in (2, 3):
        groups = [_Replay(sent) for sent in _packed(sd, plan, world)]
        got = list(receive_shards(groups, plan))
        assert [n for n, _ in got] == list(sd) and all(bit_equal(t, sd[n]) for n, t in got)


def test_receiver_posts_ahead_reuses_two_slots_and_skips():
    sd = synthetic_state_dict()
    plan = plan_buckets(specs_of(sd.items()), BUCKET)
    slots, stats = _Slots(), SyncStats()
    groups = [_Replay(sent, slots) for sent in _packed(sd, plan, W)]
    index = {t.name: b.index for b in plan.buckets for t in b.tensors}
    kept = []
    for name, t in receive_shards(groups, plan, skip={2}, stats=stats):
        # bucket i is yielded only after every part of bucket i+1 was posted, on every group
        assert all(g.posts == min(index[name] + 2, len(plan)) for g in groups)
        kept.append((name, t))
    skipped = {t.name for t in plan.buckets[2].tensors}
    assert [n for n, _ in kept] == [t.name for t in plan.specs() if t.name not in skipped]
    assert all(bit_equal(t, sd[n]) for n, t in kept)  # fresh tensors: still valid after every later bucket
    assert (stats.broadcasts, stats.bytes, stats.skipped) == (len(plan), plan.total_bytes, 1)
    assert all(g.posts == len(plan) for g in groups)  # one broadcast per bucket per group
    parts = shard_layout(plan, W)
    bound = W * (max(b.nbytes for b in parts.buckets[0::2]) + max(b.nbytes for b in parts.buckets[1::2]))
    assert slots.most_buffers == 2  # two slots (each W parts), reused
    assert slots.most_bytes <= bound < 2.5 * BUCKET, (slots.most_bytes, bound)


def test_one_group_is_the_plain_bucket_path():
    sd = synthetic_state_dict()
    plan = plan_buckets(specs_of(sd.items()), BUCKET)
    stats = SyncStats()
    got = dict(receive_shards([_Replay([pack(b, sd) for b in plan.buckets])], plan, stats=stats))
    assert list(got) == list(sd) and all(bit_equal(got[n], sd[n]) for n in sd)
    assert (stats.broadcasts, stats.bytes) == (len(plan), plan.total_bytes)
    # W = 1: a rank's packed part read with the plan's own layout is the bucket's tensors
    packed = _packed(sd, plan, 1)[0]
    assert all(bit_equal(t, sd[n]) for b, part in zip(plan.buckets, packed) for n, t in unpack(b, part))


def test_sync_mode_config():
    from learner.config import LearnerConfig

    assert LearnerConfig().sync_mode == "shards" and LearnerConfig().sync_groups == 2
    assert LearnerConfig(sync_mode="gather").sync_groups == 1 and not LearnerConfig(sync_mode="gather").sync_shards
    assert LearnerConfig(colocate=True).sync_groups == 1 and not LearnerConfig(colocate=True).sync_shards
    with pytest.raises(ValueError, match="learner.sync_mode"):
        LearnerConfig(sync_mode="scatter")


# -- against DeepSpeed's own partitions --------------------------------------------------------

class _Odd(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(7, 5)  # 35 + 5 elements: both odd
        self.emb = torch.nn.Embedding(3, 1)  # 3 < W * 2
        # 1 element: rank 1 holds only padding (zero.Init cannot take a 0-d parameter)
        self.scale = torch.nn.Parameter(torch.tensor([1.5]))
        self.b = torch.nn.Linear(64, 33, bias=False)


def _deepspeed_rank(rank: int, port: int, out) -> None:
    try:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK="0",
                          WORLD_SIZE=str(W))
        import deepspeed
        import torch.distributed as dist

        from learner.jit_ops import steady_jit_builds
        from learner.weight_sync.zero3 import partition_reader, policy_plan

        steady_jit_builds()  # as the learner: no shared-memory op compiled (50 s on a fresh clone)
        deepspeed.init_distributed(dist_backend="gloo")
        torch.manual_seed(0)
        conf = {"train_batch_size": W, "train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3}}
        with deepspeed.zero.Init(config_dict_or_path=conf):
            model = _Odd()
        params = dict(model.named_parameters())
        with deepspeed.zero.GatheredParameters(list(params.values())):
            full = {n: p.data.clone() for n, p in params.items()}
        layout = []
        for n, p in params.items():
            mine, valid = split(full[n], W)[rank], max(0, min(p.ds_numel - rank * p.ds_tensor.numel(),
                                                              p.ds_tensor.numel()))
            layout.append((n, tuple(p.ds_tensor.shape) == tuple(mine.shape),
                           torch.equal(p.ds_tensor[:valid], mine[:valid])))
        plan = policy_plan(model, 256)
        read = partition_reader(model, rank, W)
        packed = [pack(b, read(b)) for b in shard_layout(plan, W).buckets]
        every = [None] * W
        dist.all_gather_object(every, packed)
        if rank == 0:
            got = dict(receive_shards([_Replay(every[r]) for r in range(W)], plan))
            out.put((rank, "ok", (layout, sorted(n for n in full if bit_equal(got[n], full[n])), sorted(full))))
        else:
            out.put((rank, "ok", (layout, None, None)))
    except BaseException:
        out.put((rank, "error", traceback.format_exc()))


@pytest.mark.slow
def test_split_and_partition_reader_match_deepspeeds_real_partitions():
    port = free_port()
    results = run_spawned(_deepspeed_rank, [(r, port) for r in range(W)], timeout=240)
    for res in results.values():
        layout = res[0]
        assert sorted(n for n, *_ in layout) == ["a.bias", "a.weight", "b.weight", "emb.weight", "scale"]
        assert all(same_shape and same_values for _, same_shape, same_values in layout), layout
    _, reassembled, names = results[0]
    assert reassembled == names  # real partitions -> parts -> every parameter bit for bit


# -- real processes over gloo ------------------------------------------------------------------

class _Counting:
    """A process group that counts its broadcasts."""

    def __init__(self, pg):
        self.pg, self.broadcasts = pg, 0

    def broadcast(self, buf, root):
        self.broadcasts += 1
        return self.pg.broadcast(buf, root)


def _shards_main(role: str, index: int, ports: list[int], plan, sd, skip_bucket: int, out) -> None:
    """role "learner": rank `index`, holding only its partitions, roots group `index`.
    role "worker": group rank 1 + index in every group. Phases: two warm-up syncs (gloo's and
    torch's one-off allocations; under load one warm-up left 37 MB of them in the next sync), a full sync, a sync in which worker 0 skips `skip_bucket`,
    the benchmark's per-tensor plan (one bucket per tensor)."""
    torch.set_num_threads(1)
    try:
        from learner.weight_sync.memory import peak, reset_peak

        timeout, world = timedelta(seconds=90), 1 + 2
        per_tensor = plan_buckets(specs_of(sd.items()), ALIGN)
        res = {}
        if role == "learner":
            mine = partitions_of(sd, index, W)
            pg = _Counting(init_group("127.0.0.1", ports[index], 0, world, "gloo", timeout=timeout))
            for phase, p in (("warm", plan), ("warm2", plan), ("full", plan), ("skip", plan), ("per_tensor", per_tensor)):
                pg.broadcasts = 0
                stats = send_shards(pg, p, lambda b: {t.name: mine[t.name] for t in b.tensors}, W)
                res[phase] = (stats, pg.broadcasts)
        else:
            groups = [_Counting(init_group("127.0.0.1", port, 1 + index, world, "gloo", timeout=timeout))
                      for port in ports]
            for t in sd.values():  # map the shared reference before measuring (it counts as resident)
                bits(t).max() if t.numel() else None
            for phase, p, skip in (("warm", plan, ()), ("warm2", plan, ()), ("full", plan, ()),
                                   ("skip", plan, {skip_bucket} if index == 0 else ()),
                                   ("per_tensor", per_tensor, ())):
                for g in groups:
                    g.broadcasts = 0
                stats, base = SyncStats(), reset_peak()
                got = [(n, bit_equal(t, sd[n])) for n, t in receive_shards(groups, p, skip=skip, stats=stats)]
                res[phase] = (stats, [n for n, _ in got], [n for n, ok in got if not ok],
                              [g.broadcasts for g in groups], peak() - base)
        out.put(((role, index), "ok", res))
    except BaseException:
        out.put(((role, index), "error", traceback.format_exc()))


@pytest.fixture(scope="module")
def shards_sync():
    sd = {n: t.share_memory_() for n, t in synthetic_state_dict().items()}
    plan = pickle.loads(pickle.dumps(plan_buckets(specs_of(sd.items()), BUCKET, version=1)))
    ports, skip_bucket = [free_port() for _ in range(W)], 3
    roles = [("learner", r) for r in range(W)] + [("worker", i) for i in range(2)]
    results = run_spawned(_shards_main, [(role, i, ports, plan, sd, skip_bucket) for role, i in roles], timeout=240)
    return sd, plan, skip_bucket, results


@pytest.mark.slow
def test_every_tensor_arrives_bit_identical_from_w_ranks(shards_sync):
    sd, plan, _, res = shards_sync
    assert sum(t.nbytes for t in sd.values()) > 200 * MB
    parts = shard_layout(plan, W)
    for r in range(W):
        stats, broadcasts = res[("learner", r)]["full"]
        assert broadcasts == stats.broadcasts == len(plan)  # one broadcast per bucket on each group
        assert stats.bytes == parts.total_bytes  # each rank sends its share only
    for i in range(2):
        stats, names, bad, per_group, _ = res[("worker", i)]["full"]
        assert names == list(sd) and bad == []
        assert per_group == [len(plan)] * W
        assert (stats.broadcasts, stats.bytes, stats.skipped) == (len(plan), plan.total_bytes, 0)  # = check_delivery's
    sent = res[("learner", 0)]["full"][0]
    print(f"\n{len(plan)} buckets, {plan.total_bytes / 1e6:.0f} MB from {W} ranks to 2 receivers: "
          f"{max(res[('learner', r)]['full'][0].seconds for r in range(W)):.2f} s (rank 0 {sent.seconds:.2f} s)")


@pytest.mark.slow
def test_receiver_memory_stays_near_two_buckets(shards_sync):
    sd, plan, _, res = shards_sync
    parts = shard_layout(plan, W)
    slots = W * (max(b.nbytes for b in parts.buckets[0::2]) + max(b.nbytes for b in parts.buckets[1::2]))
    one_tensor = max(t.nbytes for t in plan.specs())  # the consumer's current tensor (dropped after its check)
    # Measured after a warm-up sync: +93-104 MB for slots of 67 MB and a 38 MB tensor (the plan's
    # first bucket, oversize); the first sync of a process also holds gloo's and torch's one-off
    # allocations (+118-141 MB).
    for who, phase in (((("worker", 0), "full"), (("worker", 1), "full"), (("worker", 1), "skip"))):
        extra = res[who][phase][4]
        print(f"\n{who} {phase}: peak +{extra / MB:.0f} MB; slots {slots / MB:.0f} MB + one tensor "
              f"{one_tensor / MB:.0f} MB (buckets of {BUCKET / MB:.0f} MB, "
              f"the first {plan.buckets[0].nbytes / MB:.0f} MB)")
        assert extra <= slots + one_tensor + 24 * MB


@pytest.mark.slow
def test_a_skipped_bucket_is_received_and_counted_but_yields_nothing(shards_sync):
    sd, plan, skip, res = shards_sync
    missing = {t.name for t in plan.buckets[skip].tensors}
    stats, names, bad, per_group, _ = res[("worker", 0)]["skip"]
    assert names == [n for n in sd if n not in missing] and bad == []
    assert (stats.broadcasts, stats.bytes, stats.skipped) == (len(plan), plan.total_bytes, 1)
    assert per_group == [len(plan)] * W  # all W parts of the skipped bucket were still received
    stats, names, bad, _, _ = res[("worker", 1)]["skip"]  # the other receiver is unaffected
    assert names == list(sd) and bad == [] and stats.skipped == 0


@pytest.mark.slow
def test_the_benchmarks_per_tensor_plan(shards_sync):
    sd, _, _, res = shards_sync
    per_tensor = plan_buckets(specs_of(sd.items()), ALIGN)
    assert len(per_tensor) == len(sd) - 1  # two tiny tensors share one 64-byte bucket
    for i in range(2):
        stats, names, bad, per_group, _ = res[("worker", i)]["per_tensor"]
        assert names == list(sd) and bad == [] and per_group == [len(per_tensor)] * W
    assert all(res[("learner", r)]["per_tensor"][1] == len(per_tensor) for r in range(W))
