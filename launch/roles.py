"""The roles of one run (placement, verifier pool, rollout engines, learner group and the
weight-sync groups between them) and the initial policy they start from."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from launch.config import TrainConfig


def prepare_policy(cfg: TrainConfig, splits) -> str:
    """Path of the initial policy: `model.path` (or the tiny model), warmed up if asked.
    Refuses, naming `model.path`, a tokenizer that cannot be loaded or has no stop token."""
    from launch.tasks import load_policy_tokenizer
    from launch.tiny_model import resolve_model_path

    path = resolve_model_path(cfg.model.path, cfg.model.tiny)
    tokenizer = load_policy_tokenizer(path)  # no stop token: responses would never end
    if not cfg.model.warmup.enabled:
        return path
    from launch.tasks import task_prompt
    from launch.warmup import ensure_warmup_model

    examples = [(task_prompt(tokenizer, p.question, cfg.task), p.solution)
                for p in splits.train if p.solution]
    if not examples:
        raise ValueError("model.warmup.enabled needs worked solutions; the task's train split has none")
    if cfg.model.warmup.num_examples:
        examples = examples[: cfg.model.warmup.num_examples]
    return ensure_warmup_model(path, examples, cfg.model.warmup)


class Roles:
    """The role handles of one run, started once (tests share them across runs)."""

    def __init__(self, cfg: TrainConfig, model_path: str, train_golds: list[str]):
        from actors.group import RolloutGroup
        from launch.placement import build_placement
        from launch.metrics import timed
        from launch.streaming import Prefetcher
        from learner.group import LearnerGroup
        from learner.weight_sync import connect
        from verifier import VerifierPool

        self.model_path = model_path
        self.startup: dict[str, float] = {}  # wall seconds of each start-up stage (startup/...)
        # First: a cluster that cannot hold the learner and engines fails before anything starts.
        with timed(self.startup, "placement"):
            self.placement = build_placement(cfg.rollout, cfg.learner, cfg.ray.placement_timeout_s)
        with timed(self.startup, "verifier"):  # golds the verifier cannot grade: refused before the heavy roles
            self.verifier = VerifierPool(cfg.verifier)
            self.verifier.self_check(train_golds)
        with timed(self.startup, "engines_and_learner"):  # independent: they start side by side
            with ThreadPoolExecutor(1, thread_name_prefix="oreal-start") as pool:
                rollout = pool.submit(RolloutGroup, cfg.rollout, model_path, cfg.seed, placement=self.placement)
                self.learner = LearnerGroup(cfg.learner, cfg.algo, model_path, cfg.seed, cfg.steps,
                                            placement=self.placement)
                self.rollout = rollout.result()
        with timed(self.startup, "sync_groups"):
            connect(self.learner, self.rollout)  # the weight-sync groups: learner ranks + every vLLM worker
        # A restarted engine joins new sync groups and gets the current weights, probe-checked.
        self.probe_ids: list[int] | None = None  # set by train()
        self.sync_tolerance = cfg.learner.sync_tolerance
        self.rollout.on_restart = self.rejoin_engines
        self.ahead = Prefetcher(self)  # each step's rollouts: now, or during the last step's training

    def rejoin_engines(self) -> None:
        """After an engine restart: every engine and learner rank form the sync groups anew (a
        group cannot take a new member), then the engines receive the current policy version
        and must pass the probe check before they generate again."""
        from learner.weight_sync import broadcast, check_in_sync, connect

        connect(self.learner, self.rollout)
        broadcast(self.learner, self.rollout, self.rollout.version)
        if self.probe_ids is not None:
            check_in_sync(self.learner, self.rollout, self.probe_ids, self.sync_tolerance, self.rollout.version)

    def take_faults(self) -> dict[str, float]:
        """Faults since the last call (faults/...): dead verifier processes and actors, dead
        rollout engines, samples graded and queries generated again."""
        return {**self.verifier.take_faults(), **self.rollout.take_faults()}

    def reset_policy(self) -> None:
        """Policy back to the initial weights, read again from the model path (nothing kept
        pinned for it), in the learner and every engine (shared roles across runs, e.g. tests;
        optimiser and RM state are kept)."""
        from learner.weight_sync import broadcast

        self.learner.load_policy_from(self.model_path)
        broadcast(self.learner, self.rollout, version=0)

    def shutdown(self) -> None:
        for role in (self.rollout, self.learner, self.verifier):
            role.shutdown()
        self.placement.remove()
