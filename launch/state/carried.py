"""Partial rollouts, the driver's side (`rollout.partial`; the engines' is `actors.partial`).

A step sends the engines its fresh queries and the cut samples of earlier steps' unfinished
queries; the engines stop at the step's budget. A query whose K samples have all ended is
graded and trained this step, whatever step drew it; one still holding cut samples is carried
to the next (`Carried`, saved in every checkpoint, so a resumed run continues exactly the
samples the uninterrupted one would); one carried past `rollout.partial_max_age` steps is
dropped and counted. So each sample is trained exactly once, with every token's behaviour
log-prob from the weights that sampled it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

from actors.partial import segments_of
from actors.types import Rollout
from launch.data.problem import Problem


@dataclass(frozen=True)
class CarriedQuery:
    """A query with cut samples: its K samples in order (ended and cut), and the step that drew it."""

    problem: Problem
    started: int
    samples: tuple[Rollout, ...]

    @property
    def cut(self) -> list[Rollout]:
        return [r for r in self.samples if r.cut]

    def continued(self, results: Sequence[Rollout]) -> CarriedQuery:
        """The cut samples replaced, in order, by what continuing them gave."""
        it = iter(results)
        return dataclasses.replace(self, samples=tuple(next(it) if r.cut else r for r in self.samples))

    def to_json(self) -> dict[str, Any]:
        return {"problem": dataclasses.asdict(self.problem), "started": self.started,
                "samples": [dataclasses.asdict(r) for r in self.samples]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CarriedQuery:
        def rollout(r: dict) -> Rollout:
            tuples = ("prompt_ids", "response_ids", "logprobs")
            return Rollout(**{**r, **{k: tuple(r[k]) for k in tuples},
                              "segments": tuple(tuple(s) for s in r.get("segments", ()))})
        return cls(Problem(**d["problem"]), int(d["started"]), tuple(rollout(r) for r in d["samples"]))


@dataclass
class Carried:
    """The queries carried into the next step (the driver's state, in driver.json)."""

    queries: list[CarriedQuery] = field(default_factory=list)

    def to_json(self) -> list[dict[str, Any]]:
        return [q.to_json() for q in self.queries]

    @classmethod
    def from_json(cls, d: list[dict[str, Any]]) -> Carried:
        return cls([CarriedQuery.from_json(q) for q in d])


class StepPlan:
    """One step's work under partial rollouts: its fresh `queries`, then the carried ones young
    enough to go on (`max_age`); `assemble` turns what the engines yield for item i into the
    query's full K samples once none is cut, else keeps it for `carried_out`."""

    def __init__(self, step: int, queries: Sequence[Problem], carried: Sequence[CarriedQuery], max_age: int):
        self.step = step
        kept = [c for c in carried if step - c.started <= max_age]
        self.dropped = sum(len(c.samples) for c in carried if step - c.started > max_age)
        self.fresh, self.kept = len(queries), kept
        self.problems = list(queries) + [c.problem for c in kept]
        self.prefixes: list[list[Rollout] | None] = [None] * len(queries) + [c.cut for c in kept]
        self._waiting: dict[int, CarriedQuery] = {}
        self._done: set[int] = set()

    def assemble(self, i: int, group: list[Rollout]) -> list[Rollout] | None:
        """Item i's samples if all K have ended, else None (carried)."""
        if i < self.fresh:
            query = CarriedQuery(self.problems[i], self.step, tuple(group))
        else:
            query = self.kept[i - self.fresh].continued(group)
        if query.cut:
            self._waiting[i] = query
            return None
        self._done.add(i)
        return list(query.samples)

    def completed(self) -> list[Problem]:
        """The problems whose samples all ended this step, in item order."""
        return [self.problems[i] for i in sorted(self._done)]

    def carried_out(self) -> list[CarriedQuery]:
        """The queries still holding cut samples after this step, in item order."""
        return [self._waiting[i] for i in sorted(self._waiting)]


def partial_metrics(groups: Sequence[Sequence[Rollout]], carried_out: Sequence[CarriedQuery],
                    dropped: int) -> dict[str, float]:
    """rollout/partial_carried (cut samples carried to the next step), rollout/partial_dropped
    (samples of queries carried too long, dropped this step), rollout/segments_max (the most
    segments of a sample completed this step)."""
    return {"rollout/partial_carried": float(sum(len(c.cut) for c in carried_out)),
            "rollout/partial_dropped": float(dropped),
            "rollout/segments_max": float(max((len(segments_of(r)) for g in groups for r in g), default=0))}
