"""What the token RM trains on each step: its samples, a replay buffer of recent steps, and
the shuffled mini-batches of each pass (``algo.rm_samples``, ``rm_replay_steps``,
``rm_epochs``, ``rm_minibatches``).

The paper trains the RM once per step on the kept pair of each mixed query: on a small task
that is a handful of pairs, each seen once, too little for the RM to leave chance
(``docs/algorithm.md``, "The token RM's supervision"). These switches give it more of the
same outcome supervision; the paper's behaviour is their default. Torch-free.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

from learner.batch import TrainSample


def rm_samples_of(groups: Sequence[Sequence[Any]], correct: Sequence[Sequence[bool]], kept: Sequence[TrainSample],
                  rewards: Sequence[Sequence[float]], advantages: Sequence[Sequence[float]],
                  how: str = "pair", usable: Sequence[Sequence[bool]] | None = None) -> list[TrainSample]:
    """This step's RM samples. ``"pair"``: ``kept`` (the policy's kept pairs, weight 1 each).
    ``"all"``: every sample with a response of each mixed query (one correct and one incorrect
    at least), weighted ``1 / n_pos`` (correct) or ``1 / n_neg`` (incorrect) over the query's
    samples with a response, so a query weighs 1 per class as its pair does.

    ``groups[q][i]`` has ``prompt_ids`` and ``response_ids`` (a rollout); ``rewards``,
    ``advantages`` are the selection's ``[B][K]``; ``usable`` (the selection's, ``[B][K]``)
    leaves out the samples that do not count (``algo.overlong=filter``: the truncated ones).
    Each sample keeps its verdict (``correct``): the RM's label.

    >>> from types import SimpleNamespace as R
    >>> g = [[R(prompt_ids=(1,), response_ids=(2,)) for _ in range(4)]]
    >>> [s.rm_weight for s in rm_samples_of(g, [[True, False, False, False]], [], [[1, -1, -1, -1]], [[0] * 4], "all")]
    [1.0, 0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
    """
    if how == "pair":
        return [TrainSample(s.prompt_ids, s.response_ids, s.reward, s.advantage, correct=s.correct) for s in kept]
    if how != "all":
        raise ValueError(f"algo.rm_samples must be 'pair' or 'all', got {how!r}")
    out: list[TrainSample] = []
    for q, (group, c, r, a) in enumerate(zip(groups, correct, rewards, advantages)):
        idx = [i for i in range(len(group)) if group[i].response_ids and (usable is None or usable[q][i])]
        n_pos = sum(1 for i in idx if c[i])
        n_neg = len(idx) - n_pos
        if not n_pos or not n_neg:
            continue  # no contrast in this query: nothing the RM can tell apart
        out += [TrainSample(tuple(group[i].prompt_ids), tuple(group[i].response_ids), r[i], a[i],
                            rm_weight=1.0 / (n_pos if c[i] else n_neg), correct=bool(c[i])) for i in idx]
    return out


@dataclass
class RMReplay:
    """The RM samples of the last ``steps`` RL steps (``algo.rm_replay_steps``), oldest
    first, after those of the run's first ``anchor_steps`` steps (``algo.rm_replay_anchor_steps``),
    which stay for the whole run; the driver keeps it and checkpoints it (``to_json`` /
    ``from_json``)."""

    steps: int = 1
    buffer: deque = field(default_factory=deque)
    anchor_steps: int = 0
    anchor: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"algo.rm_replay_steps must be >= 1, got {self.steps}")
        if self.anchor_steps < 0:
            raise ValueError(f"algo.rm_replay_anchor_steps must be >= 0, got {self.anchor_steps}")
        self.buffer = deque(self.buffer, maxlen=self.steps)

    def add(self, samples: Sequence[TrainSample]) -> None:
        """This step's samples: into the anchor while it has fewer than ``anchor_steps`` steps,
        else into the recent buffer, whose oldest step falls out once ``steps`` are held."""
        if len(self.anchor) < self.anchor_steps:
            self.anchor.append(list(samples))
        else:
            self.buffer.append(list(samples))

    def samples(self) -> list[TrainSample]:
        return [s for step in [*self.anchor, *self.buffer] for s in step]

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "buffer": [[_sample_json(s) for s in step] for step in self.buffer],
                "anchor_steps": self.anchor_steps, "anchor": [[_sample_json(s) for s in step] for step in self.anchor]}

    @classmethod
    def from_json(cls, d: dict[str, Any], steps: int | None = None) -> "RMReplay":
        """Back from ``to_json``; ``steps`` (the run's ``algo.rm_replay_steps``) keeps the newest
        that many when it differs from the saved size."""
        def load(steps_json):
            return [[TrainSample(tuple(s["prompt_ids"]), tuple(s["response_ids"]), s["reward"], s["advantage"],
                                 rm_weight=s["rm_weight"], correct=s.get("correct")) for s in step]
                    for step in steps_json]

        buffer = load(d["buffer"])
        n = steps or d["steps"]
        return cls(n, deque(buffer[-n:]), d.get("anchor_steps", 0), load(d.get("anchor", [])))  # older: no anchor


def _sample_json(s: TrainSample) -> dict[str, Any]:
    return {"prompt_ids": list(s.prompt_ids), "response_ids": list(s.response_ids), "reward": s.reward,
            "advantage": s.advantage, "rm_weight": s.rm_weight, "correct": s.correct}


def rm_minibatches(samples: Sequence[TrainSample], epochs: int, minibatches: int,
                   rng: random.Random) -> list[list[TrainSample]]:
    """The RM's updates of one RL step, in order: ``epochs`` passes over ``samples``, each
    shuffled by ``rng`` and cut into ``minibatches`` near-equal mini-batches (fewer when there
    are fewer samples), one optimiser step each.

    >>> [len(mb) for mb in rm_minibatches(list(range(10)), 2, 3, random.Random(0))]
    [4, 3, 3, 4, 3, 3]
    """
    out: list[list[TrainSample]] = []
    n = min(minibatches, len(samples))
    for _ in range(epochs if samples else 0):
        order = list(samples)
        rng.shuffle(order)
        size, extra = divmod(len(order), n)
        start = 0
        for k in range(n):
            end = start + size + (1 if k < extra else 0)
            out.append(order[start:end])
            start = end
    return out


def rm_step_data(algo, replay: RMReplay | None, groups, correct, selection, seed: int,
                 step: int) -> tuple[list[list[TrainSample]] | None, list[TrainSample]]:
    """The token RM's mini-batches for this step and its own fresh samples, when it trains on
    data of its own (``algo.rm_own_data``): this step's RM samples join ``replay``, then
    ``rm_minibatches`` over the buffer, shuffled by a generator seeded by (seed, step) so a
    resumed run shuffles alike. ``(None, [])``: the RM trains on the policy's kept pairs."""
    if not (algo.uses_rm and algo.rm_own_data):
        return None, []
    # a query the batch left out (a surplus of algo.dynamic_sampling's refills) trains neither model
    rows = [i for i, why in enumerate(selection.why or [()] * len(groups)) if "surplus" not in why]
    usable = selection.usable or [[True] * len(g) for g in groups]
    fresh = rm_samples_of([groups[i] for i in rows], [correct[i] for i in rows], selection.samples,
                          [selection.rewards[i] for i in rows], [selection.advantages[i] for i in rows],
                          algo.rm_samples, usable=[usable[i] for i in rows])
    replay = replay if replay is not None else RMReplay(algo.rm_replay_steps, anchor_steps=algo.rm_replay_anchor_steps)
    replay.add(fresh)
    batches = rm_minibatches(replay.samples(), algo.rm_epochs_at(step), algo.rm_minibatches,
                             random.Random(f"rm-{seed}-{step}"))
    return batches, fresh
