"""Stand-ins for the scheduling benchmark and tests: a rollout engine of known speed (no
model), with the real engine's methods, so the real driver, Ray actors and verifier pool run
around it. Response lengths are log-normal, as a reasoning model's are."""
from __future__ import annotations

import math
import os
import random
import time
from typing import Iterator, Sequence

from actors.types import Rollout


class StandInEngine:
    """All queries decode at once, one token per `1 / tok_per_s` seconds per sequence (as a
    batched engine does): query i is done when its longest sample is. Query ids are integers
    (their gold answer); a sample answers it right with probability `correct_p`."""

    def __init__(self, cfg, model_path: str, seed: int = 0, tok_per_s: float = 500.0,
                 mean_tokens: float = 200.0, sigma: float = 0.6, correct_p: float = 0.5):
        self.cfg, self.seed = cfg, seed
        self.tok_per_s, self.mean_tokens, self.sigma, self.correct_p = tok_per_s, mean_tokens, sigma, correct_p
        self.policy_version = 0

    def _lengths(self, qid: str, k: int, seeds) -> list[int]:
        rng = random.Random(f"{self.seed}/{qid}/{seeds}")
        mu = math.log(self.mean_tokens) - self.sigma ** 2 / 2
        return [max(1, min(self.cfg.max_new_tokens, int(rng.lognormvariate(mu, self.sigma)))) for _ in range(k)]

    def generate_stream(self, query_ids: Sequence[str], prompts: Sequence[str], *, n: int | None = None,
                        greedy: bool = False, seeds: Sequence[int] | None = None) -> Iterator[tuple[int, list]]:
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
