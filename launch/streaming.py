"""Rollout and judge as one stream (oreal.md steps 1-2): each query's K samples go to the
verifier pool the moment its last sample finishes, so grading overlaps generation and a slow
query never holds back the grading of the others.

    engines --(query i's K samples, as each finishes)--> verifier pool --(K verdicts)--> driver

The result is in query order, as the batch calls returned it: the step's numbers do not depend
on the order of arrival (with `rollout.seeded_sampling` not even on which engine a query ran).
"""
from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class Streamed:
    groups: list  # per query: its K Rollouts
    verdicts: list  # flat, query-major: K per query
    # Seconds from the start: when query i's samples arrived, and when its verdicts did.
    generated_at: list[float] = field(default_factory=list)
    graded_at: list[float] = field(default_factory=list)

    @property
    def generate_s(self) -> float:
        return max(self.generated_at, default=0.0)

    @property
    def verify_tail_s(self) -> float:
        """Grading left after the last query finished generating (all of it, unstreamed)."""
        return max(0.0, max(self.graded_at, default=0.0) - self.generate_s)


def generate_and_grade(rollout, verifier, query_ids: Sequence[str], prompts: Sequence[str],
                       golds: Sequence[str], seed_key: Sequence[int] | None = None,
                       max_grading: int | None = None) -> Streamed:
    """Every query's K samples (`rollout.stream`) and their verdicts (`verifier.grade`, one call
    per query, `max_grading` at a time: default two per verifier actor)."""
    n = len(query_ids)
    start = time.perf_counter()
    groups: list = [None] * n
    per_query: list = [None] * n
    generated_at, graded_at = [0.0] * n, [0.0] * n
    workers = max_grading or 2 * max(1, len(getattr(verifier, "actors", ())) or 1)
    with ThreadPoolExecutor(workers, thread_name_prefix="oreal-grade") as graders:
        grading: dict[Future, int] = {}

        def collect(done) -> None:
            for f in done:
                i = grading.pop(f)
                per_query[i] = f.result()
                graded_at[i] = time.perf_counter() - start

        for i, group in rollout.stream(query_ids, prompts, seed_key=seed_key):
            groups[i] = group
            generated_at[i] = time.perf_counter() - start
            grading[graders.submit(verifier.grade, [r.response_text for r in group], [golds[i]] * len(group),
                                   [r.finished for r in group])] = i
            collect([f for f in list(grading) if f.done()])
        while grading:
            done, _ = wait(list(grading), return_when=FIRST_COMPLETED)
            collect(done)
    verdicts = [v for vs in per_query for v in vs]
    return Streamed(groups, verdicts, generated_at, graded_at)
