"""Partial rollouts (`rollout.partial`): the long tail does not set a step's pace.

A step's engines stop once `rollout.partial_budget` of the samples they were given have ended
(stop token or `max_new_tokens`); the others are *cut*: each keeps its tokens and their
behaviour log-probs and continues in a later step from its prefix, on that step's weights, as
a new *segment*. A query is graded and trained once all K of its samples have ended; each
token's behaviour log-prob is the one of the version that sampled it, so the policy terms'
importance ratio covers the mix (AReaL's, Kimi k1.5's and slime's partial rollouts).

These helpers are the engine side's bookkeeping, shared by `actors.engine.RolloutEngine` and
the stand-in engines (`bench.standins`); the carried queries between steps are the driver's
(`launch.state.carried`).
"""
from __future__ import annotations

import math
from typing import Sequence

from actors.types import Rollout


def segments_of(r: Rollout) -> tuple[tuple[int, int], ...]:
    """(policy version, tokens) of each of `r`'s segments (a one-call sample: one segment)."""
    return r.segments or ((r.policy_version, len(r.response_ids)),)


def newest_version(r: Rollout) -> int:
    """The version that sampled `r`'s last segment: the weights its latest tokens came from."""
    return segments_of(r)[-1][0]


def must_end(total: int, budget: float | None) -> int:
    """Samples of `total` that must end before the rest are cut: all of them without a budget.

    >>> must_end(64, 0.9), must_end(64, None), must_end(3, 0.5), must_end(0, 0.9)
    (58, 64, 2, 0)
    """
    return total if budget is None else min(total, math.ceil(budget * total - 1e-9))


def continuation_ids(prefix: Rollout) -> list[int]:
    """The prompt a cut sample continues from: its prompt and the tokens it has."""
    return list(prefix.prompt_ids) + list(prefix.response_ids)


def tokens_left(prefix: Rollout | None, max_new_tokens: int) -> int:
    """Tokens a sample may still generate (a cut sample never has max_new_tokens: it would
    have ended truncated)."""
    return max_new_tokens - (len(prefix.response_ids) if prefix is not None else 0)


def extend(prefix: Rollout | None, *, query_id: str, prompt_ids: Sequence[int], new_ids: Sequence[int],
           new_text: str, new_logprobs: Sequence[float], finished: bool, cut: bool, version: int) -> Rollout:
    """`prefix` (None: a fresh sample) followed by the tokens one call generated on `version`'s
    weights: one segment more (none for a call that generated nothing)."""
    segments = tuple(s for s in segments_of(prefix) if s[1]) if prefix is not None else ()
    if new_ids or not segments:
        segments = segments + ((version, len(new_ids)),)
    base_ids = tuple(prefix.response_ids) if prefix is not None else ()
    base_lps = tuple(prefix.logprobs) if prefix is not None else ()
    return Rollout(query_id=query_id, prompt_ids=tuple(prefix.prompt_ids if prefix is not None else prompt_ids),
                   response_ids=base_ids + tuple(new_ids),
                   response_text=(prefix.response_text if prefix is not None else "") + new_text,
                   finished=finished, logprobs=base_lps + tuple(new_logprobs) if new_logprobs or base_lps else (),
                   policy_version=segments[0][0], cut=cut, segments=segments if len(segments) > 1 else ())

