"""Token-level reward model: its loss and the token weights it gives the policy (``docs/oreal.md``, step 5).

The RM is trained from the outcome only: a sequence's score is the mean of its per-token
scores, ``wbar_n``, fitted to the label ``1[r > 0]`` with a BCE. Per-token credit is the
prefix mean ``wbar_t``, turned into the policy's weights ``w+``/``w-``.

Alignment convention (shared with ``learner.loss``): every ``[S, T]`` tensor here uses the
shifted layout where column ``j`` belongs to token ``input_ids[:, j + 1]`` and is read at
position ``j`` (the position that predicts it); ``TokenRewardModel.response_scores`` returns
scores in that layout. ``mask`` is 1 exactly on response tokens, one contiguous span that may
start at any column (leading zeros = prompt, trailing zeros = padding). Entries outside the
mask may hold anything and never contribute.

Symbols: ``w`` raw per-token scores (RM logits), ``wbar`` prefix means, ``q = sigmoid(wbar)``,
``S`` the number of sequences (global, all ranks). This module imports torch only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

Metrics = dict[str, Tensor]


def _masked(x: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, x, x.new_zeros(()))


def prefix_mean(rm_scores: Tensor, mask: Tensor) -> Tensor:
    """``wbar_t = (1/t) sum_{k<=t} w_k`` over response tokens (t counts from the first one).

    ``[S, T] -> [S, T]``, zero outside ``mask``. Example: ``w = [9, 9, 1, 3, 5, 9]``,
    ``mask = [0, 0, 1, 1, 1, 0]`` gives ``wbar = [0, 0, 1, 2, 3, 0]``.
    """
    m = mask.bool()
    w = _masked(rm_scores, m)
    t = m.to(w.dtype).cumsum(-1).clamp(min=1)
    return _masked(w.cumsum(-1) / t, m)


def sequence_score(rm_scores: Tensor, mask: Tensor) -> Tensor:
    """``wbar_n``: the prefix mean at the last response token, i.e. the mean score. ``[S, T] -> [S]``."""
    m = mask.bool()
    return _masked(rm_scores, m).sum(-1) / m.sum(-1).clamp(min=1)


def token_rm_loss(rm_scores: Tensor, mask: Tensor, labels: Tensor,
                  n_seqs: int | Tensor | None = None) -> tuple[Tensor, Metrics]:
    """RM loss: ``sum_i BCE_with_logits(wbar_n(i), label_i) / S``, ``label = 1[r > 0]``.

    ``labels`` ``[S]`` in {0, 1}. ``n_seqs`` is S over all ranks (default: the sequences of
    this batch that have response tokens; rows without any are skipped, so padding rows are
    harmless). Returns ``(loss, metrics)`` with detached ``loss``, ``accuracy``
    (see ``rm_accuracy``), ``score_mean`` (mean ``wbar_n``) and ``n_seqs`` (local count).
    """
    has_tokens = mask.bool().any(-1)
    wbar_n = sequence_score(rm_scores, mask)
    bce = F.binary_cross_entropy_with_logits(wbar_n, labels.to(wbar_n.dtype), reduction="none")
    S = has_tokens.sum() if n_seqs is None else torch.as_tensor(n_seqs, device=bce.device)
    loss = _masked(bce, has_tokens).sum() / S.to(bce.dtype).clamp(min=1)
    n_local = has_tokens.sum().clamp(min=1)
    return loss, {
        "loss": loss.detach(),
        "accuracy": rm_accuracy(rm_scores, mask, labels),
        "score_mean": (_masked(wbar_n, has_tokens).sum() / n_local).detach(),
        "n_seqs": has_tokens.sum().float(),
    }


@torch.no_grad()
def rm_accuracy(rm_scores: Tensor, mask: Tensor, labels: Tensor) -> Tensor:
    """Fraction of sequences (with response tokens) where ``sign(wbar_n)`` matches the label:
    ``wbar_n > 0`` for label 1, ``wbar_n < 0`` for label 0; ``wbar_n == 0`` (e.g. a zero
    head) is undecided and counts as wrong."""
    has_tokens = mask.bool().any(-1)
    wbar_n = sequence_score(rm_scores, mask)
    y = labels.bool()
    right = ((wbar_n > 0) & y) | ((wbar_n < 0) & ~y)
    return (right & has_tokens).sum().float() / has_tokens.sum().clamp(min=1)


@torch.no_grad()
def token_weights(rm_scores: Tensor, mask: Tensor, score: str = "prefix_mean") -> tuple[Tensor, Tensor]:
    """Policy token weights (detached), zero outside ``mask``: ``q_t = sigmoid(wbar_t)``,
    ``w+_t = max(2 q_t - 1, 0)``, ``w-_t = max(1 - 2 q_t, 0)``. ``score="token"`` uses the
    token's own score, ``q_t = sigmoid(w_t)`` (the paper's prose; a config switch).

    Use the RM as it was BEFORE this step's RM update. A zero head gives ``q = 1/2`` and
    every weight 0. Example: ``wbar = ln 3`` -> ``q = 3/4`` -> ``w+ = 1/2, w- = 0``.
    """
    m = mask.bool()
    w = rm_scores.detach()
    if score not in ("prefix_mean", "token"):
        raise ValueError(f"score={score!r}; expected 'prefix_mean' or 'token'")
    w = w.to(torch.promote_types(w.dtype, torch.float32))
    q = torch.sigmoid(prefix_mean(w, m) if score == "prefix_mean" else _masked(w, m))
    w_pos = _masked((2 * q - 1).clamp(min=0), m)
    w_neg = _masked((1 - 2 * q).clamp(min=0), m)
    return w_pos, w_neg
