"""The engines' log-probs against the learner's: the mismatch metric and truncated importance
sampling (TIS; docs/algorithm.md, "Rollout/learner mismatch").

vLLM samples with its own kernels (bf16, other reductions), so ``pi_engine``, the policy that
actually drew a token, is not quite the learner's ``pi_old`` even on-policy with the same
weights. Both log-probs of every trained token are at hand: the engines return the sampled
token's (``rollout.behaviour_logprobs``, raw: before temperature and top-p), the learner
computes its own in the training forward. Before the update the learner's value is
``pi_old``'s (one update per batch), so the weight of a token is

    tis_t = min(exp(logp_old_t - logp_engine_t), cap)      (detached)

as verl's rollout correction (token-level TIS) and TRL's ``vllm_importance_sampling_cap``.
With ``algo.max_staleness=1`` the learner is one version ahead of the sampler, so the same
ratio also covers the policy lag: the truncated form of the full importance ratio.
"""
from __future__ import annotations

import torch
from torch import Tensor


def engine_correction(logprobs: Tensor, engine_logprobs: Tensor | None, mask: Tensor,
                      cap: float | None) -> tuple[Tensor | None, dict[str, Tensor]]:
    """``(tis weights or None, metric sums)`` for one micro-batch, ``[S, T]`` in the loss layout.

    A token counts where it is masked and the engine's log-prob is finite (an unknown one,
    NaN, gets weight 1 and stays out of the mismatch). Sums, merged over micro-batches and
    ranks by ``LearnerGroup`` (``*_max`` by max): ``rollout/logprob_mismatch_sum`` and
    ``_n`` (sum and count of ``|logp_old - logp_engine|``), ``rollout/logprob_mismatch_max``;
    with a cap, ``learner/tis_clipped_n`` (tokens whose ratio exceeded it) and
    ``learner/tis_weight_sum`` (the weights over the masked tokens). No engine log-probs: no
    metrics, and an error if a cap asks for weights on tokens there are.
    """
    if engine_logprobs is None:
        if cap is not None and bool(mask.any()):
            raise ValueError("algo.tis_cap needs the engines' log-probs of the sampled tokens "
                             "(rollout.behaviour_logprobs=true), and these samples carry none")
        return None, {}
    known = mask.bool() & torch.isfinite(engine_logprobs)
    log_ratio = torch.where(known, logprobs.detach() - engine_logprobs.to(logprobs.dtype), 0.0)
    diff = log_ratio.abs()
    metrics = {"rollout/logprob_mismatch_sum": diff.sum(), "rollout/logprob_mismatch_n": known.sum(),
               "rollout/logprob_mismatch_max": diff.max() if diff.numel() else diff.new_zeros(())}
    if cap is None:
        return None, metrics
    ratio = torch.exp(log_ratio)  # 1 where unknown; inf (overflow) is clipped to the cap
    weights = ratio.clamp(max=cap)
    metrics["learner/tis_clipped_n"] = (known & (ratio > cap)).sum()
    metrics["learner/tis_weight_sum"] = torch.where(mask.bool(), weights, 0.0).sum()
    return weights, metrics
