"""The KL penalty to the reference policy (docs/algorithm.md step 6), per ``algo.kl_type``.

With ``delta_t = logp_ref_t - logp_t`` (the log of ``pi_ref / pi`` at the sampled token):

* ``k1``  = ``logp - logp_ref = -delta``: the plain estimator of KL(pi || pi_ref); unbiased,
  any sign, high variance (verl ``kl``, OpenRLHF ``k1``);
* ``k2``  = ``delta^2 / 2``: biased, always >= 0, its gradient is ``-delta grad log pi``
  (verl ``mse``, OpenRLHF ``k2``);
* ``k3``  = ``exp(delta) - delta - 1``: unbiased and >= 0 (Schulman's k3; the authors'
  default ``unbias``, verl ``low_var_kl``; the default here);
* ``mse`` = ``delta^2 / 2``, as the authors' script writes it (``(ref - logp)^2 / 2``): the
  same formula as ``k2``, kept under the authors' name.

The authors' third option, ``kl``, is ``logp_ref - logp = -k1``, an estimate of MINUS
KL(pi || pi_ref): minimising it drives the policy away from the reference, so it is not
offered; ``k1`` here has verl's and OpenRLHF's sign.
Each estimator is 0 where ``delta`` is 0, so masked (padding, prompt) entries never count.
"""
from __future__ import annotations

import torch
from torch import Tensor

from learner.config import KL_TYPES


def kl_per_token(delta: Tensor, kl_type: str) -> Tensor:
    """The estimator ``kl_type`` of each token from ``delta = logp_ref - logp``."""
    if kl_type == "k1":
        return -delta
    if kl_type in ("k2", "mse"):
        return 0.5 * delta * delta
    if kl_type == "k3":
        return torch.exp(delta) - delta - 1
    raise ValueError(f"algo.kl_type must be one of {KL_TYPES}, got {kl_type!r}")


def kl_term(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, N: Tensor, beta: float,
            kl_type: str = "k3") -> tuple[Tensor, dict[str, Tensor]]:
    """KL to the reference: ``beta * sum_t kl_t / N`` over every kept (masked) token, ``kl_t``
    the ``kl_type`` estimator. Metrics: ``kl`` (the term) and ``kl_k3_mean`` (per-token k3 over
    this batch's masked tokens, whatever ``kl_type``: one monitor for every estimator)."""
    delta = torch.where(mask, ref_logprobs.to(logprobs.dtype) - logprobs, logprobs.new_zeros(()))
    loss = beta * kl_per_token(delta, kl_type).sum() / N
    k3 = kl_per_token(delta.detach(), "k3")
    n_local = mask.sum().clamp(min=1)
    return loss, {"kl": loss.detach(), "kl_k3_mean": k3.sum() / n_local}


def kl_k3_term(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, N: Tensor,
               beta: float) -> tuple[Tensor, dict[str, Tensor]]:
    """``kl_term`` with the k3 estimator (the released configs'):
    ``beta * sum_t (exp(delta_t) - delta_t - 1) / N``."""
    return kl_term(logprobs, ref_logprobs, mask, N, beta, "k3")
