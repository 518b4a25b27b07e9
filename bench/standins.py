"""Stand-ins for the scheduling benchmark and tests: a rollout engine of known speed (no
model), with the real engine's methods, so the real driver, Ray actors and verifier pool run
around it. Response lengths are log-normal, as a reasoning model's are.

Partial rollouts (`actors.partial`, the contract of `RolloutEngine.generate_stream`) run on
simulated time: each sample's length is drawn when it starts (the same draw as a whole one),
it ends at its remaining tokens / `tok_per_s` after it got a decode slot, and with a budget
the call stops when the `must_end`-th sample ends; the others are cut with the tokens they
have by then. A stand-in sample's prompt ids are (1, its planned length): a continued sample,
on whichever engine, reads its length back from its prefix. Each token's log-prob is
`token_logprob(version)` of the version that sampled it (`sampled_by` reads it back).
"""
from __future__ import annotations

import heapq
import math
import os
import random
import time
from typing import Iterator, Sequence

from actors.partial import extend, must_end
from actors.types import Rollout


def token_logprob(version: int) -> float:
    """The log-prob a stand-in gives each token it samples on `version`'s weights."""
    return -(1 + version) / 100


def sampled_by(logprob: float) -> int:
    """The version that sampled a stand-in token of log-prob `logprob`."""
    return round(-100 * logprob) - 1


def planned_length(r: Rollout) -> int:
    """A stand-in sample's whole length, ended or not (its prompt ids are (1, length))."""
    return r.prompt_ids[1]


class StandInEngine:
    """All queries decode at once, one token per `1 / tok_per_s` seconds per sequence (as a
    batched engine does): query i is done when its longest sample is. Query ids are integers
    (their gold answer); a sample answers it right with probability `correct_p`.

    `max_concurrent`: at most that many sequences decode at once, the others wait for a slot
    in the call's order, first come first served as vLLM's scheduler (a real engine's batch
    and KV-cache limit): the engine's throughput is then max_concurrent x tok_per_s, not
    unbounded. None: every sequence at once (as before). `continued_first`: continued samples
    take slots before the call's fresh ones (what vLLM's priority scheduling could do)."""

    def __init__(self, cfg, model_path: str, seed: int = 0, tok_per_s: float = 500.0,
                 mean_tokens: float = 200.0, sigma: float = 0.6, correct_p: float = 0.5,
                 max_concurrent: int | None = None, continued_first: bool = False):
        self.cfg, self.seed = cfg, seed
        self.tok_per_s, self.mean_tokens, self.sigma, self.correct_p = tok_per_s, mean_tokens, sigma, correct_p
        self.max_concurrent, self.continued_first = max_concurrent, continued_first
        self.policy_version = 0

    def _lengths(self, qid: str, k: int, seeds) -> list[int]:
        rng = random.Random(f"{self.seed}/{qid}/{seeds}")
        mu = math.log(self.mean_tokens) - self.sigma ** 2 / 2
        return [max(1, min(self.cfg.max_new_tokens, int(rng.lognormvariate(mu, self.sigma)))) for _ in range(k)]

    def generate_stream(self, query_ids: Sequence[str], prompts: Sequence[str], *, n: int | None = None,
                        greedy: bool = False, seeds: Sequence[int] | None = None,
                        prefixes: Sequence[Sequence[Rollout] | None] | None = None,
                        partial_budget: float | None = None) -> Iterator[tuple[int, list]]:
        if prefixes is not None or partial_budget is not None or self.max_concurrent is not None:
            yield from self._generate_scheduled(query_ids, n, greedy, seeds, prefixes, partial_budget)
            return
        k = n or self.cfg.n_samples
        lengths = [self._lengths(q, k, None if seeds is None else seeds[i]) for i, q in enumerate(query_ids)]
        start = time.perf_counter()
        for i in sorted(range(len(query_ids)), key=lambda i: max(lengths[i])):
            time.sleep(max(0.0, start + max(lengths[i]) / self.tok_per_s - time.perf_counter()))
            rng, gold = random.Random(f"{query_ids[i]}/answers"), int(query_ids[i])
            group = [Rollout(query_ids[i], (1,), tuple(range(length)),
                             f"... \\boxed{{{gold if rng.random() < self.correct_p else gold + 1}}}", True, (),
                             self.policy_version) for length in lengths[i]]
            yield i, group

    def _generate_scheduled(self, query_ids, n, greedy, seeds, prefixes, budget) -> Iterator[tuple[int, list]]:
        """Per sample: a slot (first come, first served on `max_concurrent`), its end at its
        remaining tokens / tok_per_s later; the cut at the `must_end`-th end."""
        samples = []  # (query position, prefix or None, planned length), in the call's order
        for i, q in enumerate(query_ids):
            pre = prefixes[i] if prefixes is not None else None
            samples += ([(i, p, planned_length(p)) for p in pre] if pre else
                        [(i, None, length) for length in
                         self._lengths(q, n or self.cfg.n_samples, None if seeds is None else seeds[i])])
        done = [len(p.response_ids) if p is not None else 0 for _, p, _ in samples]
        order = sorted(range(len(samples)), key=lambda r: samples[r][1] is None) if self.continued_first \
            else range(len(samples))
        starts = [0.0] * len(samples)
        for r, t in zip(order, self._slots([samples[r][2] - done[r] for r in order])):
            starts[r] = t
        ends = [s + (length - d) / self.tok_per_s for s, (_, _, length), d in zip(starts, samples, done)]
        need = must_end(len(samples), budget)
        cut_at = sorted(ends)[need - 1] if need else 0.0
        want = self.cfg.behaviour_logprobs and not greedy

        def rollout(r: int) -> Rollout:
            i, pre, length = samples[r]
            ended = ends[r] <= cut_at
            new = length - done[r] if ended else min(length - done[r] - 1, max(0, int((cut_at - starts[r]) * self.tok_per_s)))
            gold = int(query_ids[i])
            right = random.Random(f"{query_ids[i]}/{length}/answer").random() < self.correct_p
            return extend(pre, query_id=query_ids[i], prompt_ids=(1, length), new_ids=range(done[r], done[r] + new),
                          new_text=f"... \\boxed{{{gold if right else gold + 1}}}" if ended else "",
                          new_logprobs=[token_logprob(self.policy_version)] * new if want else (),
                          finished=ended and length < self.cfg.max_new_tokens, cut=not ended,
                          version=self.policy_version)

        # a query is yielded when its last sample ends, or at the cut if one of its samples is cut
        at = [0.0] * len(query_ids)
        for r, (i, _, _) in enumerate(samples):
            at[i] = max(at[i], min(ends[r], cut_at))
        start = time.perf_counter()
        for i in sorted(range(len(query_ids)), key=lambda i: at[i]):
            time.sleep(max(0.0, start + at[i] - time.perf_counter()))
            yield i, [rollout(r) for r, s in enumerate(samples) if s[0] == i]

    def _slots(self, remaining: Sequence[int]) -> list[float]:
        """Each sample's start in simulated seconds: at once, or when one of `max_concurrent`
        decode slots frees, in the order given."""
        if self.max_concurrent is None:
            return [0.0] * len(remaining)
        free, starts = [0.0] * self.max_concurrent, []
        for left in remaining:
            s = heapq.heappop(free)
            starts.append(s)
            heapq.heappush(free, s + left / self.tok_per_s)
        return starts

    def generate(self, query_ids, prompts, **options) -> list[list]:
        out = [None] * len(query_ids)
        for i, group in self.generate_stream(query_ids, prompts, **options):
            out[i] = group
        return out

    def ready(self) -> int:
        return self.policy_version

    def set_version(self, version: int) -> None:
        """What a weight sync leaves behind: the version its samples carry."""
        self.policy_version = version

    @staticmethod
    def pid() -> int:
        return os.getpid()

    @staticmethod
    def processes():
        import ray

        return ray.get_runtime_context().get_node_id(), []


class StandInLearner:
    """Training of fixed cost (what the schedule must hide), nothing learned; keeps what it was
    given (`trained`: (step, samples))."""

    def __init__(self, seconds: float):
        self.seconds, self.trained = seconds, []

    def train_step(self, samples, step, *rm_data):
        time.sleep(self.seconds)
        self.trained.append((step, list(samples)))
        return {"learner/loss": 0.0}


class StandInRoles:
    """The roles `launch.loop.rl_step` needs, around stand-in or real engines and verifier pool."""

    def __init__(self, rollout, verifier, learner):
        from launch.streaming import Prefetcher

        self.rollout, self.verifier, self.learner = rollout, verifier, learner
        self.ahead = Prefetcher(self)

    def take_faults(self):
        return {**self.verifier.take_faults(), **self.rollout.take_faults()}


def stand_in_sync(seconds: float):
    """A `learner.weight_sync.sync_weights` of fixed cost: the stand-in engines take the new
    version (the version their samples carry)."""

    def sync(learner, rollout, version, *args, **kwargs):
        import ray

        from learner.weight_sync import SyncReport

        time.sleep(seconds)
        ray.get([a.set_version.remote(version) for a in rollout.actors])
        rollout.version = version
        return SyncReport(version, 0.0, 1, 1, seconds)

    return sync
