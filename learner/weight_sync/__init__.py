"""Weight sync: learner (ZeRO-3 shards) -> every vLLM worker of every engine, after every
policy step, without weights ever passing through Ray.

Within one training step::

    rollout (version v) -> verify -> learner.train_step -> broadcast -> load -> check -> v+1
                                                           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
                                                           sync_weights (this function)

start-up (`connect`), `learner.sync_mode`:
  shards (default): W stateless groups, one per learner rank: group r = {learner rank r
    (group rank 0), every vLLM worker (engine e's TP rank t at 1 + e*TP + t)}, meeting at rank
    r's Ray node IP; every worker joins all W in order (`group.init_group`: vLLM's stateless
    group, gloo on CPU, NCCL on GPUs), beside DeepSpeed's and vLLM's own worlds.
  gather: one group, learner rank 0 + every worker (same ranks), at rank 0's node IP.
  (`learner.colocate` ignores sync_mode: one group of every learner rank and every worker,
    `cuda_ipc`.)
broadcast: the bucket plan (names, shapes, dtypes, offsets, version; pickled, well under 1 MB
  at 7B) goes to the engines through Ray, then
  shards: each learner rank r packs ITS ZeRO-3 partitions of bucket i (`p.ds_tensor`, 1/W of
    each parameter; no gather, no collective among learner ranks) and broadcasts them on group
    r while packing bucket i+1 (`shards.send_shards`). Every worker receives the W parts of
    bucket i, posts bucket i+1's, and rebuilds each parameter from its W chunks
    (`shards.receive_shards`): every rank's NIC carries 1/W of the bytes.
  gather: every learner rank joins each bucket's ZeRO-3 gather (`zero3`); rank 0 packs the
    bucket into one flat buffer and broadcasts it while the next bucket is gathered
    (`group.send_buckets` / `group.receive_buckets`).
  Through Ray come back only the receivers' reports.
load: each worker feeds the tensors, bucket after bucket, straight into vLLM's in-place
  `reload_weights` (`actors.weight_receiver`): no engine restart, no file, about two buckets
  in flight on either side.
check: every worker must report every bucket of the plan (a bucket counts once all its parts
  arrived; bytes = the plan's), and vLLM's log-probs of a fixed probe sequence must match the
  learner's within `learner.sync_tolerance`, else `WeightSyncError` stops the run. A silent
  no-op or partial reload (a known failure of other systems) is caught here, on every sync.
"""
from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from typing import Sequence


class WeightSyncError(RuntimeError):
    pass


@dataclass(frozen=True)
class SyncReport:
    version: int
    # max_t |log pi_vllm - log pi_learner| on the probe, worst rollout engine.
    max_abs_diff: float
    # Bytes broadcast, buckets (= broadcasts), wall seconds of the transfer + load.
    bytes: int = 0
    buckets: int = 0
    seconds: float = 0.0


def probe_mismatch(learner_lp: Sequence[float], engine_lp: Sequence[float]) -> float:
    if len(learner_lp) != len(engine_lp):
        raise WeightSyncError(f"probe lengths differ: learner {len(learner_lp)} vs engine {len(engine_lp)}")
    return max((abs(a - b) for a, b in zip(learner_lp, engine_lp)), default=0.0)


def check_in_sync(learner, rollout, probe_ids: Sequence[int], tolerance: float, version: int) -> SyncReport:
    """Compare the learner's and every engine's log-probs of the probe sequence, computed side
    by side (the engines' in a thread while the learner ranks run their forward)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="oreal-probe") as pool:
        engines = pool.submit(rollout.probe_logprobs, probe_ids)
        learner_lp = learner.probe_logprobs(probe_ids)
        engine_lps = engines.result()
    worst = max(probe_mismatch(learner_lp, lp) for lp in engine_lps)
    if not worst <= tolerance:  # also catches NaN
        raise WeightSyncError(
            f"weights out of sync at version {version}: vLLM and learner log-probs of the probe "
            f"differ by {worst:.3g} > learner.sync_tolerance={tolerance:g}. The rollout engines "
            "are not sampling from the policy being trained."
        )
    return SyncReport(version=version, max_abs_diff=worst)


def connect(learner, rollout) -> int:
    """Form the weight-sync groups (once, at start-up); returns the size of each. shards: one
    group per learner rank r (rank r + every worker); gather: learner rank 0 + every worker.
    Colocated (`learner.colocate`): every learner rank r, then engine r's worker, which takes
    its buckets from rank r by CUDA IPC (`cuda_ipc`)."""
    endpoints, backend = learner.sync_endpoints()
    senders = learner.sync_senders
    world_size = senders + rollout.num_workers
    joining = rollout.async_join_weight_sync(endpoints, world_size, backend, first_rank=senders,
                                             colocated=learner.cfg.colocate)
    rollout.wait([*learner.async_join_weight_sync(endpoints, world_size), *joining])
    return world_size


def check_delivery(plan, reports: Sequence[Sequence[dict]], version: int) -> None:
    """Every worker of every engine received and loaded every bucket of `plan`."""
    for engine, workers in enumerate(reports):
        for r in workers:
            got = (r["buckets"] - r["skipped"], r["bytes"], r["version"])
            if got != (len(plan), plan.total_bytes, version):
                raise WeightSyncError(
                    f"engine {engine} worker {r['rank']} loaded {got[0]} of {len(plan)} buckets "
                    f"({r['bytes']} of {plan.total_bytes} bytes, version {r['version']}) at version {version}")


def broadcast(learner, rollout, version: int, skip_buckets: dict[int, tuple[int, ...]] | None = None,
              plan=None) -> SyncReport:
    """Send the learner's policy to every engine as `version` and check that every bucket
    arrived everywhere. `skip_buckets` (engine -> bucket indices) makes engines drop
    buckets: a test hook. `plan` overrides the policy's bucket plan (benchmarks)."""
    start = time.perf_counter()
    plan = (plan or learner.weight_plan()).with_version(version)
    receiving = rollout.async_receive_weights(pickle.dumps(plan), version, skip_buckets)
    sent = learner.broadcast_weights(version, plan)
    check_delivery(plan, rollout.wait(receiving), version)
    return SyncReport(version, float("nan"), int(sent["bytes"]), int(sent["broadcasts"]),
                      time.perf_counter() - start)


def sync_weights(learner, rollout, version: int, probe_ids: Sequence[int], tolerance: float,
                 skip_buckets: dict[int, tuple[int, ...]] | None = None) -> SyncReport:
    """`broadcast`, then the probe check."""
    sent = broadcast(learner, rollout, version, skip_buckets)
    checked = check_in_sync(learner, rollout, probe_ids, tolerance, version)
    return SyncReport(version, checked.max_abs_diff, sent.bytes, sent.buckets, sent.seconds)
