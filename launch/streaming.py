"""Rollout and judge as one stream (docs/algorithm.md steps 1-2): each query's K samples go to the
verifier pool the moment its last sample finishes, so grading overlaps generation and a slow
query never holds back the grading of the others.

    engines --(query i's K samples, as each finishes)--> verifier pool --(K verdicts)--> driver

The result is in query order, as the batch calls returned it: the step's numbers do not depend
on the order of arrival (with `rollout.seeded_sampling` not even on which engine a query ran).

With `algo.dynamic_sampling` a step whose queries leave too few mixed ones (some samples right,
some wrong) draws more through the same stream (`refill`, DAPO's dynamic sampling), before any
training, on the weights the engines hold.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Sequence


@dataclass
class Streamed:
    groups: list  # per query: its K Rollouts
    verdicts: list  # flat, query-major: K per query
    # Seconds from the start: when query i's samples arrived, and when its verdicts did.
    generated_at: list[float] = field(default_factory=list)
    graded_at: list[float] = field(default_factory=list)
    # Generated ahead, during the previous step's training (`Prefetcher`, max_staleness=1).
    ahead: bool = False
    # The queries (Problems) of `groups`, in order (set by `Prefetcher`).
    queries: list = field(default_factory=list)
    # time.perf_counter() at the start (the times above count from it).
    started_at: float = 0.0
    # Refill rounds that drew `queries` past the step's first prompts_per_step (`refill`).
    refill_rounds: int = 0
    # rollout.partial (launch.state.carried): the queries left with cut samples, for the next step,
    # and the samples dropped as too old; `groups` holds only queries whose samples all ended.
    carried: list = field(default_factory=list)
    partial_dropped: int = 0

    @property
    def correct(self) -> list[list[bool]]:
        """Per query, whether each of its samples was graded correct."""
        return self._per_query([v.correct for v in self.verdicts])

    @property
    def scores(self) -> list[list[float | None]] | None:
        """Per query, each sample's float reward (`verifier.reward_fn`), None where it has none;
        None when no sample has one."""
        if all(v.score is None for v in self.verdicts):
            return None
        return self._per_query([v.score for v in self.verdicts])

    def _per_query(self, flat: list) -> list[list]:
        """`flat` (one value per sample, in the verdicts' order) split by query."""
        out, i = [], 0
        for group in self.groups:
            out.append(flat[i:i + len(group)])
            i += len(group)
        return out

    @property
    def mixed(self) -> int:
        """Queries with a right and a wrong sample: those the filter keeps (learner.selection)."""
        return sum(0 < sum(row) < len(row) for row in self.correct)

    def joined(self, more: Streamed) -> Streamed:
        """This result followed by `more` (a refill round's), times counted from this start."""
        shift = more.started_at - self.started_at
        return Streamed(self.groups + more.groups, self.verdicts + more.verdicts,
                        self.generated_at + [t + shift for t in more.generated_at],
                        self.graded_at + [t + shift for t in more.graded_at], self.ahead,
                        self.queries + more.queries, self.started_at, self.refill_rounds)

    @property
    def generate_s(self) -> float:
        return max(self.generated_at, default=0.0)

    @property
    def verify_tail_s(self) -> float:
        """Grading left after the last query finished generating (all of it, unstreamed)."""
        return max(0.0, max(self.graded_at, default=0.0) - self.generate_s)


def generate_and_grade(rollout, verifier, query_ids: Sequence[str], prompts: Sequence[str],
                       golds: Sequence[str], seed_key: Sequence[int] | None = None,
                       max_grading: int | None = None, questions: Sequence[str] | None = None,
                       n: int | None = None, partial=None) -> Streamed:
    """Every query's K samples (`rollout.stream`; `n` of them if given) and their verdicts
    (`verifier.grade`, one call per query, `max_grading` at a time: default two per verifier
    actor). `questions`: each query's problem text, graded in the symbol domain it states
    (verifier.domain_from_problem). `partial`: (`launch.state.carried.StepPlan`, budget): carried
    samples continued, the step cut at the budget, and only queries whose samples all ended
    graded and returned."""
    queries = len(query_ids)
    start = time.perf_counter()
    groups: list = [None] * queries
    per_query: list = [None] * queries
    generated_at, graded_at = [0.0] * queries, [0.0] * queries
    workers = max_grading or 2 * max(1, len(getattr(verifier, "actors", ())) or 1)
    with ThreadPoolExecutor(workers, thread_name_prefix="oreal-grade") as graders:
        grading: dict[Future, int] = {}

        def collect(done) -> None:
            for f in done:
                i = grading.pop(f)
                per_query[i] = f.result()
                graded_at[i] = time.perf_counter() - start

        more = {} if n is None else {"n": n}  # rollout.n_samples unless asked for
        if partial is not None:
            more.update(prefixes=partial[0].prefixes, partial_budget=partial[1])
        for i, group in rollout.stream(query_ids, prompts, seed_key=seed_key, **more):
            if partial is not None and (group := partial[0].assemble(i, group)) is None:
                continue  # a cut sample left: carried to the next step
            groups[i] = group
            generated_at[i] = time.perf_counter() - start
            extra = {} if questions is None else {"questions": [questions[i]] * len(group)}
            grading[graders.submit(verifier.grade, [r.response_text for r in group], [golds[i]] * len(group),
                                   [r.finished for r in group], **extra)] = i
            collect([f for f in list(grading) if f.done()])
        while grading:
            done, _ = wait(list(grading), return_when=FIRST_COMPLETED)
            collect(done)
    done = [i for i in range(queries) if groups[i] is not None]
    verdicts = [v for i in done for v in per_query[i]]
    return Streamed([groups[i] for i in done], verdicts, [generated_at[i] for i in done],
                    [graded_at[i] for i in done], started_at=start)


def refill_size(target: int, mixed: int, drawn: int) -> int:
    """Queries a refill round draws: the missing mixed ones divided by the step's mixed share so
    far (one round then usually fills the batch; DAPO and verl draw a whole batch each round),
    at most `target`; `target` when none was mixed yet.

    >>> refill_size(32, 24, 32), refill_size(32, 8, 32), refill_size(32, 0, 32)
    (11, 32, 32)
    """
    if mixed == 0:
        return target
    return min(target, math.ceil((target - mixed) * drawn / mixed))


def refill(first: Streamed, target: int, max_rounds: int, draw: Callable[[int], list],
           run: Callable[[list, int], Streamed]) -> Streamed:
    """`first` followed by refill rounds (algo.dynamic_sampling) until `target` of its queries
    are mixed or `max_rounds` rounds ran: round r draws `refill_size` more queries (`draw(n)`:
    the data order's next n, so a resumed run draws the same) and generates and grades them
    (`run(queries, r)`). The result keeps every query in the order drawn; the filter trains on
    the first `target` mixed ones (`learner.selection.select`'s `max_queries`)."""
    out = first
    for round_ in range(1, max_rounds + 1):
        if out.mixed >= target:
            break
        out = out.joined(run(draw(refill_size(target, out.mixed, len(out.groups))), round_))
        out.refill_rounds = round_
    return out


class Prefetcher:
    """Each step's graded rollouts: generated when the step asks for them (on-policy,
    `algo.max_staleness=0`), or, with `max_staleness=1`, generated for step t+1 while the
    learner trains step t, on the weights of before that update: one step off-policy, the
    engines busy while the learner trains (as verl's and OpenRLHF's async modes). `wait`
    before a weight sync: the engines must finish the step ahead on the weights they hold.
    Reads `roles.rollout` / `roles.verifier` at each call (a test may swap a role)."""

    def __init__(self, roles):
        self.roles = roles
        self._ahead: tuple[int, list[str], Future] | None = None  # (step, query ids, result)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="oreal-ahead")
        self.stale_dropped = 0  # at the last take: prefetched samples too old to train on, generated again

    def take(self, step: int, queries, prompt: dict[str, str], seed: int, version: int = 0,
             max_staleness: int = 0, carried: Sequence = (), partial: tuple[float, int] | None = None) -> Streamed:
        """Step `step`'s rollouts: the prefetched ones if they are this step's queries and no
        sample is more than `max_staleness` versions older than `version` (the learner's;
        a carried sample's older segments are rollout.partial_max_age's to bound), else
        generated now. `partial` (rollout.partial's budget and max age; None: off) with
        `carried`, the queries carried into this step (launch.state.carried)."""
        from actors.partial import newest_version

        ids = [q.id for q in queries]
        self.stale_dropped = 0
        if self._ahead is not None:
            ahead_step, ahead_ids, future = self._ahead
            self._ahead = None
            result = future.result()
            # the version each query was last sampled on (a carried query's samples that ended
            # in earlier steps are older, by design: rollout.partial_max_age bounds them)
            oldest = min((max(newest_version(r) for r in g) for g in result.groups), default=version)
            if (ahead_step, ahead_ids) == (step, ids) and version - oldest <= max_staleness:
                result.ahead = True
                return result
            if (ahead_step, ahead_ids) == (step, ids):
                self.stale_dropped = sum(len(g) for g in result.groups)
        return self._run(step, ids, queries, prompt, seed, carried=carried, partial=partial)

    def prefetch(self, step: int, queries, prompt: dict[str, str], seed: int, carried: Sequence = (),
                 partial: tuple[float, int] | None = None) -> None:
        """Start step `step`'s rollouts now, on the weights the engines hold."""
        self.wait()
        ids = [q.id for q in queries]
        self._ahead = (step, ids, self._pool.submit(self._run, step, ids, queries, prompt, seed, carried=carried,
                                                    partial=partial))

    def wait(self) -> None:
        """Block until the rollouts ahead, if any, are done (their errors surface in `take`)."""
        if self._ahead is not None:
            wait([self._ahead[2]])

    def refill(self, first: Streamed, step: int, draw: Callable[[int], list], prompt: dict[str, str], seed: int,
               target: int, max_rounds: int) -> Streamed:
        """algo.dynamic_sampling: `first` (the step's rollouts) refilled (`refill`), now, in this
        thread, on the weights the engines hold: before the step trains, so before anything is
        generated ahead for the next step. Round r samples with seeds of (seed, step, r)."""
        return refill(first, target, max_rounds, draw,
                      lambda queries, r: self._run(step, [q.id for q in queries], queries, prompt, seed, r))

    def _run(self, step: int, ids: list[str], queries, prompt: dict[str, str], seed: int,
             round_: int = 0, carried: Sequence = (), partial: tuple[float, int] | None = None) -> Streamed:
        """Generate and grade `queries` (`partial`: and the `carried` ones, cut at the budget)."""
        plan = None
        if partial is not None:
            from launch.state.carried import StepPlan

            plan = StepPlan(step, queries, carried, max_age=partial[1])
            queries, ids = plan.problems, [q.id for q in plan.problems]
        out = generate_and_grade(self.roles.rollout, self.roles.verifier, ids, [prompt[i] for i in ids],
                                 [q.answer for q in queries], seed_key=(seed, step, round_) if round_ else (seed, step),
                                 questions=[q.question for q in queries],
                                 partial=None if plan is None else (plan, partial[0]))
        if plan is None:
            out.queries = list(queries)
            return out
        out.queries = plan.completed()  # in item order, as `out.groups`
        out.carried, out.partial_dropped = plan.carried_out(), plan.dropped
        return out
