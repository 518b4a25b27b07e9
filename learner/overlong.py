"""Truncated responses (``algo.overlong``; docs/algorithm.md, "Truncated responses").

A response cut at ``rollout.max_new_tokens`` has no stop token; the verifier grades it wrong
without reading it (the paper: reward -1), so the policy is punished for thinking long rather
than for being wrong. The options (``learner.selection.select`` applies them):

* ``keep``: graded as any other response (the paper, the default);
* ``filter``: a truncated sample is treated as if it had not been drawn: no loss, and it is
  left out of its query's pass rate and advantages (over the finished samples), of the kept
  pair and of the RM's samples. DAPO's overlong filtering and TRL's
  ``mask_truncated_completions`` mask its loss; here it also leaves the query's statistics,
  which would otherwise still count it as a failure (raising A+, lowering |A-|);
* ``penalty``: DAPO's soft overlong punishment (Yu et al., "DAPO", arXiv 2503.14476, section 3.4),
  added to every sample's reward before the advantages: ``overlong_penalty`` below.
"""
from __future__ import annotations

from typing import Sequence

import torch


def overlong_penalty(length: int, max_new_tokens: int, buffer: int) -> float:
    """DAPO's ``R_length``, with ``L_max = max_new_tokens`` and ``L_cache = buffer``: 0 up to
    ``L_max - L_cache`` tokens, ``(L_max - L_cache - length) / L_cache`` up to ``L_max`` (down
    to -1 there), -1 beyond (unreachable here: the engines stop at ``L_max``).

    >>> [overlong_penalty(n, 10, 4) for n in (6, 7, 8, 10, 11)]
    [0.0, -0.25, -0.5, -1.0, -1.0]
    """
    expected = max_new_tokens - buffer
    if length <= expected:
        return 0.0
    return max(-1.0, (expected - length) / buffer)


def group_advantages(rewards: torch.Tensor, usable: Sequence[Sequence[bool]] | None, estimator) -> torch.Tensor:
    """``estimator`` (RLOO, GRPO: ``[B, K] -> [B, K]``) over each query's usable samples only
    (``algo.overlong=filter``: the finished ones); the others get 0, and so does a query with
    fewer than 2 usable samples (no baseline). ``usable`` None: every sample, as before."""
    if usable is None or all(all(row) for row in usable):
        return estimator(rewards)
    out = torch.zeros_like(rewards, dtype=torch.float32)
    for b, row in enumerate(usable):
        idx = torch.tensor([k for k, u in enumerate(row) if u], dtype=torch.long)
        if len(idx) >= 2:
            out[b, idx] = estimator(rewards[b, idx][None]).float()[0]
    return out
