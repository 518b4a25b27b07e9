"""Checkpoints and exact resume: an interrupted run loses at most the steps since the last one.

Layout, under `ckpt.dir` (default `<run folder>/ckpt`)::

    step_000004/                one checkpoint, named by the RL steps done
      learner/policy/state/     DeepSpeed's checkpoint of the policy: weights, AdamW, LR schedule
                                (ZeRO partitions: every learner rank writes its own files)
      learner/rm/state/         the same for the token RM (when the learner has one)
      learner/rng_rank<r>.pt    each learner rank's torch RNG
      policy/                   the policy in Hugging Face format (transformers and vLLM load it)
      driver.json               the driver's state (`DriverState`), the W&B run id, held-out
                                pass@1 at this step (null when not evaluated), the config
      COMPLETE                  written last
    step_000006.tmp/            a write in progress or interrupted: never picked, removed later

Atomic: a checkpoint is written into `step_NNNNNN.tmp/`, every file flushed to disk,
`COMPLETE` last, then the folder is renamed; a folder without `COMPLETE` is never picked, and
pruning renames a folder away before deleting it. Kept: the newest `ckpt.keep`, plus the one
with the best held-out pass@1 (`ckpt.keep_best`; a checkpoint has a score when its step was
evaluated: make `ckpt.every` a multiple of `eval_every`).

Resume (`ckpt.resume=auto` or a checkpoint folder), in `launch.loop.train`:
  before Ray starts  `find_resume` picks the checkpoint and checks it (one-line
                     `CheckpointError` naming the path and the key otherwise);
  before generating  `restore`: the learner loads its state, the engines receive its weights
                     over the weight-sync group as the saved policy version, the probe check runs;
  the loop           continues at step + 1 from the saved data order, position and driver RNG,
                     so it draws the same queries, in the same order, and (with
                     `rollout.seeded_sampling`) the engines draw the same samples;
  the record         metrics.jsonl is appended (a `resume/from_step` row marks where), W&B
                     continues the same run id.
A resume that would repeat or skip steps stops instead: an older checkpoint than the newest
of its folder (repeat), one ahead of the run folder's metrics.jsonl (skip), a learner state of
another step than the driver's, or a config that changed (other than `RESUME_MAY_CHANGE`).
Steps that ran after the checkpoint but before the interruption are run again (their earlier
rows stay in metrics.jsonl, before the marker).
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from launch.state.carried import Carried
from launch.state import run_folder
from launch.state.manifest import verify_manifest, write_manifest
from learner.rm_data import RMReplay

log = logging.getLogger("oreal")

FORMAT = 1
COMPLETE = "COMPLETE"
DRIVER_STATE = "driver.json"
# Config keys (first level) that may differ between a run and its resume: where things are
# written and shown, not what is computed.
RESUME_MAY_CHANGE = ("ckpt", "output_dir", "ray", "wandb", "save_policy")
_NAME = re.compile(r"^step_(\d{6})$")


def eval_score(row: dict[str, float]) -> float | None:
    """What picks the best checkpoint: the benchmarks' mean pass@1 when any are evaluated,
    else the held-out pass@1."""
    return row.get("eval/benchmarks/pass1", row.get("eval/pass1"))


@dataclass
class CkptConfig:
    """Checkpoints and resume (schema of `ckpt:` in conf/train.yaml)."""

    # Write checkpoints at all (false: nothing survives an interruption).
    enabled: bool = True
    # Write a checkpoint every N RL steps, and always after the last step (0: only after the last).
    every: int = 10
    # Folder of the checkpoints (null: <run folder>/ckpt). Every learner rank writes its own
    # shards there: on a cluster, a filesystem all nodes share.
    dir: str | None = None
    # Checkpoints kept: the newest `keep` ...
    keep: int = 2
    # ... plus the one with the best held-out pass@1.
    keep_best: bool = True
    # null: start at step 0; "auto": the newest complete checkpoint of `dir` (step 0 when there
    # is none; the run folder must be the same, i.e. the same output_dir); else a checkpoint
    # folder (.../ckpt/step_000004).
    resume: str | None = None
    # Check the checkpoint against its SHA-256 manifest (manifest.sha256, written with it)
    # before resuming; false skips the check (a checkpoint written before manifests existed).
    verify: bool = True

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError(f"ckpt.every must be >= 0 (0: only after the last step), got {self.every}")
        if self.keep < 1:
            raise ValueError(f"ckpt.keep must be >= 1, got {self.keep} (ckpt.enabled=false writes none)")
        if self.resume is not None and not str(self.resume).strip():
            raise ValueError("ckpt.resume must be null, auto or a checkpoint folder, got an empty string")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from, or a resume that would repeat or skip steps
    (one line, naming the path and the key)."""


@dataclass
class DriverState:
    """What the driver carries from step to step; all of it is in driver.json."""

    # RL steps done (the next step is logged as step + 1).
    step: int
    # Weights version the engines hold (the step of the last sync; 0 = initial policy).
    policy_version: int
    # The driver's RNG: the data order's shuffles and the filter's picks (learner.selection).
    rng: random.Random
    # Ids of the problems still to draw, in order (the rest of the current shuffled pass).
    order: list[str]
    # Queries drawn so far (step x prompts_per_step, more with algo.dynamic_sampling's refills).
    drawn: int = 0
    # `drawn` when the last step finished: equal to it between steps, so a state saved after a
    # step drew its queries but before it finished is told apart (check_resumable).
    drawn_done: int = 0
    # The token RM's replay buffer (algo.rm_replay_steps; learner.rm_data): the last steps'
    # RM samples, trained on again; empty when the RM trains on the kept pairs alone.
    rm_replay: RMReplay = field(default_factory=lambda: RMReplay())
    # rollout.partial: the queries whose cut samples continue in the next step (launch.state.carried).
    carried: Carried = field(default_factory=Carried)

    @classmethod
    def start(cls, seed: int, rm_replay_steps: int = 1, rm_replay_anchor_steps: int = 0) -> DriverState:
        return cls(step=0, policy_version=0, rng=random.Random(seed), order=[],
                   rm_replay=RMReplay(rm_replay_steps, anchor_steps=rm_replay_anchor_steps))

    def next_queries(self, train: Sequence, count: int) -> list:
        """The next `count` problems: the rest of the current pass, then a new shuffle of `train`."""
        if len(self.order) < count:
            self.order += [p.id for p in self.rng.sample(list(train), len(train))]
        ids, self.order = self.order[:count], self.order[count:]
        self.drawn += count
        by_id = {p.id: p for p in train}
        return [by_id[i] for i in ids]

    def copy(self) -> DriverState:
        return DriverState.from_json(self.to_json())

    def step_done(self, synced: bool) -> None:
        self.step += 1
        self.drawn_done = self.drawn
        if synced:
            self.policy_version = self.step

    def to_json(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {"step": self.step, "policy_version": self.policy_version, "order": self.order,
                "drawn": self.drawn, "drawn_done": self.drawn_done, "rng": [version, list(internal), gauss],
                "rm_replay": self.rm_replay.to_json(), "carried": self.carried.to_json()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DriverState:
        rng = random.Random()
        version, internal, gauss = d["rng"]
        rng.setstate((version, tuple(internal), gauss))
        replay = RMReplay.from_json(d["rm_replay"]) if "rm_replay" in d else RMReplay()  # older checkpoints
        return cls(step=d["step"], policy_version=d["policy_version"], rng=rng, order=list(d["order"]),
                   drawn=d["drawn"], drawn_done=d.get("drawn_done", d["drawn"]), rm_replay=replay,
                   carried=Carried.from_json(d.get("carried", [])))  # older checkpoints: none


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint folder and its driver.json."""

    path: Path
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta["state"]["step"])

    @property
    def wandb_run_id(self) -> str | None:
        return self.meta.get("wandb_run_id")

    def driver_state(self, train: Sequence) -> DriverState:
        state = DriverState.from_json(self.meta["state"])
        known = {p.id for p in train}
        unknown = [i for i in state.order if i not in known]
        if unknown:
            raise CheckpointError(f"{self.path}: its data order names {len(unknown)} problems the task does not have "
                                  f"(e.g. {unknown[0]!r}): task.* differs from the checkpointed run")
        return state


def ckpt_root(cfg: CkptConfig, run_dir: Path) -> Path:
    """Absolute: the learner ranks, in other processes, write under it."""
    return (Path(cfg.dir) if cfg.dir else Path(run_dir) / "ckpt").absolute()


def step_name(step: int) -> str:
    return f"step_{step:06d}"


def open_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint in `path`, or CheckpointError saying why it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    if not (path / COMPLETE).is_file():
        hint = (" (it holds checkpoints: name one of its step_* folders)" if any(path.glob("step_*"))
                else " (its write did not finish, or it is not a checkpoint)")
        raise CheckpointError(f"{path}: not a complete checkpoint, no {COMPLETE} marker{hint}")
    try:
        meta = json.loads((path / DRIVER_STATE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable {DRIVER_STATE} ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{path}: checkpoint format {found!r}, this code reads {FORMAT}")
    absent = _missing_keys(meta)
    if absent:
        raise CheckpointError(f"{path}: {DRIVER_STATE} lacks {', '.join(absent)} (not written by this code, or edited)")
    missing = [f for f in _expected_files(meta) if not (path / f).exists()]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    return Checkpoint(path, meta)


# What driver.json must hold, as dotted paths (with the type each value must have).
_REQUIRED = {"state": dict, "state.step": int, "state.policy_version": int, "state.order": list, "state.drawn": int,
             "state.rng": list, "config": dict, "config.learner": dict, "config.learner.world_size": int,
             "learner_models": list}


def _missing_keys(meta: dict[str, Any]) -> list[str]:
    """The keys of `_REQUIRED` that `meta` lacks or holds with another type."""
    bad = []
    for key, kind in _REQUIRED.items():
        node: Any = meta
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, kind) or (kind is int and isinstance(node, bool)):
            bad.append(key)
    return bad


def _expected_files(meta: dict[str, Any]) -> list[str]:
    world = int(meta["config"]["learner"]["world_size"])
    return ([f"learner/{m}" for m in meta["learner_models"]] + [f"learner/rng_rank{r}.pt" for r in range(world)]
            + ["policy/config.json", "policy/model.safetensors"])


def complete_checkpoints(root: Path) -> list[Checkpoint]:
    """The complete checkpoints under `root`, oldest first (incomplete ones are skipped, with a
    warning for a step_* folder that has no COMPLETE marker)."""
    found = []
    for p in sorted(Path(root).glob("step_*")) if Path(root).is_dir() else []:
        if not _NAME.match(p.name):
            continue  # step_*.tmp / .old: a write in progress or interrupted, a deletion
        try:
            found.append(open_checkpoint(p))
        except CheckpointError as e:
            log.warning("skipping %s", e)
    return sorted(found, key=lambda c: c.step)


def _damaged(root: Path) -> list[Path]:
    """step_* folders of `root` marked COMPLETE that do not open as checkpoints, oldest first."""
    out = []
    for p in sorted(Path(root).glob("step_*")) if Path(root).is_dir() else []:
        if _NAME.match(p.name) and (p / COMPLETE).is_file():
            try:
                open_checkpoint(p)
            except CheckpointError:
                out.append(p)
    return out


def find_resume(cfg, run_dir: Path) -> Checkpoint | None:
    """The checkpoint `cfg.ckpt.resume` names, checked (before Ray starts), or None for a fresh
    run. `cfg` is the TrainConfig. Raises CheckpointError (one line) when it cannot be resumed."""
    c = cfg.ckpt
    root = ckpt_root(c, run_dir)
    if c.resume is None:
        existing = complete_checkpoints(root) if c.enabled else []
        if existing:
            raise CheckpointError(f"{root} already holds checkpoints (newest {existing[-1].path.name}) of a run; "
                                  "resume it with ckpt.resume=auto, or give this run another output_dir / ckpt.dir")
        record = run_folder.record_in(run_dir)
        if record:
            raise CheckpointError(f"output_dir={run_dir} holds another run ({', '.join(record)}): give this run "
                                  "another output_dir, or continue that one with ckpt.resume=auto")
        return None
    if c.resume == "auto":
        found = complete_checkpoints(root)
        damaged = [p for p in _damaged(root) if not found or p.name > found[-1].path.name]
        if damaged:  # never silently fall back to an older checkpoint, or to step 0
            try:
                open_checkpoint(damaged[-1])
            except CheckpointError as e:
                raise CheckpointError(f"ckpt.resume=auto: the newest checkpoint is damaged: {e}; resume from an older "
                                      "one with ckpt.resume=<its folder>, or move it away") from None
        if not found:
            aside = run_folder.set_aside(run_dir)
            if aside is not None:
                log.warning("ckpt.resume=auto: no complete checkpoint in %s, but %s holds an attempt that stopped "
                            "before its first one: its record is moved to %s and the run starts at step 0",
                            root, run_dir, aside)
            else:
                log.info("ckpt.resume=auto: no complete checkpoint in %s, starting at step 0", root)
            return None
        ckpt = found[-1]
    else:
        try:
            ckpt = open_checkpoint(Path(c.resume))
        except CheckpointError as e:
            raise CheckpointError(f"ckpt.resume={c.resume}: {e}") from None
        newer = [k for k in complete_checkpoints(ckpt.path.parent) if k.step > ckpt.step]
        if newer:
            raise CheckpointError(f"ckpt.resume={c.resume}: {newer[-1].path} is newer (step {newer[-1].step}); "
                                  f"resuming at step {ckpt.step} would repeat steps {ckpt.step + 1}-{newer[-1].step}. "
                                  "Resume from the newest, or move the newer checkpoints away to go back on purpose")
    if c.verify:
        check_manifest(ckpt)
    check_resumable(ckpt, cfg, Path(run_dir))
    return ckpt


def check_manifest(ckpt: Checkpoint) -> None:
    """Every byte of the checkpoint as it was saved (launch/state/manifest.py), or CheckpointError."""
    try:
        problems = verify_manifest(ckpt.path, skip=(COMPLETE,))
    except ValueError as e:
        raise CheckpointError(f"{ckpt.path}: {e}: cannot check it was not changed since it was saved; resume only "
                              "checkpoints you trust, and skip the check with ckpt.verify=false") from None
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(f"{ckpt.path}: differs from its manifest.sha256: {'; '.join(problems[:3])}{more}")


def check_resumable(ckpt: Checkpoint, cfg, run_dir: Path) -> None:
    """The checks that need the run's config and folder (see the module docstring)."""
    from launch.state.metrics import logged_steps

    where = f"ckpt.resume={cfg.ckpt.resume}: {ckpt.path}"
    if ckpt.step >= cfg.steps:
        raise CheckpointError(f"{where} is at step {ckpt.step} of steps={cfg.steps}: the run is complete, "
                              "nothing to resume")
    changed = config_changes(ckpt.meta["config"], asdict(cfg))
    if changed:
        raise CheckpointError(f"{where}: the config differs from the checkpointed run's in {', '.join(changed)}; "
                              "an exact resume needs the same (only ckpt.*, output_dir, ray.*, wandb.* and "
                              "save_policy may change)")
    state = ckpt.meta["state"]
    # Between steps every query drawn belongs to a finished step: exactly prompts_per_step per
    # step (algo.rm_only_prompts_per_step in the RM-only ones), or, with algo.dynamic_sampling's
    # refills, as many as the steps drew (drawn_done).
    expected = (state.get("drawn_done", state["drawn"]) if cfg.algo.dynamic_sampling
                else sum(cfg.prompts_at(s) for s in range(state["step"])))
    if state["drawn"] != expected:
        raise CheckpointError(f"{where}: {state['drawn']} queries drawn, {expected} by its {state['step']} finished "
                              f"steps (prompts_per_step={cfg.prompts_per_step}, algo.dynamic_sampling="
                              f"{str(cfg.algo.dynamic_sampling).lower()}): saved in the middle of a step, resuming "
                              "would repeat or skip its queries")
    logged = logged_steps(Path(run_dir) / "metrics.jsonl")
    if logged < ckpt.step:
        raise CheckpointError(f"{where} is at step {ckpt.step} but {Path(run_dir) / 'metrics.jsonl'} ends at step "
                              f"{logged}: resuming here would skip steps {logged + 1}-{ckpt.step} in the record; "
                              f"resume in the run folder that wrote it (output_dir={ckpt.meta.get('run_dir')})")
    if logged > ckpt.step:
        log.warning("resuming from %s: steps %d-%d ran after it and are lost with the interruption; they run "
                    "again (metrics.jsonl keeps their earlier rows, before a resume/from_step row)",
                    ckpt.path, ckpt.step + 1, logged)


def config_changes(saved: dict, now: dict) -> list[str]:
    """Dotted keys whose values differ, outside `RESUME_MAY_CHANGE`. A key only one side has is
    a config field added to or removed from the code since, not a change, unless the other side
    has its parent as a value (a free-form dict such as rollout.engine_kwargs that gained it)."""
    a, b = _flat(saved), _flat(json.loads(json.dumps(now)))

    def under_a_value(key: str, other: dict) -> bool:
        parts = key.split(".")
        return any(".".join(parts[:i]) in other for i in range(1, len(parts)))

    changed = {k for k in a.keys() & b.keys() if a[k] != b[k]}
    changed |= {k for k in a.keys() ^ b.keys() if under_a_value(k, b if k in a else a)}
    return sorted(k for k in changed if k.split(".")[0] not in RESUME_MAY_CHANGE)


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def restore(ckpt: Checkpoint, roles, train: Sequence, probe_ids: Sequence[int], tolerance: float) -> DriverState:
    """The learner back to the checkpoint, the engines given its weights (as its policy
    version) and checked on the probe; returns the driver's state to continue from."""
    from learner.weight_sync import sync_weights

    import ray

    state = ckpt.driver_state(train)
    try:
        step = roles.learner.load_checkpoint(str(ckpt.path / "learner"))
    except ray.exceptions.RayTaskError as e:  # a rank's error, e.g. a shard that pickles code
        cause = getattr(e, "cause", None) or e
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise CheckpointError(f"{ckpt.path}: the learner cannot load it: {type(cause).__name__}: {first}") from None
    if step != state.step:
        raise CheckpointError(f"{ckpt.path}: the learner's state is of step {step}, the driver's of step "
                              f"{state.step}: resuming would repeat or skip steps")
    sync_weights(roles.learner, roles.rollout, state.policy_version, probe_ids, tolerance)
    log.info("resumed from %s: step %d, policy version %d", ckpt.path, state.step, state.policy_version)
    return state


class Checkpointer:
    """Writes the run's checkpoints (`save`) and prunes the old ones."""

    def __init__(self, cfg: CkptConfig, run_dir: Path, last_step: int):
        self.cfg, self.run_dir, self.last_step = cfg, Path(run_dir), last_step
        self.root = ckpt_root(cfg, run_dir)

    def due(self, step: int) -> bool:
        return self.cfg.enabled and (step == self.last_step or (self.cfg.every > 0 and step % self.cfg.every == 0))

    def save(self, state: DriverState, roles, config: dict, wandb_run_id: str | None,
             evals: Sequence[dict]) -> Path:
        """One checkpoint of the run after `state.step` steps; returns its folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in [*self.root.glob("step_*.tmp"), *self.root.glob("step_*.old")]:
            shutil.rmtree(stale, ignore_errors=True)
        final = self.root / step_name(state.step)
        tmp = final.with_name(final.name + ".tmp")
        (tmp / "learner").mkdir(parents=True)
        shard_hashes = roles.learner.save_checkpoint(str(tmp / "learner"), state.step) or {}
        roles.learner.save_pretrained(str(tmp / "policy"))
        scored = [eval_score(e) for e in evals if int(e["eval/step"]) == state.step]
        meta = {"format": FORMAT, "state": state.to_json(), "wandb_run_id": wandb_run_id,
                "heldout_pass1": scored[-1] if scored else None, "run_dir": str(self.run_dir),
                "learner_models": sorted(p.name for p in (tmp / "learner").iterdir() if p.is_dir()),
                "config": config}
        _write(tmp / DRIVER_STATE, json.dumps(meta))
        write_manifest(tmp, known={f"learner/{rel}": digest for rel, digest in shard_hashes.items()})
        _sync_tree(tmp)
        _write(tmp / COMPLETE, f"step {state.step}\n")
        old = final.with_name(final.name + ".old")
        if final.exists():  # the same step written again: the old one goes away atomically first
            final.rename(old)
        tmp.rename(final)
        _fsync_dir(self.root)
        shutil.rmtree(old, ignore_errors=True)
        self.prune()
        return final

    def last_saved_step(self) -> int | None:
        """The newest complete checkpoint's step (what `ckpt.resume=auto` continues from)."""
        done = complete_checkpoints(self.root) if self.root.is_dir() else []
        return done[-1].step if done else None

    def prune(self) -> list[Path]:
        """Delete all but the newest `keep` and the best-scored checkpoint; returns what went."""
        done = complete_checkpoints(self.root)
        keep = {c.path for c in done[-self.cfg.keep:]}
        scored = [c for c in done if c.meta.get("heldout_pass1") is not None]
        if self.cfg.keep_best and scored:
            keep.add(max(scored, key=lambda c: (c.meta["heldout_pass1"], c.step)).path)
        gone = [c.path for c in done if c.path not in keep]
        for path in gone:  # renamed first: a deletion cut short never leaves a "complete" half
            old = path.with_name(path.name + ".old")
            path.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        return gone


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _sync_tree(root: Path) -> None:
    """Every file under `root` on disk (the learner ranks wrote theirs without fsync)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
