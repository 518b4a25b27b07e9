"""Weight sync: learner (ZeRO-3 shards) -> rollout engines (vLLM), after every policy step.

Within one training step::

    rollout (version v) -> verify -> learner.train_step -> publish -> load -> check -> v+1
                                                          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^
                                                          sync_weights (this module)

publish: every rank joins a bucketed ZeRO-3 all-gather; rank 0 serialises the full state
  dict (Hugging Face names) to safetensors bytes held once in Ray's object store.
load: each rollout actor decodes the bytes inside its vLLM worker and reloads the weights in
  place (`actors.weight_receiver`): no engine restart, no checkpoint on disk.
check: vLLM's log-probs of a fixed probe sequence must match the learner's within
  `learner.sync_tolerance`, else `WeightSyncError` stops the run. A silent no-op reload
  (a known failure of other systems) is caught here, on every sync.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


class WeightSyncError(RuntimeError):
    pass


@dataclass(frozen=True)
class SyncReport:
    version: int
    # max_t |log pi_vllm - log pi_learner| on the probe, worst rollout actor.
    max_abs_diff: float


def probe_mismatch(learner_lp: Sequence[float], engine_lp: Sequence[float]) -> float:
    if len(learner_lp) != len(engine_lp):
        raise WeightSyncError(f"probe lengths differ: learner {len(learner_lp)} vs engine {len(engine_lp)}")
    return max((abs(a - b) for a, b in zip(learner_lp, engine_lp)), default=0.0)


def check_in_sync(learner, rollout, probe_ids: Sequence[int], tolerance: float, version: int) -> SyncReport:
    """Compare the learner's and every engine's log-probs of the probe sequence."""
    learner_lp = learner.probe_logprobs(probe_ids)
    worst = max(probe_mismatch(learner_lp, lp) for lp in rollout.probe_logprobs(probe_ids))
    if not worst <= tolerance:  # also catches NaN
        raise WeightSyncError(
            f"weights out of sync at version {version}: vLLM and learner log-probs of the probe "
            f"differ by {worst:.3g} > learner.sync_tolerance={tolerance:g}. The rollout engines "
            "are not sampling from the policy being trained."
        )
    return SyncReport(version=version, max_abs_diff=worst)


def sync_weights(learner, rollout, version: int, probe_ids: Sequence[int], tolerance: float) -> SyncReport:
    """Publish the learner's policy to every rollout engine as `version`, then check it."""
    blob_ref = learner.async_publish_weights()
    rollout.load_weights(blob_ref, version)
    return check_in_sync(learner, rollout, probe_ids, tolerance, version)
