"""Token-level reward model: its loss and the token weights it gives the policy (``docs/algorithm.md``, step 5).

The RM is trained from the outcome only: a sequence's score is the mean of its per-token
scores, ``wbar_n``, fitted to the label ``1[r > 0]`` with a BCE. Per-token credit is the
prefix mean ``wbar_t``, turned into the policy's weights ``w+``/``w-``.

Alignment convention (shared with ``learner.loss``): every ``[S, T]`` tensor here uses the
shifted layout where column ``j`` belongs to token ``input_ids[:, j + 1]`` and is read at
position ``j`` (the position that predicts it); ``TokenRewardModel.response_scores`` returns
scores in that layout. ``mask`` is 1 exactly on response tokens, one contiguous span that may
start at any column (leading zeros = prompt, trailing zeros = padding). Entries outside the
mask may hold anything and never contribute.

Where a token's score is read (``algo.rm_score``, ``score_columns``): ``prefix_mean`` (the
released configs) reads the token's score at the position that PREDICTS it (the hidden state
of prompt + ``y_<t``, the same column as its log-prob); ``token`` (the paper's prose,
``w(s_<=t)``) reads it at the token's OWN position, whose hidden state has seen ``y_t``. Both
come out in the layout above (column ``j`` belongs to token ``j + 1``), so one ``mask`` serves
both; the RM's sequence score, its loss and the weights all use the chosen columns.

Symbols: ``w`` raw per-token scores (RM logits), ``wbar`` prefix means, ``q = sigmoid(wbar)``,
``S`` the number of sequences (global, all ranks). This module imports torch only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

Metrics = dict[str, Tensor]


# algo.rm_score -> the column of the RM's per-position output that scores token j + 1.
RM_SCORES = ("prefix_mean", "token")


def _masked(x: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, x, x.new_zeros(()))


def score_columns(position_scores: Tensor, rm_score: str = "prefix_mean") -> Tensor:
    """The RM's per-position output ``[S, L]`` (``TokenRewardModel.forward``: position ``i``
    has seen ``input_ids[:, :i+1]``) in the loss layout ``[S, L-1]``, column ``j`` scoring
    token ``input_ids[:, j+1]``:

    * ``"prefix_mean"``: read at ``j``, the position that predicts the token (``[:, :-1]``);
    * ``"token"``: read at ``j + 1``, the token's own position, ``w(s_<=t)`` (``[:, 1:]``).

    Example, prompt ``[p0 p1]``, response ``[y0 y1]``: the response columns 1, 2 hold
    ``(w@p1, w@y0)`` for ``prefix_mean`` and ``(w@y0, w@y1)`` for ``token``.
    """
    if rm_score not in RM_SCORES:
        raise ValueError(f"rm_score={rm_score!r}; expected one of {RM_SCORES}")
    return position_scores[:, :-1] if rm_score == "prefix_mean" else position_scores[:, 1:]


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


def smoothed(labels: Tensor, eps: float) -> Tensor:
    """BCE targets ``1 - eps/2`` and ``eps/2`` for labels 1 and 0 (``algo.rm_label_smoothing``):
    the loss no longer rewards an unbounded score, so the RM's confidence stays bounded
    (``|wbar_n| <= ln((2 - eps) / eps)`` at the optimum).

    >>> [round(x, 6) for x in smoothed(torch.tensor([1.0, 0.0]), 0.2).tolist()]
    [0.9, 0.1]
    """
    return labels * (1.0 - eps) + eps / 2.0 if eps else labels


def token_rm_loss(rm_scores: Tensor, mask: Tensor, labels: Tensor,
                  n_seqs: int | float | Tensor | None = None, weights: Tensor | None = None,
                  token_l2: float = 0.0) -> tuple[Tensor, Metrics]:
    """RM loss: ``sum_i BCE_with_logits(wbar_n(i), label_i) / S``, ``label = 1[r > 0]``.

    ``token_l2`` (``algo.rm_token_l2``, a deviation; 0: the paper) adds ``token_l2 * mean_t
    w_t^2`` to each sequence's term: the BCE sees only the mean ``wbar_n``, so without it the
    per-token scores are free to swing far apart (measured: +-20 on a tiny RM) as long as they
    average right, and the token weights and first-error drops read noise. For a given mean the
    penalty is least when a sequence's scores are equal, so each score stays near 0 where the
    pair's responses agree and moves where they part.

    ``labels`` ``[S]`` in {0, 1}. ``n_seqs`` is S over all ranks (default: the sequences of
    this batch that have response tokens; rows without any are skipped, so padding rows are
    harmless). ``weights`` ``[S]`` (``algo.rm_samples=all``): ``sum_i u_i BCE_i / n_seqs``,
    where ``n_seqs`` is then the weights' global sum (default: this batch's). Returns
    ``(loss, metrics)`` with detached ``loss``, ``accuracy`` (see ``rm_accuracy``),
    ``score_mean`` (mean ``wbar_n``) and ``n_seqs`` (local count).
    """
    has_tokens = mask.bool().any(-1)
    wbar_n = sequence_score(rm_scores, mask)
    bce = F.binary_cross_entropy_with_logits(wbar_n, labels.to(wbar_n.dtype), reduction="none")
    u = has_tokens.to(bce.dtype) if weights is None else _masked(weights.to(bce.dtype), has_tokens)
    S = u.sum() if n_seqs is None else torch.as_tensor(n_seqs, device=bce.device)
    per_seq = bce
    if token_l2:
        m = mask.bool()
        per_seq = bce + token_l2 * (_masked(rm_scores, m) ** 2).sum(-1) / m.sum(-1).clamp(min=1)
    loss = (u * per_seq).sum() / S.to(bce.dtype).clamp(min=1e-12 if weights is not None else 1)
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
    head) is undecided and counts as wrong. A soft label (``algo.rm_label_smoothing``'s
    ``1 - s/2`` or ``s/2``) is the class it is closer to."""
    has_tokens = mask.bool().any(-1)
    wbar_n = sequence_score(rm_scores, mask)
    y = labels > 0.5
    right = ((wbar_n > 0) & y) | ((wbar_n < 0) & ~y)
    return (right & has_tokens).sum().float() / has_tokens.sum().clamp(min=1)


@torch.no_grad()
def token_weights(rm_scores: Tensor, mask: Tensor, score: str = "prefix_mean",
                  topk_ratios: tuple[float, float] | None = None, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Policy token weights (detached), zero outside ``mask``: ``q_t = sigmoid(wbar_t)``,
    ``w+_t = max(2 q_t - 1, 0)``, ``w-_t = max(1 - 2 q_t, 0)``. ``score="token"`` uses the
    token's own score, ``q_t = sigmoid(w_t)`` (the paper's prose; a config switch), where
    ``rm_scores`` are read at the token's own position (``score_columns(.., "token")``).

    ``topk_ratios=(r_pos, r_neg)`` replaces the threshold rule by the authors' ``topk_rescale``
    (their ``train_oreal.py``; off in their configs): per sequence, the ``int(n r)`` tokens of
    highest ``q`` (for ``w+``; of highest ``1 - q`` for ``w-``) get their value min-max scaled
    to [0, 1] among those k (all 1 when they are equal), the other tokens 0 (``topk_rescale``).

    ``temperature`` T (``algo.rm_weight_temperature``; 1 is the paper) reads ``q_t =
    sigmoid(wbar_t / T)``: below 1 it sharpens the weights of an RM whose scores are small
    (the same order of tokens, larger w+ and w-).

    Use the RM as it was BEFORE this step's RM update. A zero head gives ``q = 1/2`` and
    every weight 0. Example: ``wbar = ln 3`` -> ``q = 3/4`` -> ``w+ = 1/2, w- = 0``; with
    ``T = 1/2``, ``q = 9/10`` -> ``w+ = 4/5``.
    """
    m = mask.bool()
    w = rm_scores.detach()
    if score not in RM_SCORES:
        raise ValueError(f"score={score!r}; expected one of {RM_SCORES}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    w = w.to(torch.promote_types(w.dtype, torch.float32)) / temperature
    q = torch.sigmoid(prefix_mean(w, m) if score == "prefix_mean" else _masked(w, m))
    if topk_ratios is not None:
        return topk_rescale(q, m, topk_ratios[0]), topk_rescale(1 - q, m, topk_ratios[1])
    w_pos = _masked((2 * q - 1).clamp(min=0), m)
    w_neg = _masked((1 - 2 * q).clamp(min=0), m)
    return w_pos, w_neg


@dataclass(frozen=True)
class WeightRule:
    """How the RM's scores become the policy's token weights, in one piece: the loss, the
    instruments and the plots read the same rule (`AlgoConfig.weight_rule`: algo.rm_score,
    algo.topk_rescale's ratios, algo.rm_weight_temperature). The defaults are the paper's."""
    score: str = "prefix_mean"
    topk_ratios: tuple[float, float] | None = None
    temperature: float = 1.0

    def __call__(self, rm_scores: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(w+, w-) of `token_weights` under this rule."""
        return token_weights(rm_scores, mask, score=self.score, topk_ratios=self.topk_ratios,
                             temperature=self.temperature)


@torch.no_grad()
def topk_rescale(prob: Tensor, mask: Tensor, ratio: float) -> Tensor:
    """The authors' ``topk_rescale``, row by row over the masked tokens: the ``k = int(n *
    ratio)`` largest ``prob`` of a sequence of ``n`` tokens become ``(p - min) / (max - min)``
    over those k (1 each if they are all equal), every other token 0. ``k = 0`` (a short
    sequence) gives all zeros (their code would fail on an empty top-k). ``[S, T] -> [S, T]``.

    Example: ``prob = [0.9, 0.6, 0.8, 0.7]``, ratio 0.5 -> k = 2: ``[1, 0, 0, 0]``
    (0.9 -> 1, 0.8 -> 0, the rest dropped).
    """
    out = torch.zeros_like(prob)
    for i in range(prob.shape[0]):
        idx = mask[i].nonzero().squeeze(-1)
        k = int(idx.numel() * ratio)
        if k == 0:
            continue
        values, top = torch.topk(prob[i, idx], k)
        span = values.max() - values.min()
        out[i, idx[top]] = (values - values.min()) / span if span > 0 else torch.ones_like(values)
    return out


# --------------------------------------------------------------------------- instruments
@torch.no_grad()
def pair_accuracy(seq_scores: Tensor, labels: Tensor, keys: Tensor) -> Tensor:
    """Fraction of (positive, negative) pairs with the same ``keys`` (one query) whose
    sequence score ranks the positive strictly higher; ties (e.g. a zero head) count as wrong,
    as in ``rm_accuracy``. With the kept pair of each mixed query this is the RM's pair
    accuracy; with all K samples, the within-query AUC. NaN when there is no pair. ``[S] -> []``.

    Example: keys ``[0, 0, 1, 1]``, labels ``[1, 0, 1, 0]``, scores ``[2, 1, 0, 3]`` -> 0.5.
    """
    y = labels.bool()
    same = keys[:, None] == keys[None, :]
    pairs = same & y[:, None] & ~y[None, :]          # [pos, neg]
    right = pairs & (seq_scores[:, None] > seq_scores[None, :])
    n = pairs.sum()
    return right.sum().float() / n if n > 0 else torch.tensor(float("nan"))


@torch.no_grad()
def prefix_score_buckets(rm_scores: Tensor, mask: Tensor, n_buckets: int = 4) -> tuple[Tensor, Tensor]:
    """Sums and counts of the prefix score ``wbar_t`` per position bucket of the response:
    token ``t`` of ``n`` (``t = 1..n``) falls in bucket ``ceil(n_buckets t / n) - 1`` (quartiles
    for 4: the first quarter of the response is bucket 0; the last token, whose ``wbar_t`` is
    the sequence score, is always in the last bucket; a response shorter than ``n_buckets``
    leaves some buckets empty). Returns ``(sums [S, n_buckets], counts [S, n_buckets])`` per
    sequence, so that ranks and classes can be summed before dividing.

    Example: ``n = 4``, ``wbar = [1, 2, 3, 4]`` -> buckets 0..3 hold 1, 2, 3, 4 (one token each);
    ``n = 2``, ``wbar = [2, 3]`` -> buckets 1 and 3.
    """
    m = mask.bool()
    wbar = prefix_mean(rm_scores.detach().float(), m)
    t = m.long().cumsum(-1)                                      # 1-based index in the response
    n = m.sum(-1, keepdim=True).clamp(min=1)
    bucket = torch.where(m, (n_buckets * t + n - 1) // n - 1, torch.full_like(t, n_buckets))  # outside -> spill
    onehot = torch.nn.functional.one_hot(bucket, n_buckets + 1)[..., :n_buckets].to(wbar.dtype)
    return (onehot * wbar[..., None]).sum(1), onehot.sum(1)


@torch.no_grad()
def heldout_metrics(rm_scores: Tensor, mask: Tensor, labels: Tensor, keys: Tensor) -> dict[str, float]:
    """What tells whether an RM has learned, on sequences it was not trained on (the offline
    probe, ``bench/rm_probe.py``): ``bce`` (mean BCE of ``wbar_n`` against the label, ln 2 at
    chance), ``score_abs_mean`` (mean ``|wbar_n|``: how far from the zero head's 0),
    ``pair_accuracy`` (``pair_accuracy`` over pairs sharing a key) and ``accuracy`` (sign)."""
    has = mask.bool().any(-1)
    wbar_n = sequence_score(rm_scores.float(), mask)[has]
    y = labels.float()[has]
    return {
        "bce": F.binary_cross_entropy_with_logits(wbar_n, y).item(),
        "score_abs_mean": wbar_n.abs().mean().item(),
        "pair_accuracy": pair_accuracy(wbar_n, y, keys[has]).item(),
        "accuracy": rm_accuracy(rm_scores, mask, labels).item(),
    }
