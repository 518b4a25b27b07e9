"""The token RM's held-out instruments: does it tell right from wrong on responses it never
trained on, and does its score drop where a response first goes wrong?

A fixed set of at least `algo.rm_eval_pairs` (correct, incorrect) pairs is sampled once, from
the starting policy, on held-out problems (16 samples each at the rollout's temperature;
disjoint pairs of each mixed problem), and written to `<run folder>/rm_heldout_pairs.jsonl`, which a resumed run
reads back. Every `algo.rm_eval_every` steps (and at step 0) the learner scores them:

    reward_model/heldout_pair_accuracy   the correct response's sequence score wbar_n above the incorrect one's
                                         (a tie counts half)
    reward_model/heldout_bce             mean BCE of wbar_n against the label (ln 2 = 0.693 at chance)
    reward_model/first_error_hit         share of incorrect responses with a known first wrong token whose
                                         largest one-position drop in token score is within one token of it
    reward_model/first_error_chance      the same share for a drop at a uniformly random position

The first wrong token is known where the task can say it (`launch.data.first_error`: the
arithmetic task); elsewhere the two first-error metrics are left out.
"""
from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from learner.batch import TrainSample

log = logging.getLogger("oreal")

PAIRS_FILE = "rm_heldout_pairs.jsonl"


@dataclass(frozen=True)
class HeldoutPair:
    problem_id: str
    pos: TrainSample
    neg: TrainSample
    # Index of the incorrect response's first wrong token (None: not known for this task/response).
    first_error: int | None = None

    def to_json(self) -> dict:
        return {"problem_id": self.problem_id, "prompt_ids": list(self.pos.prompt_ids),
                "pos": list(self.pos.response_ids), "neg": list(self.neg.response_ids), "first_error": self.first_error}

    @classmethod
    def from_json(cls, d: dict) -> "HeldoutPair":
        prompt = tuple(d["prompt_ids"])
        return cls(d["problem_id"], TrainSample(prompt, tuple(d["pos"]), 1.0, 0.0),
                   TrainSample(prompt, tuple(d["neg"]), -1.0, 0.0), d.get("first_error"))


def pairs_of(problem, prompt_ids: Sequence[int], responses: Sequence[Sequence[int]], correct: Sequence[bool],
             rng: random.Random, first_error=None) -> list[HeldoutPair]:
    """Disjoint (correct, incorrect) pairs of one problem's samples: as many as its smaller
    class has, partners drawn at random. `first_error(response_ids) -> int | None` finds an
    incorrect response's first wrong token."""
    pos = [tuple(r) for r, c in zip(responses, correct) if c and r]
    neg = [tuple(r) for r, c in zip(responses, correct) if not c and r]
    rng.shuffle(pos)
    rng.shuffle(neg)
    prompt = tuple(prompt_ids)
    return [HeldoutPair(problem.id, TrainSample(prompt, p, 1.0, 0.0), TrainSample(prompt, n, -1.0, 0.0),
                        first_error(n) if first_error else None) for p, n in zip(pos, neg)]


# Samples per held-out problem: the paper's K. Small tasks' errors are systematic (a problem is
# mostly right or mostly wrong), so more samples find more of the mixed problems pairs come from.
SAMPLES_PER_PROBLEM = 16


def sample_pairs(rollout, verifier, problems: Sequence, prompt: dict[str, str], want: int, seed: int,
                 first_error=None, chunk: int = 64, n: int = SAMPLES_PER_PROBLEM) -> list[HeldoutPair]:
    """At least `want` pairs from `problems` in order (fewer if they run out, with a warning),
    sampled by the engines as a rollout is (`n` samples each, the rollout's temperature and top-p)."""
    from launch.streaming import generate_and_grade

    rng = random.Random(f"rm-heldout-{seed}")
    pairs: list[HeldoutPair] = []
    for start in range(0, len(problems), chunk):
        if len(pairs) >= want:
            break
        part = problems[start:start + chunk]
        got = generate_and_grade(rollout, verifier, [p.id for p in part], [prompt[p.id] for p in part],
                                 [p.answer for p in part], seed_key=(seed, -1 - start // chunk),
                                 questions=[p.question for p in part], n=n)
        K = len(got.groups[0])
        for i, (p, group) in enumerate(zip(part, got.groups)):
            verdicts = got.verdicts[i * K:(i + 1) * K]
            find = (lambda ids, q=p.question: first_error(q, ids)) if first_error else None
            pairs += pairs_of(p, group[0].prompt_ids, [r.response_ids for r in group], [v.correct for v in verdicts],
                              rng, find)
    if len(pairs) < want:
        log.warning("the token RM's held-out set has %d pairs (algo.rm_eval_pairs=%d): the %d held-out problems "
                    "had too few mixed ones; raise task.num_heldout for a less noisy figure", len(pairs), want,
                    len(problems))
    return pairs


def load_or_sample(run_dir: Path, sample) -> list[HeldoutPair]:
    """The run's pairs: read from `run_dir/rm_heldout_pairs.jsonl` when there (a resumed run),
    else `sample()`d and written there."""
    path = Path(run_dir) / PAIRS_FILE
    if path.is_file():
        return [HeldoutPair.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    pairs = sample()
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(p.to_json()) + "\n" for p in pairs))
    tmp.replace(path)
    return pairs


def heldout_metrics(pairs: Sequence[HeldoutPair], scores: Sequence[Sequence[float]],
                    rm_score: str = "prefix_mean") -> dict[str, float]:
    """The metrics above from the RM's raw position scores (`LearnerGroup.rm_position_scores`
    of `[pair.pos, pair.neg, ...]`: n + 1 values per response of n tokens). A response's
    token scores are the first n (`rm_score` prefix_mean: read where each token is predicted)
    or the last n (`token`: at the token's own position); wbar_n is their mean."""
    import torch

    from reward_model.instruments import first_error_hit, first_error_rates

    if not pairs:
        return {}
    wbar = [_mean(s[:-1] if rm_score == "prefix_mean" else s[1:]) for s in scores]
    right = [1.0 if wbar[2 * i] > wbar[2 * i + 1] else 0.5 if wbar[2 * i] == wbar[2 * i + 1] else 0.0
             for i in range(len(pairs))]  # a tie (the zero head's) counts half: chance is 0.5
    bce = [_bce(x, 1.0 - (j % 2)) for j, x in enumerate(wbar)]
    out = {"reward_model/heldout_pair_accuracy": sum(right) / len(right),
           "reward_model/heldout_bce": sum(bce) / len(bce),
           "reward_model/heldout_pairs": float(len(pairs))}
    hits = [first_error_hit(torch.tensor(scores[2 * i + 1]), p.first_error)
            for i, p in enumerate(pairs) if p.first_error is not None]
    out.update(first_error_rates(hits))
    return out


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / max(1, len(xs))


def _bce(logit: float, label: float) -> float:
    """BCE with logits, stable: log(1 + e^x) - label * x."""
    return max(logit, 0.0) + math.log1p(math.exp(-abs(logit))) - label * logit


class RMHeldout:
    """The run's held-out RM set and when to score it (`algo.rm_eval_every`; `open` gives
    None when the run has no token RM, the instruments are off, or there is no held-out split)."""

    def __init__(self, pairs: list[HeldoutPair], every: int, rm_score: str):
        self.pairs, self.every, self.rm_score = pairs, every, rm_score
        self.samples = [s for p in pairs for s in (p.pos, p.neg)]

    @classmethod
    def open(cls, cfg, roles, run_dir: Path, problems: Sequence, prompt: dict[str, str], tokenizer) -> "RMHeldout | None":
        algo = cfg.algo
        if not (algo.uses_rm and algo.rm_eval_every and problems):
            return None
        first_error = None
        if cfg.task.name == "arith":
            from launch.data.first_error import first_error_token

            def first_error(question, ids):
                return first_error_token(tokenizer, question, ids)
        pairs = load_or_sample(run_dir, lambda: sample_pairs(roles.rollout, roles.verifier, problems, prompt,
                                                             algo.rm_eval_pairs, cfg.seed, first_error))
        return cls(pairs, algo.rm_eval_every, algo.rm_score) if pairs else None

    def due(self, step: int, last: int) -> bool:
        """Scored after step `step` (0 = before training): every `every` steps and the last."""
        return step == 0 or step == last or step % self.every == 0

    def metrics(self, learner) -> dict[str, float]:
        return heldout_metrics(self.pairs, learner.rm_position_scores(self.samples), self.rm_score)
