"""The colocated weight sync (`learner.weight_sync.cuda_ipc`) on CPU, torch only (no Ray, no vLLM).

Four spawned processes over a stateless gloo group on 127.0.0.1: group ranks 0 and 1 are learner
ranks, 2 and 3 the workers of engines 0 and 1 (source = learner rank e). Each learner rank has
its own copy of a ~52 MB mixed-dtype state dict, as if it had gathered it under ZeRO-3; here
rank r's copy is seeded with r, so a worker fed by the wrong source would notice. Buckets of
8 MB move through `SharedMemory` (a /dev/shm file: CUDA IPC's stand-in on CPU).

Phases, on one group: a full sync; a sync in which worker 1 skips a bucket; three injected
failures (a worker cannot open a bucket; a learner rank cannot pack one; a handle too big for
its allgather slot), after each of which every rank must raise at the same collective; then a
full sync again, which shows that the group stayed in step.
"""
from __future__ import annotations

import glob
import os
import pickle
import time
import traceback
from datetime import timedelta

import pytest

import torch

from conftest import free_port, run_spawned

from learner.weight_sync.buckets import plan_buckets
from learner.weight_sync.cuda_ipc import HANDLE_BYTES, SharedMemory, receive_colocated, send_colocated
from learner.weight_sync.group import SyncStats, init_group

MB = 1 << 20
BUCKET = 8 * MB
LEARNERS = 2
PHASES = ("ok", "skip", "worker_fails", "learner_fails", "big_handle", "ok_again")
SKIP = (1, 2)  # worker 1 skips bucket 2 in phase "skip"
FAIL_OPEN = (0, 1)  # worker 0 cannot open bucket 1 in "worker_fails"
FAIL_PACK = (1, 3)  # learner rank 1 gathers a wrong-dtype tensor for bucket 3 in "learner_fails"
BIG_HANDLE = (0, 0)  # learner rank 0's handle of bucket 0 is too big in "big_handle"


def specs():
    """~52 MB: an embedding larger than a bucket, four odd-shaped layers of mixed dtypes,
    a 0-d scalar, an empty tensor and a bool mask."""
    yield "embed.weight", (2600, 1024), torch.float32  # 10.2 MB > one bucket
    for i in range(4):
        p = f"layers.{i}."
        yield p + "attn.weight", (1024, 2053), torch.bfloat16
        yield p + "mlp.weight", (1536, 1027), torch.float16
        yield p + "proj.weight", (701, 997), torch.float32
        yield p + "ids", (30011,), torch.int64
        yield p + "norm.weight", (1027,), torch.float32
    yield "scale", (), torch.float32
    yield "empty", (0, 16), torch.float16
    yield "mask", (3, 5, 7), torch.bool


def state_dict(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape, dtype in specs():
        if dtype == torch.bool:
            sd[name] = torch.randint(0, 2, shape, generator=g).bool()
        elif dtype == torch.int64:
            sd[name] = torch.randint(-(2**62), 2**62, shape, generator=g)
        else:
            sd[name] = torch.randn(shape, generator=g).to(dtype)
    return sd


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    flat = lambda t: t.contiguous().reshape(-1).view(torch.uint8)  # noqa: E731
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(flat(a), flat(b))


class _Faulty(SharedMemory):
    """SharedMemory that fails on purpose: `open` of the n-th bucket, or a huge handle."""

    def __init__(self, fail_open: int | None = None, big_handle: int | None = None):
        super().__init__()
        self.fail_open, self.big_handle, self.opened, self.shared = fail_open, big_handle, 0, 0

    def open(self, handle, device):
        self.opened += 1
        if self.opened - 1 == self.fail_open:
            raise OSError("injected: cannot open the bucket")
        return super().open(handle, device)

    def share(self, buf):
        self.shared += 1
        handle = super().share(buf)
        return (*handle, b"x" * HANDLE_BYTES) if self.shared - 1 == self.big_handle else handle


class _Gathered:
    """Stands in for deepspeed.zero.GatheredParameters: a context yielding the bucket's tensors."""

    def __init__(self, tensors):
        self.tensors = tensors

    def __enter__(self):
        return self.tensors

    def __exit__(self, *exc):
        self.tensors = None


def _learner(rank, pg, plan):
    sd, res = state_dict(rank), {}
    for phase in PHASES:
        transport = _Faulty(big_handle=BIG_HANDLE[1] if phase == "big_handle" and rank == BIG_HANDLE[0] else None)
        bad = FAIL_PACK[1] if phase == "learner_fails" and rank == FAIL_PACK[0] else None

        def gather(bucket):
            ts = {t.name: sd[t.name] for t in bucket.tensors}
            if bucket.index == bad:
                ts[bucket.tensors[0].name] = ts[bucket.tensors[0].name].double()
            return _Gathered(ts)

        try:
            outcome = send_colocated(pg, plan, gather, device="cpu", transport=transport)
        except RuntimeError as e:
            outcome = f"raised: {e}"
        left = glob.glob(os.path.join(transport.folder, f"oreal_sync_{os.getpid()}_*"))
        res[phase] = (outcome, transport.peak, transport.live, left)
    return res


def _worker(rank, pg, plan):
    engine = rank - LEARNERS
    ref, res = state_dict(engine), {}
    for phase in PHASES:
        skip = {SKIP[1]} if phase == "skip" and engine == SKIP[0] else ()
        transport = _Faulty(fail_open=FAIL_OPEN[1] if phase == "worker_fails" and engine == FAIL_OPEN[0] else None)
        stats, got = SyncStats(), []
        try:
            for name, t in receive_colocated(pg, plan, source_rank=engine, device="cpu", skip=skip,
                                             stats=stats, transport=transport):
                got.append((name, t))
            outcome = "ok"
        except (RuntimeError, OSError) as e:
            outcome = f"raised: {type(e).__name__}: {e}"
        # compared once every bucket arrived: yielded tensors own their memory
        res[phase] = (outcome, stats, [n for n, _ in got], [n for n, t in got if not bit_equal(t, ref[n])])
    return res


def _main(rank: int, world: int, port: int, plan, out) -> None:
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        pg = init_group("127.0.0.1", port, rank, world, "gloo", timeout=timedelta(seconds=120))
        res = (_learner if rank < LEARNERS else _worker)(rank, pg, plan)
        res["seconds"] = time.perf_counter() - t0
        out.put((rank, "ok", res))
    except BaseException:
        out.put((rank, "error", traceback.format_exc()))


@pytest.fixture(scope="module")
def four_processes():
    plan = pickle.loads(pickle.dumps(plan_buckets(specs(), BUCKET, version=3)))  # as through Ray
    port, world = free_port(), 2 * LEARNERS
    return plan, run_spawned(_main, [(r, world, port, plan) for r in range(world)], timeout=240)


@pytest.mark.slow
def test_every_worker_gets_its_own_sources_bits_in_len_plan_buckets(four_processes):
    plan, res = four_processes
    names = [n for n, *_ in specs()]
    assert len(plan) >= 6 and plan.buckets[0].nbytes > BUCKET and plan.total_bytes > 50e6
    for phase in ("ok", "ok_again"):
        for r in range(LEARNERS):
            sent, peak, live, left = res[r][phase]
            assert (sent.broadcasts, sent.bytes, sent.skipped) == (len(plan), plan.total_bytes, 0)
            assert peak == 2 and live == 0 and left == []  # two packed buffers at most, none left
        for r in range(LEARNERS, 2 * LEARNERS):
            outcome, stats, got, bad = res[r][phase]
            assert outcome == "ok" and got == names and bad == []
            assert (stats.broadcasts, stats.bytes, stats.skipped) == (len(plan), plan.total_bytes, 0)
    sent = res[0]["ok"][0]
    print(f"\n{len(plan)} buckets, {plan.total_bytes / 1e6:.0f} MB per learner rank, 2 ranks -> 2 workers: "
          f"{sent.seconds:.2f} s ({sent.gb_per_s:.2f} GB/s per rank); all phases "
          f"{max(res[r]['seconds'] for r in res):.1f} s")


@pytest.mark.slow
def test_a_skipped_bucket_is_moved_and_counted_but_yields_nothing(four_processes):
    plan, res = four_processes
    missing = {t.name for t in plan.buckets[SKIP[1]].tensors}
    outcome, stats, got, bad = res[LEARNERS + SKIP[0]]["skip"]
    assert outcome == "ok" and got == [n for n, *_ in specs() if n not in missing] and bad == []
    assert (stats.broadcasts, stats.bytes, stats.skipped) == (len(plan), plan.total_bytes, 1)
    outcome, stats, got, bad = res[LEARNERS + 1 - SKIP[0]]["skip"]  # the other worker is unaffected
    assert outcome == "ok" and len(got) == len(list(specs())) and bad == [] and stats.skipped == 0
    assert all(res[r]["skip"][0].broadcasts == len(plan) for r in range(LEARNERS))


@pytest.mark.slow
def test_a_failure_on_any_rank_makes_every_rank_raise_at_the_same_bucket(four_processes):
    plan, res = four_processes
    expect = {
        "worker_fails": (FAIL_OPEN[1], "1 of 2 receivers could not open it", "injected: cannot open",
                         "1 other receiver(s) could not open it"),
        "learner_fails": (FAIL_PACK[1], "learner rank 1: ValueError", None, None),
        "big_handle": (BIG_HANDLE[1], "does not fit HANDLE_BYTES", None, None),
    }
    for phase, (bucket, learner_msg, failed_msg, other_msg) in expect.items():
        for r in range(LEARNERS):
            outcome, peak, live, left = res[r][phase]
            assert isinstance(outcome, str) and f"at bucket {bucket}" in outcome and learner_msg in outcome, outcome
            assert peak <= 2 and live == 0 and left == []  # freed even when raising
        for e in range(LEARNERS):
            outcome, stats, got, bad = res[LEARNERS + e][phase]
            want = (failed_msg if e == FAIL_OPEN[0] else other_msg) or learner_msg
            assert outcome.startswith("raised") and want in outcome, (phase, e, outcome)
            assert stats.broadcasts == bucket and bad == []  # buckets before the failure arrived intact
