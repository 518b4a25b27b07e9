"""The OREAL training loop, in the order of docs/algorithm.md's "One training step".

    rollout -> judge -> advantage + filter -> RM + policy update -> push weights -> log

Each line is one call on a role handle (actors/, verifier/, learner/), timed under its
stage's name. The driver owns the data flow; the roles own their compute.
"""
from __future__ import annotations

import logging
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from launch.config import TrainConfig
from launch.roles import Roles, policy_beside_ray

log = logging.getLogger("oreal")


@dataclass
class RunResult:
    run_dir: Path
    history: list[dict[str, float]]
    evals: list[dict[str, float]]
    model_path: str
    # summary.json's content (held-out pass@1 before/after, samples, wall time).
    summary: dict


def load_eval_benchmarks(cfg: TrainConfig) -> dict[str, list]:
    """`eval_benchmarks`' problems (the first `eval_benchmark_limit` of each), read before Ray
    starts: a missing file fails here, naming task.benchmarks_dir."""
    from launch.data.benchmarks import load_problems

    return {name: load_problems(name, cfg.task.benchmarks_dir, hub=cfg.task.hub,
                                key="eval_benchmarks")[:cfg.eval_benchmark_limit or None]
            for name in cfg.eval_benchmarks}


class RunStopped(RuntimeError):
    """The run cannot go on (a dead learner rank, engines or verifier actors dying past their
    limits); the message says where it stopped and how to resume."""


def train(cfg: TrainConfig, run_dir: Path, roles: Roles | None = None, launched_at: float | None = None) -> RunResult:
    """The run: start-up, then `cfg.steps` OREAL steps. `roles`: started ones to use (tests,
    benchmarks, ablations); `launched_at`: the process's launch (`time.time()`), from which
    `perf/startup_s` counts (else from this call)."""
    from tqdm.auto import tqdm

    from launch.state import checkpoint, report, samples_table
    from launch.evaluation.evaluate import evaluate_all
    from launch.evaluation.rm_heldout import RMHeldout
    from launch.state.metrics import RunLogger, evals_of, opened_beside, timed
    from launch.data.tasks import load_task, task_prompt
    from learner.weight_sync import check_in_sync

    start, began, startup = time.perf_counter(), time.time(), {}  # startup: wall seconds of each stage before step 1
    resume = checkpoint.find_resume(cfg, run_dir)  # a checkpoint that cannot be resumed fails before Ray starts
    with timed(startup, "load_task"):
        splits = load_task(cfg.task)  # bad data: one line before Ray starts (a bad tokenizer: before any role)
        benches = load_eval_benchmarks(cfg)  # scored with the held-out split (eval_benchmarks)
    # the warm-up learns from the split as written (a re-balanced one would change its cache
    # key, and training would start from another policy than launch.passrate measured)
    warm = load_task(cfg.task, rebalanced=False) if cfg.task.passrate_file and not roles else splits
    with timed(startup, "policy_and_ray"):
        model_path, tokenizer = policy_beside_ray(cfg, warm, startup, roles.model_path if roles else None)
    bench_problems = [p for ps in benches.values() for p in ps]
    prompt = {p.id: task_prompt(tokenizer, p.question, cfg.task) for p in splits.train + splits.heldout + bench_problems}
    heldout = splits.heldout[: cfg.eval_size or None]
    own_roles = roles is None
    with opened_beside(lambda: RunLogger(
            run_dir, asdict(cfg), cfg.wandb.mode, cfg.wandb.project, cfg.wandb.entity, cfg.wandb.name,
            list(cfg.wandb.tags), resume_step=resume.step if resume else None,
            run_id=resume.wandb_run_id if resume else None, group=cfg.wandb.group,
            job_type=cfg.wandb.job_type), startup) as opening:  # W&B starts while the roles do
        with timed(startup, "roles"):
            roles = roles or Roles(cfg, model_path, [p.answer for p in splits.train + bench_problems],
                                   run_dir=str(run_dir))
        logger = opening.result()
    startup.update(roles.startup if own_roles else {})
    # Probe for the sync check: a fixed prompt + a fixed answer text, tokenised once.
    first = splits.train[0]
    probe_ids = tokenizer(prompt[first.id] + (first.solution or first.answer))["input_ids"]
    roles.probe_ids = probe_ids
    if resume:  # the learner's saved state, and its weights in the engines before they generate
        with timed(startup, "restore"):
            state = checkpoint.restore(resume, roles, splits.train, probe_ids, cfg.learner.sync_tolerance)
        evals = evals_of(logger.history)
    else:
        with timed(startup, "probe_check"):
            check_in_sync(roles.learner, roles.rollout, probe_ids, cfg.learner.sync_tolerance, version=0)
        state = checkpoint.DriverState.start(cfg.seed, cfg.algo.rm_replay_steps,  # step, data order, RNG, RM replay
                                             cfg.algo.rm_replay_anchor_steps)
        with timed(startup, "first_eval"):
            evals = [evaluate_all(roles.rollout, roles.verifier, heldout, benches, prompt, step=0)] \
                if heldout or benches else []
    with timed(startup, "rm_heldout"):  # the token RM's fixed held-out pairs (rm_heldout_pairs.jsonl)
        rm_heldout = RMHeldout.open(cfg, roles, run_dir, splits.heldout, prompt, tokenizer)
        rm_evals = rm_heldout.metrics(roles.learner) if rm_heldout and not resume else {}
    startup = report.startup_metrics(startup, began, launched_at)  # startup/<stage>_s, perf/startup_s
    logger.log(state.step, {**(evals[-1] if evals and not resume else {}), **rm_evals, **startup})
    saver = checkpoint.Checkpointer(cfg.ckpt, run_dir, last_step=cfg.steps)
    bar = tqdm(range(state.step, cfg.steps), initial=state.step, total=cfg.steps, desc="OREAL", unit="step",
               dynamic_ncols=True)
    for step in bar:
        before = state.copy()  # what a stop before training saves: nothing of this step has trained
        queries = state.next_queries(splits.train, cfg.prompts_at(step))  # B (more in RM-only steps, if set)
        draw = partial(state.next_queries, splits.train)  # algo.dynamic_sampling's refills: the same order
        # step + 1's queries (generated ahead with max_staleness=1): the order as this step's draws leave it
        ahead = ((lambda: state.copy().next_queries(splits.train, cfg.prompts_at(step + 1)))
                 if step + 1 < cfg.steps else None)
        with _stops_cleanly(cfg, run_dir, step, saver, logger,
                            save_before=lambda: saver.save(before, roles, asdict(cfg), logger.run_id, evals)):
            metrics, groups, correct = rl_step(cfg, roles, queries, prompt, probe_ids, step, state.rng, run_dir=run_dir,
                                               next_queries=ahead, rm_replay=state.rm_replay, draw=draw,
                                               carried=state.carried)
        with _stops_cleanly(cfg, run_dir, step, saver, logger):
            if (heldout or benches) and (step + 1 == cfg.steps or (cfg.eval_every and (step + 1) % cfg.eval_every == 0)):
                evals.append(evaluate_all(roles.rollout, roles.verifier, heldout, benches, prompt, step=step + 1))
                metrics.update(evals[-1])
            if rm_heldout and rm_heldout.due(step + 1, cfg.steps):
                metrics.update(rm_heldout.metrics(roles.learner))
            logger.log(step + 1, metrics)
            samples_table.log_step(logger, cfg.wandb, run_dir, step + 1, groups,
                                   roles.learner if cfg.algo.uses_rm else None)
            state.step_done(synced="sync/bytes" in metrics)  # the engines hold version step + 1 after a sync
            if saver.due(state.step):
                saver.save(state, roles, asdict(cfg), logger.run_id, evals)
        bar.set_postfix(reward=f"{metrics['rollout/reward_mean']:+.2f}", pass_=f"{metrics['rollout/pass_rate']:.2f}",
                        loss=_loss_text(metrics))
        log.info("step %d | %s", step + 1, _line(metrics))
    if cfg.save_policy:
        with _stops_cleanly(cfg, run_dir, cfg.steps, saver, logger):
            roles.learner.save_pretrained(str(run_dir / "policy"))
    examples = _weight_examples(roles, groups, correct, tokenizer, rm_heldout) if cfg.algo.uses_rm and cfg.steps else []
    logger.finish()
    if own_roles:
        roles.shutdown()
    summary = report.summary(logger.history, evals, cfg.algo.mode, time.perf_counter() - start, startup)
    report.write(run_dir, summary)
    report.plot(run_dir, logger.history, evals, examples)
    return RunResult(run_dir=run_dir, history=logger.history, evals=evals, model_path=model_path, summary=summary)


def rl_step(cfg: TrainConfig, roles: Roles, queries, prompt: dict[str, str], probe_ids, step: int,
            rng: random.Random, run_dir: Path | None = None, next_queries=None, rm_replay=None, draw=None,
            carried=None):
    """One OREAL step (docs/algorithm.md steps 1-7): rollout, judge, advantage + filter, update, sync.

    `draw(n)`: the data order's next n queries, for algo.dynamic_sampling's refills;
    `next_queries`: step + 1's queries (max_staleness=1), or a function giving them once this
    step's draws are done; `carried` (`launch.state.carried.Carried`, rollout.partial): the queries
    with cut samples, continued this step; those still cut after it replace them.

    Every sample goes to the rollout record `<run_dir>/rollouts/step_NNNNN.jsonl` (NNNNN =
    step + 1, as logged; `launch.records`; not written when `run_dir` is None). A step whose
    grading broke (`verifier.stop_frac`) raises `VerifierAlarm` before the learner sees it."""
    from launch import records
    from launch.evaluation.evaluate import rollout_metrics
    from launch.state.metrics import timed
    from learner.rm_data import rm_step_data
    from learner.selection import select
    from learner.weight_sync import sync_weights
    from verifier import VerifierAlarm, check_verdicts
    from verifier import metrics as verdict_metrics

    # Rollout and judge, streamed: each query is graded as soon as its K samples are done
    # (generated during the last step's training with algo.max_staleness=1).
    # rollout.partial: the engines stop at the budget; queries whose samples all ended train, the rest wait
    cut = (cfg.rollout.partial_budget, cfg.rollout.partial_max_age) if cfg.rollout.partial else None
    if cut and carried is None:
        raise ValueError("rollout.partial needs the driver's carried queries: pass rl_step(carried=Carried())")
    waited = time.perf_counter()
    rolled = roles.ahead.take(step, queries, prompt, cfg.seed, roles.rollout.version, cfg.algo.max_staleness,
                              carried=carried.queries if cut else (), partial=cut)
    if cut:
        carried.queries = rolled.carried
    timings = ({"timing_s/generate": time.perf_counter() - waited, "timing_s/generate_ahead": rolled.generate_s}
               if rolled.ahead else {"timing_s/generate": rolled.generate_s, "timing_s/verify": rolled.verify_tail_s})
    if cfg.algo.dynamic_sampling:  # DAPO: more queries, streamed alike, until prompts_per_step are mixed
        with timed(timings, "refill"):
            rolled = roles.ahead.refill(rolled, step, draw, prompt, cfg.seed, cfg.prompts_at(step),
                                        cfg.algo.max_refill_rounds)
    queries, groups, verdicts, correct = rolled.queries, rolled.groups, rolled.verdicts, rolled.correct
    alarm = check_verdicts(verdicts, cfg.verifier.warn_frac, cfg.verifier.stop_frac,  # timeout + error share
                           cfg.verifier.alarm_judge_rescued_frac)  # and the judge's rescued share
    # rewards (algo.overlong; verifier.reward_fn's numbers), advantages over all K, filter
    # (refilled: the first prompts_per_step mixed queries)
    selection = select(groups, correct, cfg.algo, rng, cfg.rollout.max_new_tokens, rolled.scores,
                       cfg.prompts_at(step) if cfg.algo.dynamic_sampling else None)
    if run_dir is not None:  # the audit record: every sample, its verdict, r, A, kept or why not
        with timed(timings, "records"):
            records.write_step(run_dir, step + 1, records.step_records(
                step + 1, queries, prompt, groups, verdicts, selection, trained=alarm.level != "stop"))
    if alarm.level == "stop":  # a broken verifier never trains the policy; train() checkpoints and stops
        raise VerifierAlarm(alarm, step + 1)
    if alarm.level == "warn":
        log.warning("%s", alarm.message(step + 1))
    metrics = {**rollout_metrics(groups, correct, selection.rewards), **verdict_metrics(verdicts), **alarm.metrics,
               **selection.metrics(), "rollout/queries_drawn": float(len(groups)),
               "rollout/refill_rounds": float(rolled.refill_rounds)}
    if cut:
        from launch.state.carried import partial_metrics

        metrics.update(partial_metrics(groups, rolled.carried, rolled.partial_dropped))
    if selection.samples:  # nothing to learn from when every query was all-right or all-wrong
        if cfg.algo.max_staleness and next_queries is not None:  # step t+1 generates while step t trains
            roles.ahead.prefetch(step + 1, next_queries() if callable(next_queries) else next_queries, prompt, cfg.seed,
                                 carried=rolled.carried, partial=cut)
        # the token RM's own data (algo.rm_samples, rm_replay_steps, rm_minibatches), if not the kept pairs
        rm_batches, rm_fresh = rm_step_data(cfg.algo, rm_replay, groups, correct, selection, cfg.seed, step)
        with timed(timings, "train"):
            metrics.update(roles.learner.train_step(selection.samples, step, rm_batches, rm_fresh))
        with timed(timings, "generate_wait"):
            roles.ahead.wait()  # the engines finish step t+1 on the weights they hold, then take the new ones
        with timed(timings, "sync"):
            synced = sync_weights(roles.learner, roles.rollout, step + 1, probe_ids, cfg.learner.sync_tolerance)
        metrics["sync/max_abs_logprob_diff"] = synced.max_abs_diff
        metrics["sync/bytes"], metrics["sync/buckets"] = float(synced.bytes), float(synced.buckets)
    metrics["learner/skipped"] = float(not selection.samples)
    metrics.update(roles.take_faults())  # faults/...: what died this step and was replaced
    metrics["rollout/stale_dropped"] = float(roles.ahead.stale_dropped)  # too old to train on: generated again
    metrics.update(timings)
    gen_tokens = sum(len(r.response_ids) for g in groups for r in g)
    gen_s = timings.get("timing_s/generate_ahead", timings["timing_s/generate"]) + timings.get("timing_s/refill", 0.0)
    metrics["perf/generate_tokens_per_s"] = gen_tokens / max(1e-9, gen_s)
    metrics["perf/step_s"] = sum(v for k, v in timings.items() if k != "timing_s/generate_ahead")  # wall, no overlap
    return metrics, groups, correct


@contextmanager
def _stops_cleanly(cfg: TrainConfig, run_dir: Path, step: int, saver, logger, save_before=None):
    """What cannot go on ends the run with one line (`RunStopped`, or the `VerifierAlarm`)
    saying where to resume: a verifier alarm, engines or verifier actors dying past their
    limits (the state before the step is saved first, when `save_before` is given: nothing
    of the step has trained), or a dead learner rank (nothing of the learner can be saved:
    the last checkpoint)."""
    from actors.group import EngineFailure
    from learner.group import LearnerRankDied
    from verifier import VerifierAlarm, VerifierFailure

    try:
        yield
    except (VerifierAlarm, VerifierFailure, EngineFailure) as stop:
        saved = None
        if save_before is not None and cfg.ckpt.enabled:
            save_before()
            saved = step
        logger.finish()
        if isinstance(stop, VerifierAlarm):
            raise
        where = saved if saved is not None else saver.last_saved_step()
        raise RunStopped(f"{stop}; the run stops at step {step + 1}. {_resume_hint(cfg, run_dir, where)}") from None
    except LearnerRankDied as dead:
        logger.finish()
        raise RunStopped(f"{dead}; the run stops at step {step + 1}. "
                         f"{_resume_hint(cfg, run_dir, saver.last_saved_step())}") from None


def _resume_hint(cfg: TrainConfig, run_dir: Path, step: int | None) -> str:
    if not cfg.ckpt.enabled or step is None:
        return "No checkpoint to resume from (ckpt.enabled=false, or none written yet)."
    return f"resume from the checkpoint of step {step} with: output_dir={run_dir} ckpt.resume=auto"


def _loss_text(metrics: dict) -> str:
    """The progress bar's loss: the policy loss, or why there is none this step."""
    if "learner/loss" in metrics:
        return f"{metrics['learner/loss']:.3g}"
    return "RM only" if metrics.get("learner/policy_frozen") else "no update"


def _weight_examples(roles: Roles, groups, correct, tokenizer, rm_heldout=None) -> list[dict]:
    """The token RM's w+/w- along one correct and one incorrect response: a held-out pair whose
    incorrect response has a known first wrong token (`first_error`, marked in the plot), else
    one of each from the last step."""
    from learner.batch import TrainSample

    known = next((p for p in rm_heldout.pairs if p.first_error is not None), None) if rm_heldout else None
    if known is not None:
        samples, first_errors = [known.pos, known.neg], [None, known.first_error]
    else:
        picks = []
        for want in (True, False):
            hit = next(((r, c) for g, cs in zip(groups, correct) for r, c in zip(g, cs) if c == want and r.response_ids),
                       None)
            if hit:
                picks.append(hit)
        samples = [TrainSample(r.prompt_ids, r.response_ids, 1.0 if c else -1.0, 0.0) for r, c in picks]
        first_errors = [None] * len(samples)
    if not samples:
        return []
    weights = roles.learner.token_weights(samples)
    return [{"correct": s.positive, "tokens": [tokenizer.decode([t]) for t in s.response_ids], "w_pos": wp,
             "w_neg": wn, "first_error": k} for s, (wp, wn), k in zip(samples, weights, first_errors)]


def _line(m: dict[str, float]) -> str:
    keys = ("rollout/reward_mean", "rollout/pass_rate", "learner/loss", "learner/grad_norm",
            "reward_model/loss", "learner/kept_query_frac", "timing_s/generate", "timing_s/verify",
            "timing_s/train", "timing_s/sync", "perf/generate_tokens_per_s", "eval/pass1")
    short = {"reward_model/loss": "rm_loss", "timing_s/generate": "gen_s", "timing_s/verify": "verify_s",
             "timing_s/train": "train_s", "timing_s/sync": "sync_s", "perf/generate_tokens_per_s": "tok/s",
             "eval/pass1": "heldout_pass1"}
    return " ".join(f"{short.get(k, k.split('/', 1)[1])}={m[k]:.4g}" for k in keys if k in m)
