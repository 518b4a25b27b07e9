"""OREAL policy loss, one function per term (notes: ``docs/algorithm.md``, step 6).

Symbols follow the notes: ``A_pos``/``A_neg`` are the RLOO advantages A+ / A- of a kept
positive / negative sample, ``w_pos``/``w_neg`` the token weights w+ / w- from the token-level
reward model (``q_t = sigmoid(wbar_t)``), ``rho`` the on-policy importance ratio,
``N_pos``/``N_neg``/``N`` the GLOBAL (all ranks) token counts, ``eta`` and ``beta`` the
negative and KL coefficients. Every term returns ``(loss, metrics)``; ``oreal_loss`` composes
them according to the mode table ``MODES`` (the ablation rows of the paper).

Alignment convention (shared with ``reward_model``)
----------------------------------------------------
A kept sequence is ``input_ids[s] = prompt + response`` (right padded to ``L``). Column ``j``
of every per-token tensor the loss sees belongs to token ``input_ids[:, j + 1]`` and is read
from the model output at position ``j``, i.e. from the prefix that predicts that token:

* policy / reference: ``logprobs = gather_logprobs(logits, input_ids)``   -> ``[S, L-1]``
  (``token_logprobs(..., with_entropy=True)`` adds the entropy of the same distributions)
* reward model:       ``rm_scores = rm.response_scores(input_ids, attention_mask, mask)``
  (= ``rm(input_ids, attention_mask)[:, :-1]``)                          -> ``[S, L-1]``
* ``mask = response_mask(prompt_lens, total_lens, L)`` is 1 exactly on response tokens.

Worked example, prompt ``[p0 p1]``, response ``[y0 y1 y2]``, one pad, ``L = 6``::

    input_ids      p0   p1   y0   y1   y2   pad
    column j        0    1    2    3    4
    logprobs[j]    p1   y0   y1   y2   pad      (log pi(input_ids[j+1] | input_ids[:j+1]))
    mask[j]         0    1    1    1    0

So ``T = L - 1`` and ``mask`` may have leading zeros (the prompt); the loss only ever reads
masked entries (padding may hold anything, even inf/nan, and never contributes).

Distributed use: pass the global counts ``n_pos_tokens``/``n_neg_tokens`` (all-reduced over
ranks). Then the per-rank losses SUM to the whole-batch loss; a data-parallel engine that
AVERAGES gradients over ranks must therefore have the loss scaled by the world size.

This module imports torch (and the torch-only `reward_model.loss`, `learner.kl`) only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from reward_model.loss import WeightRule  # the RM role's public weight rule (torch only)
from learner.kl import kl_k3_term, kl_term  # noqa: F401  (kl_k3_term: re-exported)

Metrics = dict[str, Tensor]


# --------------------------------------------------------------------------- alignment
def _log_softmax_chunk(logits: Tensor) -> Tensor:
    """float32 ``log_softmax`` of one chunk ``[c, V]``: the only float32 copy of the logits."""
    return torch.log_softmax(logits.float(), -1)


class _ChunkedLogprobs(torch.autograd.Function):
    """``(log pi(target), H)`` per row of ``[N, V]`` logits, ``chunk`` rows at a time.

    No float32 ``[chunk, V]`` tensor outlives its chunk: backward recomputes each chunk's
    log-softmax and writes its gradient straight into one ``[N, V]`` buffer of the logits'
    dtype (checkpointing each chunk would hold every chunk's gradient and their concatenation
    at once). With ``lp = log_softmax(x)``, ``p = exp(lp)``:
    ``d lp[y] / dx = onehot(y) - p`` and ``dH / dx = -p * (lp + H)``.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, chunk: int, with_entropy: bool):
        logp = logits.new_empty(logits.shape[0], dtype=torch.float32)
        H = torch.empty_like(logp) if with_entropy else None
        for t0 in range(0, logits.shape[0], chunk):
            lp = _log_softmax_chunk(logits[t0:t0 + chunk])
            logp[t0:t0 + chunk] = lp.gather(-1, targets[t0:t0 + chunk, None]).squeeze(-1)
            if with_entropy:
                H[t0:t0 + chunk] = -lp.exp().mul_(lp).sum(-1)
        ctx.set_materialize_grads(False)
        ctx.chunk = chunk
        ctx.save_for_backward(logits, targets, H)
        return logp, H

    @staticmethod
    def backward(ctx, g_logp: Tensor | None, g_H: Tensor | None):
        logits, targets, H = ctx.saved_tensors
        if g_logp is None and g_H is None:
            return None, None, None, None
        grad = torch.empty_like(logits)
        for t0 in range(0, logits.shape[0], ctx.chunk):
            t1 = t0 + ctx.chunk
            lp = _log_softmax_chunk(logits[t0:t1])
            p = lp.exp()
            if g_H is None:
                coef = g_logp[t0:t1, None]
            else:
                coef = lp.add_(H[t0:t1, None]).mul_(g_H[t0:t1, None])
                if g_logp is not None:
                    coef.add_(g_logp[t0:t1, None])
            g = p.mul_(coef).neg_()
            if g_logp is not None:
                g.scatter_add_(-1, targets[t0:t1, None], g_logp[t0:t1, None])
            grad[t0:t1] = g
        return grad, None, None, None


def token_logprobs(logits: Tensor, input_ids: Tensor, chunk_tokens: int = 1024,
                   with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
    """``log pi(input_ids[:, j+1] | input_ids[:, :j+1])`` and, optionally, the entropy ``H`` of
    that same distribution, for ``j < L-1``: ``[S, L, V] -> ([S, L-1], [S, L-1] | None)``.

    One float32 pass over at most ``chunk_tokens`` positions at a time, all rows together (the
    ``[S, L]`` positions are flattened); values and gradients equal ``log_softmax`` in float32
    and ``H = -sum p log p``, but float32 ``[tokens, V]`` tensors only ever exist for one chunk,
    in forward and backward (for a whole 16k-token row at a 152k vocabulary: ~10 GB each).
    """
    S, L, V = logits.shape
    # flat position s*L + j predicts input_ids[s, j+1]; the last position of a row predicts
    # nothing (any valid id, dropped below)
    targets = torch.cat([input_ids[:, 1:], input_ids[:, :1]], 1).reshape(-1)
    logp, H = _ChunkedLogprobs.apply(logits.reshape(S * L, V), targets, chunk_tokens, with_entropy)
    logp = logp.view(S, L)[:, :-1]
    return logp, (H.view(S, L)[:, :-1] if with_entropy else None)


def gather_logprobs(logits: Tensor, input_ids: Tensor, chunk_tokens: int = 1024) -> Tensor:
    """``log pi(input_ids[:, j+1] | input_ids[:, :j+1])`` for ``j < L-1``: ``[S, L, V] -> [S, L-1]``
    (float32, chunked: ``token_logprobs`` without the entropy)."""
    return token_logprobs(logits, input_ids, chunk_tokens)[0]


def response_mask(prompt_lens: Tensor, total_lens: Tensor, L: int) -> Tensor:
    """Bool ``[S, L-1]`` mask, True on the columns whose token is a response token.

    Response tokens are ``input_ids[s, prompt_lens[s] : total_lens[s]]`` (``total_lens`` =
    prompt + response length, padding excluded); in the shifted layout of ``gather_logprobs``
    they sit at columns ``prompt_lens[s] - 1 .. total_lens[s] - 2``.
    """
    j = torch.arange(L - 1, device=prompt_lens.device)
    return (j >= prompt_lens[:, None] - 1) & (j < total_lens[:, None] - 1)


# --------------------------------------------------------------------------- advantages
def rloo_advantages(rewards: Tensor) -> Tensor:
    """RLOO, per query over its K samples: ``A_i = r_i - mean_{j != i} r_j``; ``[B, K] -> [B, K]``.

    With +-1 rewards and pass rate p: ``A+ = 2K(1-p)/(K-1)``, ``A- = -2Kp/(K-1)``.
    """
    K = rewards.shape[-1]
    if K < 2:
        raise ValueError(f"RLOO needs K >= 2 samples per query, got K={K}")
    r = rewards.float()
    return r - (r.sum(-1, keepdim=True) - r) / (K - 1)


def grpo_advantages(rewards: Tensor, eps: float = 1e-8) -> Tensor:
    """GRPO: ``A_i = (r_i - mean_j r_j) / (std_j r_j + eps)``; ``[B, K] -> [B, K]``.

    ``std`` is the UNBIASED sample std (Bessel's correction, K-1), as in the DeepSeekMath
    reference implementations (TRL, verl use ``torch.std``). A group whose rewards are all
    equal gets advantage 0.
    """
    r = rewards.float()
    return (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + eps)


ADVANTAGE_ESTIMATORS: dict[str, Callable[[Tensor], Tensor]] = {
    "rloo": rloo_advantages,
    "grpo": grpo_advantages,
}


# --------------------------------------------------------------------------- loss terms
def _masked(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` on masked entries, 0 elsewhere (also kills inf/nan padding, value and grad)."""
    return torch.where(mask, x, x.new_zeros(()))


def _tis(tis: Tensor | None, mask: Tensor) -> Tensor | float:
    """The truncated importance weights on the masked tokens (``learner.correction``), or 1."""
    return 1.0 if tis is None else _masked(tis.detach(), mask)


def positive_bc_term(logprobs: Tensor, A_pos: Tensor, w_pos: Tensor, mask: Tensor,
                     N_pos: Tensor, tis: Tensor | None = None) -> tuple[Tensor, Metrics]:
    """Behaviour cloning of positives: ``sum_i A+_i sum_t w+_it l_it / N+``, ``l = -log pi``.

    ``mask`` selects the positives' response tokens; ``A_pos`` is ``[S]`` (1 for the paper
    prose's unscaled cloning), ``w_pos`` ``[S, T]`` (all 1 without the RM). ``tis`` (``[S, T]``,
    ``algo.tis_cap``): a detached per-token factor on ``l_it``, the truncated importance weight.
    """
    l = -_masked(logprobs, mask)
    loss = (A_pos[:, None] * _masked(w_pos, mask) * _tis(tis, mask) * l).sum() / N_pos
    return loss, {"pos": loss.detach()}


def negative_term(logprobs: Tensor, A_neg: Tensor, w_neg: Tensor, mask: Tensor,
                  N_neg: Tensor, eta: float, old_logprobs: Tensor | None = None,
                  tis: Tensor | None = None) -> tuple[Tensor, Metrics]:
    """Shaped negatives: ``-eta * sum_i sum_t rho_it A-_i w-_it / N-``.

    On-policy (``old_logprobs`` None): ``rho_t = exp(logp_t - stopgrad(logp_t))`` has value 1
    and gradient ``grad log pi``, so the value is the constant ``-eta sum A- w- / N-`` (>= 0
    since ``A- <= 0``) and the gradient ``-eta A- w- grad log pi / N-`` pushes the negatives'
    log-probs down. Off-policy (``algo.max_staleness=1``): ``rho_t = exp(logp_t - logp_old_t)``
    with ``logp_old`` the behaviour policy's (the sampling engine's) log-probs: value
    ``pi/pi_old``, gradient ``rho grad log pi``. ``tis`` (``algo.tis_cap``) multiplies ``rho``
    per token: on-policy ``rho`` then has value ``tis`` and gradient ``tis grad log pi``.
    """
    logp = _masked(logprobs, mask)
    rho = torch.exp(logp - (logp.detach() if old_logprobs is None else _masked(old_logprobs, mask)))
    loss = -eta * (rho * _tis(tis, mask) * A_neg[:, None] * _masked(w_neg, mask)).sum() / N_neg
    return loss, {"neg": loss.detach()}


def reinforce_term(logprobs: Tensor, R: Tensor, mask: Tensor, N: Tensor,
                   old_logprobs: Tensor | None = None, tis: Tensor | None = None) -> tuple[Tensor, Metrics]:
    """REINFORCE: ``-sum_i R_i sum_t log pi_it / N`` with ``R`` the reward r or advantage A.
    Off-policy (``old_logprobs`` given): ``-sum_i R_i sum_t rho_it / N`` with
    ``rho = pi / pi_old``, whose gradient is the importance-weighted policy gradient.
    ``tis`` (``algo.tis_cap``): a detached per-token factor on ``log pi_it``."""
    if old_logprobs is not None:
        logp = _masked(logprobs, mask)
        loss = -(R[:, None] * torch.exp(logp - _masked(old_logprobs, mask)) * mask).sum() / N
        return loss, {"pg": loss.detach()}
    loss = -(R[:, None] * _tis(tis, mask) * _masked(logprobs, mask)).sum() / N
    return loss, {"pg": loss.detach()}


# --------------------------------------------------------------------------- modes
@dataclass(frozen=True)
class TermInputs:
    """The kept sequences of one (micro-)batch, with the normalisers already resolved."""
    logprobs: Tensor
    R: Tensor           # [S] per-sample coefficient: reward r or advantage A
    w_pos: Tensor       # [S, T] w+ (ones without the RM)
    w_neg: Tensor       # [S, T] w- (ones without the RM)
    mask_pos: Tensor    # [S, T] response tokens of positives (r > 0)
    mask_neg: Tensor    # [S, T] response tokens of negatives (r <= 0)
    N_pos: Tensor       # normalisers (global counts, clamped to >= 1)
    N_neg: Tensor
    N: Tensor           # N+ + N-
    eta: float
    pos_mult_adv: bool
    old_logprobs: Tensor | None = None  # [S, T] behaviour policy's, off-policy only
    tis: Tensor | None = None           # [S, T] truncated importance weights (algo.tis_cap)


def reinforce_terms(b: TermInputs) -> tuple[tuple[Tensor, Metrics], tuple[Tensor, Metrics]]:
    """REINFORCE on every sample, split into the positives' and negatives' share (both / N)."""
    pos, _ = reinforce_term(b.logprobs, b.R, b.mask_pos, b.N, b.old_logprobs, b.tis)
    neg, _ = reinforce_term(b.logprobs, b.R, b.mask_neg, b.N, b.old_logprobs, b.tis)
    return (pos, {"pos": pos.detach()}), (neg, {"neg": neg.detach()})


def oreal_terms(b: TermInputs) -> tuple[tuple[Tensor, Metrics], tuple[Tensor, Metrics]]:
    """Behaviour cloning of positives (/ N+) and shaped negatives (/ N-)."""
    A_pos = b.R if b.pos_mult_adv else torch.ones_like(b.R)
    return (positive_bc_term(b.logprobs, A_pos, b.w_pos, b.mask_pos, b.N_pos, b.tis),
            negative_term(b.logprobs, b.R, b.w_neg, b.mask_neg, b.N_neg, b.eta, b.old_logprobs, b.tis))


@dataclass(frozen=True)
class Mode:
    """One ablation row: which policy terms, which per-sample coefficient, whether RM weights."""
    terms: Callable[[TermInputs], tuple[tuple[Tensor, Metrics], tuple[Tensor, Metrics]]]
    coefficient: str    # "rewards" or "advantages"
    rm_weights: bool


MODES: dict[str, Mode] = {
    "reinforce": Mode(reinforce_terms, coefficient="rewards", rm_weights=False),
    "shaped": Mode(reinforce_terms, coefficient="advantages", rm_weights=False),
    "bc": Mode(oreal_terms, coefficient="advantages", rm_weights=False),
    "oreal": Mode(oreal_terms, coefficient="advantages", rm_weights=True),
}


def shuffle_within(w: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``w``'s masked entries in a random order (a permutation among themselves; the same sum,
    mean and values), 0 elsewhere: random token weights with the RM's statistics."""
    out = torch.zeros_like(w)
    vals = w[mask]
    perm = torch.randperm(vals.numel(), generator=generator, device="cpu").to(vals.device)
    out[mask] = vals[perm]
    return out


def _token_count(n: int | float | Tensor | None, mask: Tensor) -> Tensor:
    return (mask.sum() if n is None else torch.as_tensor(n, device=mask.device)).float()


def oreal_loss(logprobs: Tensor, ref_logprobs: Tensor, rm_scores: Tensor | None, mask: Tensor,
               rewards: Tensor, advantages: Tensor | None, *, mode: str = "oreal",
               eta: float = 0.5, beta: float = 0.01, pos_mult_adv: bool = True,
               n_pos_tokens: int | Tensor | None = None,
               n_neg_tokens: int | Tensor | None = None,
               weight_rule: WeightRule = WeightRule(), force_w_pos_one: bool = False, shuffle_weights: bool = False,
               old_logprobs: Tensor | None = None, kl_type: str = "k3", tis_weights: Tensor | None = None,
               positive: Tensor | None = None) -> dict[str, Tensor]:
    """Policy loss of one (micro-)batch of kept sequences: positive + negative + KL terms.

    Shapes: ``logprobs``, ``ref_logprobs``, ``rm_scores``, ``mask`` are ``[S, T]`` in the
    shifted layout of the module docstring; ``rewards``, ``advantages`` are ``[S]``.
    Positives are ``rewards > 0``, or ``positive`` (``[S]`` bool: correct, whatever the
    reward; ``algo.overlong=penalty`` can make a correct sample's reward <= 0). ``rm_scores``
    are the RM's raw per-token logits from the RM BEFORE this step's update (only
    ``mode="oreal"`` needs them; ``advantages`` is unused, and may be None, in
    ``mode="reinforce"``). ``n_pos_tokens``/``n_neg_tokens`` are N+ / N-
    summed over all ranks (default: this batch's counts); give both or neither.
    ``weight_rule`` (``reward_model.loss.WeightRule``; default the paper's) is how the RM's
    scores become w+ and w-: its ``score`` reads ``q_t`` from ``"prefix_mean"`` (released
    configs, ``sigmoid(wbar_t)``) or ``"token"`` (paper prose, ``sigmoid(w_t)``; then
    ``rm_scores`` are read at each token's own position: ``reward_model.loss.score_columns``);
    its ``topk_ratios`` switch to the authors' ``topk_rescale``; its ``temperature`` divides
    the scores before the sigmoid (1: the paper).
    ``force_w_pos_one`` sets ``w+ = 1`` (mode oreal): the positive term is then ``bc``'s.
    ``shuffle_weights`` permutes w+ among the positives' tokens and w- among the negatives'
    (``shuffle_within``): the RM's means and spread, none of its token-level information.
    ``old_logprobs`` (``[S, T]``, off-policy samples): the behaviour policy's log-probs, the
    ratio's ``pi_old`` in the negative (and REINFORCE) terms; None: on-policy, ratio 1.
    ``kl_type``: the KL estimator (``learner.kl``: k1, k2, k3, mse). ``tis_weights`` (``[S, T]``,
    detached, ``learner.correction``): truncated importance weights multiplying every policy
    term per token (not the KL); they stand for the ratio to the engine, so ``old_logprobs``
    must then be None.

    Returns ``loss`` (scalar with grad) and detached metrics: ``pos``, ``neg``, ``kl`` (the
    three terms, summing to ``loss``), ``kl_k3_mean`` (per-token k3, this batch),
    ``n_pos_tokens``, ``n_neg_tokens`` (this batch's counts), ``n_pos_seqs``, ``n_neg_seqs``,
    ``w_pos_mean``, ``w_neg_mean`` (weights used, over the masked tokens of positives /
    negatives), ``N_pos``, ``N_neg`` (the normalisers: global counts, or this batch's).
    An empty normaliser (e.g. no positives anywhere) makes its term 0.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; expected one of {sorted(MODES)}")
    if (n_pos_tokens is None) != (n_neg_tokens is None):
        raise ValueError("give both n_pos_tokens and n_neg_tokens (global counts) or neither")
    spec = MODES[mode]
    mask = mask.bool()
    if tis_weights is not None and old_logprobs is not None:
        raise ValueError("tis_weights already weigh by the ratio to the engine: give old_logprobs=None with them")
    is_pos = rewards > 0 if positive is None else positive.bool()
    mask_pos, mask_neg = mask & is_pos[:, None], mask & ~is_pos[:, None]
    if spec.rm_weights:
        if rm_scores is None:
            raise ValueError(f"mode={mode!r} needs rm_scores")
        w_pos, w_neg = weight_rule(rm_scores, mask)
        if shuffle_weights:
            w_pos, w_neg = shuffle_within(w_pos, mask_pos), shuffle_within(w_neg, mask_neg)
        if force_w_pos_one:
            w_pos = torch.ones_like(w_pos)
    else:
        w_pos = w_neg = torch.ones_like(logprobs)
    R = rewards if spec.coefficient == "rewards" else advantages
    if R is None:
        raise ValueError(f"mode={mode!r} needs advantages")
    N_pos, N_neg = _token_count(n_pos_tokens, mask_pos), _token_count(n_neg_tokens, mask_neg)
    b = TermInputs(logprobs=logprobs, R=R.to(logprobs.dtype), w_pos=w_pos.to(logprobs.dtype),
                   w_neg=w_neg.to(logprobs.dtype), mask_pos=mask_pos, mask_neg=mask_neg,
                   N_pos=N_pos.clamp(min=1), N_neg=N_neg.clamp(min=1), N=(N_pos + N_neg).clamp(min=1),
                   eta=eta, pos_mult_adv=pos_mult_adv, old_logprobs=old_logprobs, tis=tis_weights)

    (pos, m_pos), (neg, m_neg) = spec.terms(b)
    kl, m_kl = kl_term(logprobs, ref_logprobs, mask, b.N, beta, kl_type)
    n_pos, n_neg = mask_pos.sum().float(), mask_neg.sum().float()
    return {
        "loss": pos + neg + kl, **m_pos, **m_neg, **m_kl,
        "n_pos_tokens": n_pos, "n_neg_tokens": n_neg,
        "n_pos_seqs": (is_pos & mask.any(-1)).sum().float(),
        "n_neg_seqs": (~is_pos & mask.any(-1)).sum().float(),
        "w_pos_mean": (_masked(w_pos, mask_pos).sum() / n_pos.clamp(min=1)).detach(),
        "w_neg_mean": (_masked(w_neg, mask_neg).sum() / n_neg.clamp(min=1)).detach(),
        "N_pos": N_pos, "N_neg": N_neg,
    }
