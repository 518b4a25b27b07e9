"""LearnerGroup: the driver's handle on the ZeRO-3 ranks (one Ray actor each).

Methods named `async_*` return ObjectRefs; the others block. Every call fans out to all
ranks (the ranks' methods are collective), and returns when all are done, or at once when one
rank fails: a dead rank raises `LearnerRankDied` (its peers would wait in a collective
forever), so the run ends with one line and resumes from its last checkpoint.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import ray

from learner.batch import GlobalCounts, RMPlan, TrainSample, shard
from learner.config import AlgoConfig, LearnerConfig
from learner.run_folder import not_shared_error, remove_sentinel, write_sentinel
from learner.worker import LearnerWorker

if TYPE_CHECKING:
    from launch.placement import Placement

class LearnerRankDied(RuntimeError):
    def __init__(self, rank: int, call: str, err: BaseException):
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        super().__init__(f"learner rank {rank} died during {call} ({type(err).__name__}: {first})")
        self.rank, self.call = rank, call


def gather(refs: Sequence[ray.ObjectRef], call: str) -> list:
    """Every rank's result, in rank order; the first failure raises at once (a dead rank:
    `LearnerRankDied` naming it), never waiting on the peers it left in a collective."""
    rank_of = {ref: r for r, ref in enumerate(refs)}
    left = list(refs)
    while left:
        ready, left = ray.wait(left, num_returns=1)
        try:
            ray.get(ready[0])
        except ray.exceptions.RayActorError as err:
            raise LearnerRankDied(rank_of[ready[0]], call, err) from None
    return ray.get(list(refs))


# Metrics whose per-rank values are already shares of a global mean (or pre-divided).
_SUMMED = "sum"


class LearnerGroup:
    def __init__(self, cfg: LearnerConfig, algo: AlgoConfig, model_path: str, seed: int, total_steps: int,
                 env_vars: dict[str, str] | None = None, placement: Placement | None = None,
                 run_dir: str | None = None):
        """`placement` puts rank r in its bundle (launch/placement.py); without it Ray
        schedules the ranks wherever they fit. `run_dir`: the run folder every rank must see
        (`check_run_folder`), checked before any model loads."""
        self.cfg = cfg
        actor = ray.remote(LearnerWorker)
        opts = dict(num_cpus=cfg.num_cpus_per_rank, num_gpus=cfg.num_gpus_per_rank)
        if env_vars:
            opts["runtime_env"] = {"env_vars": env_vars}
        self.workers = [
            actor.options(**{**opts, **(placement.learner_options(rank) if placement else {})})
            .remote(rank, cfg, algo, model_path, seed, total_steps)
            for rank in range(cfg.world_size)
        ]
        if run_dir is not None:
            self.check_run_folder(str(run_dir))
        addr, port = ray.get(self.workers[0].master_address.remote())
        gather([w.setup.remote(addr, port) for w in self.workers], "setup")

    def check_run_folder(self, run_dir: str) -> None:
        """Every rank reads back a sentinel the driver writes into `run_dir` (learner.run_folder);
        when one cannot, the ranks are stopped and `RunFolderNotShared` names output_dir and the
        rank's node, in one line."""
        path, token = write_sentinel(run_dir)
        try:
            found = gather([w.check_run_folder.remote(path, token) for w in self.workers], "check_run_folder")
        finally:
            remove_sentinel(path)
        failures = {rank: tuple(f) for rank, f in enumerate(found) if f is not None}
        if failures:
            self.shutdown()
            raise not_shared_error(run_dir, path, failures)

    def train_step(self, samples: Sequence[TrainSample], step: int,
                   rm_batches: Sequence[Sequence[TrainSample]] | None = None,
                   rm_fresh: Sequence[TrainSample] = ()) -> dict[str, float]:
        """Shard the kept samples over ranks (balanced tokens, equal micro-batch counts),
        run one step everywhere, and reduce the per-rank metric sums. `rm_batches`: the token
        RM's own mini-batches, one optimiser step each (`learner.rm_data`), and `rm_fresh` this
        step's RM samples (its `reward_model/fit_bce`); None: the RM trains on `samples`."""
        counts = GlobalCounts.of(samples)
        shards = shard(samples, self.cfg.world_size, self.cfg.micro_batch_size, self.cfg.max_tokens_per_micro_batch)
        plans = [None] * self.cfg.world_size if rm_batches is None else self._rm_plans(rm_batches, rm_fresh)
        # Slice before shipping: each rank receives only its own shard.
        refs = [w.train_step.remote(ray.put(s), counts, step, p) for w, s, p in zip(self.workers, shards, plans)]
        return _finalise(merge_ranks(gather(refs, "train_step")), counts)

    def _rm_plans(self, rm_batches: Sequence[Sequence[TrainSample]], fresh: Sequence[TrainSample]) -> list[RMPlan]:
        """Each rank's share of the RM's mini-batches (every rank the same micro-batch count in
        each) with each mini-batch's global weight, and of the fresh samples."""
        def split(samples):
            return shard(samples, self.cfg.world_size, self.cfg.micro_batch_size, self.cfg.max_tokens_per_micro_batch)

        per_batch = [split(mb) for mb in rm_batches]
        fresh_shards = split(fresh)
        totals = [sum(s.rm_weight for s in mb) for mb in rm_batches]
        return [RMPlan([b[r] for b in per_batch], totals, fresh_shards[r], sum(s.rm_weight for s in fresh))
                for r in range(self.cfg.world_size)]

    def rm_position_scores(self, samples: Sequence[TrainSample]) -> list[list[float]]:
        """The token RM's raw scores along each sample (the last prompt position, then each
        response token's own), in `samples`' order: the held-out instruments' input."""
        world = self.cfg.world_size
        parts = [list(samples[r::world]) for r in range(world)]
        longest = max(len(p) for p in parts)  # equal forwards on every rank: pad with a repeat
        padded = [p + [samples[0]] * (longest - len(p)) if samples else p for p in parts]
        out = gather([w.rm_position_scores.remote(p) for w, p in zip(self.workers, padded)], "rm_position_scores")
        scores: list[list[float]] = [[] for _ in samples]
        for r, rows in enumerate(out):
            for j, row in enumerate(rows[:len(parts[r])]):
                scores[r + j * world] = row
        return scores

    def set_algo(self, algo: AlgoConfig) -> None:
        gather([w.set_algo.remote(algo) for w in self.workers], "set_algo")

    def token_weights(self, samples: Sequence[TrainSample]) -> list[tuple[list[float], list[float]]]:
        """Token weights (w+, w-) of whole samples under the current token RM (mode oreal)."""
        ref = ray.put(list(samples))
        return gather([w.token_weights.remote(ref) for w in self.workers], "token_weights")[0]

    # ---- weight sync (learner.weight_sync): metadata through Ray, bytes over the sync groups
    def weight_plan(self):
        """The policy's bucket plan (metadata), computed once by rank 0."""
        if getattr(self, "_plan", None) is None:
            self._plan = ray.get(self.workers[0].weight_plan.remote())
        return self._plan

    def sync_endpoints(self) -> tuple[list[tuple[str, int]], str]:
        """Where the weight-sync groups meet, in group order, and their backend: group r at
        learner rank r's node IP and a port it holds open (sync_mode shards: one group per
        rank), else rank 0's only."""
        roots = self.workers[:self.cfg.sync_groups]
        endpoints = [tuple(e) for e in ray.get([w.open_sync_endpoint.remote() for w in roots])]
        return endpoints, ray.get(self.workers[0].sync_backend.remote())

    @property
    def sync_senders(self) -> int:
        """Learner members of each sync group: every rank when colocated, else one (rank r of
        group r in sync_mode shards; rank 0 in gather)."""
        return self.cfg.world_size if self.cfg.colocate else 1

    def async_join_weight_sync(self, endpoints: list[tuple[str, int]], world_size: int) -> list[ray.ObjectRef]:
        return [w.join_weight_sync.remote(endpoints, world_size) for w in self.workers]

    def broadcast_weights(self, version: int, plan=None) -> dict[str, float]:
        """One sync's send, every rank taking part. Returns rank 0's stats (broadcasts = buckets
        of the plan), with `bytes` summed over ranks in sync_mode shards (the partitions sent,
        padding included) and `seconds` the slowest rank's."""
        per_rank = gather([w.broadcast_weights.remote(version, plan) for w in self.workers], "broadcast_weights")
        if not self.cfg.sync_shards:
            return per_rank[0]
        return {**per_rank[0], "bytes": sum(r["bytes"] for r in per_rank),
                "seconds": max(r["seconds"] for r in per_rank)}

    def load_policy_from(self, model_path: str) -> None:
        """Reset the policy from a model folder (the initial policy: tests, resets)."""
        gather([w.load_policy_from.remote(model_path) for w in self.workers], "load_policy_from")

    def async_publish_weights(self) -> ray.ObjectRef:
        """The whole policy as one safetensors blob (rank 0's ref): inspection in tests and the
        benchmark's object-store baseline, never the run's sync."""
        refs = [w.publish_weights.remote() for w in self.workers]
        return refs[0]

    def probe_logprobs(self, token_ids: Sequence[int]) -> list[float]:
        return gather([w.probe_logprobs.remote(list(token_ids)) for w in self.workers], "probe_logprobs")[0]

    def save_pretrained(self, out_dir: str) -> None:
        gather([w.save_pretrained.remote(out_dir) for w in self.workers], "save_pretrained")

    def save_checkpoint(self, folder: str, step: int) -> dict[str, str]:
        """DeepSpeed checkpoints of the policy and the token RM (optimisers and LR schedules
        included), each rank writing its own shards under `folder`, plus every rank's RNG.
        Returns {path relative to `folder`: SHA-256} of the shards, each hashed by its rank."""
        hashes = gather([w.save_checkpoint.remote(folder, step) for w in self.workers], "save_checkpoint")
        return {rel: digest for rank_hashes in hashes for rel, digest in rank_hashes.items()}

    def load_checkpoint(self, folder: str) -> int:
        """Every rank back to what `save_checkpoint` wrote; returns the step it was saved at."""
        steps = gather([w.load_checkpoint.remote(folder) for w in self.workers], "load_checkpoint")
        if len(set(steps)) != 1:
            raise ValueError(f"learner ranks loaded checkpoints of different steps from {folder}: {steps}")
        return steps[0]

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)


def merge_ranks(per_rank: Sequence[dict[str, float]]) -> dict[str, float]:
    """The ranks' metric sums as one: summed, except a `*_max` key, which keeps the largest."""
    total: dict[str, float] = {}
    for m in per_rank:
        for k, v in m.items():
            total[k] = max(total.get(k, v), v) if k.endswith("_max") else total.get(k, 0.0) + v
    return total


def _finalise(total: dict[str, float], counts: GlobalCounts) -> dict[str, float]:
    """Turn summed per-rank values into the logged means."""
    out = dict(total)
    tokens = max(1.0, total.pop("learner/tokens", 0.0))
    out.pop("learner/tokens", None)
    if "learner/entropy_sum" in total:
        out["learner/entropy"] = out.pop("learner/entropy_sum") / tokens
        out["learner/kl_k3_mean"] = out.pop("learner/kl_k3_sum") / tokens
        out["learner/w_pos_mean"] = out.pop("learner/w_pos_sum") / max(1, counts.n_pos_tokens)
        out["learner/w_neg_mean"] = out.pop("learner/w_neg_sum") / max(1, counts.n_neg_tokens)
    if "rollout/logprob_mismatch_n" in total:  # the engines' log-probs against the learner's
        out["rollout/logprob_mismatch"] = out.pop("rollout/logprob_mismatch_sum") / max(
            1.0, out.pop("rollout/logprob_mismatch_n"))
    if "learner/tis_clipped_n" in total:
        out["learner/tis_clipped_frac"] = out.pop("learner/tis_clipped_n") / tokens
        out["learner/tis_weight_mean"] = out.pop("learner/tis_weight_sum") / tokens
    if "reward_model/correct" in total:
        out["reward_model/accuracy"] = out.pop("reward_model/correct") / max(1, counts.n_seqs)
    out["learner/kept_tokens"] = float(counts.n_pos_tokens + counts.n_neg_tokens)
    out["learner/kept_seqs"] = float(counts.n_seqs)
    return out
