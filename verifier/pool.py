"""`VerifierPool`: the Ray actor pool the driver grades through.

    pool = VerifierPool(VerifierConfig(num_workers=2))   # ray.init() done by the caller
    pool.self_check(train_golds)                          # ValueError if too many fail
    verdicts = pool.grade(completions, golds, finished)   # same order, one per input
    # or pool.grade(completions, golds, finished, questions): each sample's problem text too,
    # graded in the symbol domain it states (verifier.domain)
    log(pool.metrics(verdicts)); pool.shutdown()

Each `GradeActor` owns one `GradingWorker` (a grading subprocess with a hard per-sample
deadline). The pool cuts a batch into chunks and feeds them to actors as they free up. If
an actor itself dies, it is replaced and its chunk is resent (`verifier.max_chunk_resends`
times); a chunk that still gets no answer comes back as `error` verdicts, so every input
always gets exactly one verdict. Past `verifier.max_actor_restarts` replacements in one run
the pool raises `VerifierFailure`. Every fault is counted (`take_faults`: faults/...).
"""
from __future__ import annotations

import os
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence

import ray

from verifier.config import VerifierConfig
from verifier.extract import gold_answer
from verifier.metrics import metrics as _metrics
from verifier.self_check import self_check as _self_check
from verifier.verdict import Verdict
from verifier.worker import GradingWorker, Job

_INFLIGHT_PER_ACTOR = 2  # chunks queued per actor, so an actor never waits on the driver


class VerifierFailure(RuntimeError):
    """Verifier actors keep dying: more replacements than `verifier.max_actor_restarts`."""


class GradeActor:
    """Ray actor body: one grading subprocess, plus the optional LLM judge."""

    def __init__(self, cfg: VerifierConfig, target: str | None = None) -> None:
        self.cfg = cfg
        self.worker = GradingWorker(cfg, target)  # target None: the math rules or verifier.reward_fn
        self.worker.start()
        self.judge = None
        if cfg.judge_url:
            from verifier.judge import LLMJudge

            self.judge = LLMJudge(cfg.judge_url, cfg.judge_model, cfg.judge_timeout_s,
                                  cfg.judge_max_concurrency, cfg.judge_max_answer_chars,
                                  cfg.judge_max_retries)
        self._crashes_reported = 0

    def grade_chunk(self, jobs: list[Job]) -> tuple[list[Verdict], int]:
        """The chunk's verdicts, and how many grading processes died since the last chunk."""
        verdicts = self.worker.grade_many(jobs)
        if self.judge is not None:
            verdicts = self.judge.rescue(verdicts, [gold_answer(job[1]) for job in jobs])
        crashes, self._crashes_reported = self.worker.crashes - self._crashes_reported, self.worker.crashes
        return verdicts, crashes

    def pids(self) -> dict[str, int | None]:
        return {"actor": os.getpid(), "grader": self.worker.pid}

    def restarts(self) -> int:
        return self.worker.restarts

    def shutdown(self) -> None:
        self.worker.shutdown()


class VerifierPool:
    """`num_workers` GradeActors; `grade` returns verdicts in input order."""

    def __init__(self, cfg: VerifierConfig, target: str | None = None) -> None:
        self.cfg = cfg
        self._target = target
        if cfg.judge_url:  # an unreachable judge fails here, in one line, not step by step
            from verifier.judge import LLMJudge

            LLMJudge(cfg.judge_url, cfg.judge_model, cfg.judge_timeout_s, 1).check()
        self._actor_cls = ray.remote(GradeActor)
        self.actors = [self._new_actor() for _ in range(cfg.num_workers)]
        self._faults: Counter[str] = Counter()  # since the last take_faults()
        self._actor_restarts = 0  # this run
        self._lock = threading.Lock()  # grade() may run in several threads (launch.streaming)
        # Chunks in flight per actor over all grade() calls: a call with one chunk (one query's
        # K samples) goes to the least loaded actor, not always to the first.
        self._load = [0] * cfg.num_workers
        ray.get([a.pids.remote() for a in self.actors])  # surface start-up failures now

    def _new_actor(self):
        return self._actor_cls.options(num_cpus=self.cfg.actor_num_cpus, max_restarts=0).remote(
            self.cfg, self._target)

    # ---------------------------------------------------------------- grading
    def grade(self, completions: Sequence[str], golds: Sequence[str],
              finished: Sequence[bool] | None = None,
              questions: Sequence[str | None] | None = None) -> list[Verdict]:
        """Grade pairs concurrently; `finished[i]` False means truncated (no stop token).
        `questions[i]` (optional): sample i's problem text, whose stated symbol domain ("x is a
        positive real number") it is graded in (verifier.domain_from_problem)."""
        n = len(completions)
        finished = [True] * n if finished is None else list(finished)
        if not (len(golds) == n == len(finished)) or (questions is not None and len(questions) != n):
            raise ValueError(f"lengths differ: completions={n}, golds={len(golds)}, finished={len(finished)}"
                             + ("" if questions is None else f", questions={len(questions)}"))
        cap = self.cfg.max_completion_chars  # grade() keeps only this tail: send no more
        jobs: list[Job] = [(str(c)[-cap:], str(g), bool(f)) for c, g, f in zip(completions, golds, finished)]
        if questions is not None and (self.cfg.domain_from_problem or self.cfg.reward_fn):
            jobs = [(*job, None if q is None else str(q)) for job, q in zip(jobs, questions)]
        size = self.cfg.chunk_size
        todo = deque((s, 0) for s in range(0, n, size))  # (chunk start, attempt)
        results: list[Verdict | None] = [None] * n
        inflight: dict = {}  # ref -> (actor index, actor, chunk start, attempt, submit time)

        def submit(k: int) -> None:
            start, attempt = todo.popleft()
            actor = self.actors[k]
            ref = actor.grade_chunk.remote(jobs[start:start + size])
            inflight[ref] = (k, actor, start, attempt, time.monotonic())
            self._queued(k, +1)

        def fill() -> None:  # keep _INFLIGHT_PER_ACTOR chunks queued on every actor, least loaded first
            for _ in range(_INFLIGHT_PER_ACTOR):
                for k in sorted(range(len(self.actors)), key=lambda k: self._load[k]):
                    busy = sum(1 for v in inflight.values() if v[0] == k)
                    if todo and busy < _INFLIGHT_PER_ACTOR:
                        submit(k)

        fill()
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            if not ready:
                self._reap_stuck(inflight, todo, results, len(jobs))
            for ref in ready:
                k, actor, start, attempt, _ = inflight.pop(ref)
                self._queued(k, -1)
                try:
                    results[start:start + size], crashes = ray.get(ref)
                    self._count("verifier_worker_restarts", crashes)
                except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
                    self._on_failure(k, actor, start, attempt, e, todo, results, len(jobs))
            fill()
        return results  # type: ignore[return-value]

    def _chunk_deadline_s(self) -> float:
        judge = self.cfg.judge_timeout_s if self.cfg.judge_url else 0.0
        per_chunk = self.cfg.chunk_size * (self.cfg.timeout_s + 1.0) + judge
        return _INFLIGHT_PER_ACTOR * per_chunk + 120.0

    def _on_failure(self, k, actor, start, attempt, err, todo, results, n) -> None:
        """Replace a dead actor (once) and resend its chunk (max_chunk_resends); then `error`."""
        with self._lock:  # another grade() call may have replaced it already
            if self.actors[k] is actor:
                self._replace_actor(k, err)
        end = min(start + self.cfg.chunk_size, n)
        if attempt < self.cfg.max_chunk_resends:
            todo.appendleft((start, attempt + 1))
            self._count("regraded_samples", end - start)
            return
        results[start:end] = [Verdict.failed("error", f"verifier actor failed {attempt + 1} times: "
                                             f"{type(err).__name__}") for _ in range(start, end)]

    def _reap_stuck(self, inflight, todo, results, n) -> None:
        """An actor past any reasonable bound is killed; its chunks are handled as failed."""
        now = time.monotonic()
        stuck = {v[0] for v in inflight.values() if now - v[4] > self._chunk_deadline_s()}
        for ref, (k, actor, start, attempt, _) in list(inflight.items()):
            if k in stuck:
                inflight.pop(ref)
                self._queued(k, -1)
                self._on_failure(k, actor, start, attempt, TimeoutError("actor unresponsive"),
                                 todo, results, n)

    def _replace_actor(self, k: int, err: BaseException) -> None:
        self._actor_restarts += 1
        if self._actor_restarts > self.cfg.max_actor_restarts:
            raise VerifierFailure(f"{self._actor_restarts} verifier actors died or hung in this run, more than "
                                  f"verifier.max_actor_restarts={self.cfg.max_actor_restarts} (last: "
                                  f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
        try:
            ray.kill(self.actors[k])
        except Exception:
            pass
        self.actors[k] = self._new_actor()
        self._faults["verifier_actor_restarts"] += 1

    def _queued(self, k: int, n: int) -> None:
        with self._lock:
            self._load[k] += n

    def _count(self, fault: str, n: int) -> None:
        with self._lock:
            self._faults[fault] += n

    def take_faults(self) -> dict[str, float]:
        """Faults since the last call, as metrics: dead grading processes and actors replaced,
        samples graded again (every key present, zeros included, so the curves are whole)."""
        keys = ("verifier_worker_restarts", "verifier_actor_restarts", "regraded_samples")
        with self._lock:
            out = {f"faults/{k}": float(self._faults[k]) for k in keys}
            self._faults.clear()
        return out

    # ---------------------------------------------------------------- the rest
    def self_check(self, golds: Sequence[str]) -> None:
        """Refuse to train on golds the verifier cannot grade (see verifier.self_check). The
        check is of the math rules (each gold in a `\\boxed{}` must grade correct): with
        `verifier.reward_fn` it is skipped, as what a right answer looks like is the function's."""
        if self.cfg.reward_fn:
            return
        _self_check(golds, self.grade, self.cfg.self_check_max_fail_frac)

    @staticmethod
    def metrics(verdicts: Sequence[Verdict]) -> dict[str, float]:
        return _metrics(verdicts)

    def pids(self) -> list[dict[str, int | None]]:
        return ray.get([a.pids.remote() for a in self.actors])

    def shutdown(self) -> None:
        try:
            ray.get([a.shutdown.remote() for a in self.actors], timeout=10)
        except Exception:
            pass
        for a in self.actors:
            ray.kill(a)
        self.actors = []
