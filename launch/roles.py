"""The roles of one run (placement, verifier pool, rollout engines, learner group and the
weight-sync groups between them) and the initial policy they start from."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from launch.config import TrainConfig


def prepare_policy(cfg: TrainConfig, splits) -> str:
    """Path of the initial policy: `model.path` (or the tiny model), warmed up if asked.
    Refuses, naming `model.path`, a tokenizer that cannot be loaded or has no stop token."""
    from launch.data.tasks import load_policy_tokenizer
    from launch.model.tiny_model import resolve_model_path

    path = resolve_model_path(cfg.model.path, cfg.model.tiny)
    tokenizer = load_policy_tokenizer(path)  # no stop token: responses would never end
    if not cfg.model.warmup.enabled:
        return path
    from launch.data.tasks import task_prompt
    from launch.model.warmup import ensure_warmup_model

    examples = [(task_prompt(tokenizer, p.question, cfg.task), p.solution)
                for p in splits.train if p.solution]
    if not examples:
        raise ValueError("model.warmup.enabled needs worked solutions; the task's train split has none")
    if cfg.model.warmup.num_examples:
        examples = examples[: cfg.model.warmup.num_examples]
    return ensure_warmup_model(path, examples, cfg.model.warmup)


def policy_beside_ray(cfg: TrainConfig, splits, startup: dict[str, float], model_path: str | None = None):
    """(initial policy path, its tokenizer), prepared while Ray starts, followed by the import
    of the roles' driver-side modules (torch among them). Each used to run alone, before Ray or
    before the first role started, with a core idle. Ray starts in this thread (its signal
    handlers need the main one), the rest in another; a bad model path or tokenizer still stops
    the run before any role starts. `model_path`: roles already started (tests), only the
    tokenizer is loaded. Stages startup/prepare_policy_s, startup/role_imports_s and
    startup/init_ray_s, side by side."""
    from launch.state.metrics import timed
    from launch.ray_connect import init_ray

    def policy():
        with timed(startup, "prepare_policy"):
            from launch.model.tokenizer_class import load_tokenizer

            path = model_path or prepare_policy(cfg, splits)
            tokenizer = load_tokenizer(path)
        with timed(startup, "role_imports"):
            _import_role_modules()  # off the roles' own start: Ray is still starting
        return path, tokenizer

    with ThreadPoolExecutor(1, thread_name_prefix="oreal-policy") as pool:
        loading = pool.submit(policy)
        with timed(startup, "init_ray"):
            init_ray(cfg)
        return loading.result()


def _import_role_modules() -> None:
    """The modules `Roles.__init__` imports (torch among them: 3-4 s of CPU), loaded ahead."""
    import actors.group  # noqa: F401
    import launch.placement  # noqa: F401
    import launch.streaming  # noqa: F401
    import learner.group  # noqa: F401
    import learner.weight_sync  # noqa: F401
    import verifier  # noqa: F401


class Roles:
    """The role handles of one run, started once (tests share them across runs)."""

    def __init__(self, cfg: TrainConfig, model_path: str, train_golds: list[str], run_dir: str | None = None):
        """`run_dir`: the run folder, which every learner rank must see (checked as the learner
        starts, before any model loads); None skips the check (roles shared by tests)."""
        from actors.group import RolloutGroup
        from launch.placement import build_placement
        from launch.state.metrics import timed
        from launch.streaming import Prefetcher
        from learner.group import LearnerGroup
        from learner.weight_sync import connect
        from verifier import VerifierPool

        self.model_path = model_path
        self.startup: dict[str, float] = {}  # wall seconds of each start-up stage (startup/...)
        # First: a cluster that cannot hold the learner and engines fails before anything starts.
        with timed(self.startup, "placement"):
            self.placement = build_placement(cfg.rollout, cfg.learner, cfg.ray.placement_timeout_s)
        # The engines take longest to start (vLLM's import; three processes in turn unless
        # rollout.in_process_engine), so they start first; beside them the verifier checks the
        # golds (in seconds: golds it cannot grade stop the run before the first step), then
        # the learner group starts.
        with timed(self.startup, "engines_and_learner"):
            with ThreadPoolExecutor(1, thread_name_prefix="oreal-start") as pool:
                rollout = pool.submit(self._timed, "engines", RolloutGroup, cfg.rollout, model_path, cfg.seed,
                                      placement=self.placement)
                try:
                    with timed(self.startup, "verifier"):
                        self.verifier = VerifierPool(cfg.verifier)
                        self.verifier.self_check(train_golds)
                    self.learner = self._timed("learner", LearnerGroup, cfg.learner, cfg.algo, model_path,
                                               cfg.seed, cfg.steps, placement=self.placement, run_dir=run_dir)
                except BaseException as e:
                    self._stop_started(rollout, e)
                    raise
                self.rollout = rollout.result()
        with timed(self.startup, "sync_groups"):
            connect(self.learner, self.rollout)  # the weight-sync groups: learner ranks + every vLLM worker
        # A restarted engine joins new sync groups and gets the current weights, probe-checked.
        self.probe_ids: list[int] | None = None  # set by train()
        self.sync_tolerance = cfg.learner.sync_tolerance
        self.rollout.on_restart = self.rejoin_engines
        self.ahead = Prefetcher(self)  # each step's rollouts: now, or during the last step's training

    def _timed(self, stage: str, start, *args, **kwargs):
        """`start(*args, **kwargs)`, its wall seconds kept as startup/<stage>_s: which of the
        roles started side by side is the one start-up waits for."""
        from launch.state.metrics import timed

        with timed(self.startup, stage):
            return start(*args, **kwargs)

    def _stop_started(self, rollout, error: BaseException) -> None:
        """A role failed to start (the self-check refused the golds, a learner rank died): stop
        the roles already started, the engines once their start returns, before the error
        ends the run (their processes would hold memory until the driver exits)."""
        print(f"start-up failed ({type(error).__name__}: {str(error)[:300]}); stopping the roles that "
              "already started (the engines once their start-up returns, up to a minute)", flush=True)
        for role in (getattr(self, "learner", None), getattr(self, "verifier", None)):
            if role is not None:
                role.shutdown()
        try:
            rollout.result().shutdown()
        except Exception:  # the engines failed to start too: nothing to stop
            pass
        self.placement.remove()

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
