"""RolloutGroup: the driver's handle on the vLLM rollout actors."""
from __future__ import annotations

from typing import Sequence

import ray

from actors.config import RolloutConfig
from actors.engine import RolloutEngine
from actors.types import Rollout


class RolloutGroup:
    def __init__(self, cfg: RolloutConfig, model_path: str, seed: int, env_vars: dict[str, str] | None = None):
        self.cfg = cfg
        actor = ray.remote(RolloutEngine)
        opts = dict(num_cpus=cfg.num_cpus_per_actor, num_gpus=cfg.num_gpus_per_actor)
        if env_vars:
            opts["runtime_env"] = {"env_vars": env_vars}
        self.actors = [actor.options(**opts).remote(cfg, model_path, seed + i) for i in range(cfg.num_actors)]
        ray.get([a.ready.remote() for a in self.actors])

    def generate(self, query_ids: Sequence[str], prompts: Sequence[str], *, n: int | None = None,
                 greedy: bool = False) -> list[list[Rollout]]:
        """K samples per prompt (or `n`; `greedy` for evaluation), queries split evenly over
        the actors, results in query order."""
        k = len(self.actors)
        chunks = [(list(query_ids[i::k]), list(prompts[i::k])) for i in range(k)]
        refs = [a.generate.remote(q, p, n=n, greedy=greedy) for a, (q, p) in zip(self.actors, chunks) if q]
        parts = ray.get(refs)
        out: list[list[Rollout] | None] = [None] * len(query_ids)
        for i, part in enumerate(parts):
            for j, group in enumerate(part):
                out[i + j * k] = group
        return out  # type: ignore[return-value]

    def load_weights(self, blob_ref: ray.ObjectRef, version: int) -> None:
        ray.get([a.load_weights.remote(blob_ref, version) for a in self.actors])

    def probe_logprobs(self, token_ids: Sequence[int]) -> list[list[float]]:
        return ray.get([a.probe_logprobs.remote(list(token_ids)) for a in self.actors])

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
