"""algo.kl_type (learner/kl.py): each estimator against hand values, value and gradient, and
by finite differences through the whole loss; k3 stays the default."""
import math

import pytest
import torch

from learner.config import AlgoConfig
from learner.kl import KL_TYPES, kl_k3_term, kl_per_token, kl_term
from learner.loss import oreal_loss
from test_loss import F64, KL_HAND, central_differences, hand_batch, random_batch

NAN = float("nan")


def kl_batch():
    """One row, delta = ref - logp = [-0.5, 1, 2] on three masked tokens and garbage on a
    fourth, unmasked column; N = 3, beta = 0.1."""
    logp = torch.tensor([[-1.0, -2.0, -3.0, NAN]], dtype=F64, requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0, -1.0, 5.0]], dtype=F64)
    mask = torch.tensor([[True, True, True, False]])
    return logp, ref, mask, torch.tensor(3.0, dtype=F64), 0.1


E = math.e
# sum over tokens of each estimator, by hand:
#   k1 = -delta:           0.5 - 1 - 2                                   = -2.5
#   k2 = mse = delta^2/2:  (0.25 + 1 + 4) / 2                             = 2.625
#   k3 = e^d - d - 1:      (e^-0.5 - 0.5) + (e - 2) + (e^2 - 3)           = 5.213868586...
SUMS = {"k1": -2.5, "k2": 2.625, "mse": 2.625,
        "k3": (math.exp(-0.5) - 0.5) + (E - 2) + (E ** 2 - 3)}
# d kl_t / d logp_t:  k1: 1 ; k2, mse: -delta ; k3: 1 - e^delta
GRADS = {"k1": [1.0, 1.0, 1.0], "k2": [0.5, -1.0, -2.0], "mse": [0.5, -1.0, -2.0],
         "k3": [1 - math.exp(-0.5), 1 - E, 1 - E ** 2]}


@pytest.mark.parametrize("kl_type", KL_TYPES)
def test_each_estimator_value_and_gradient_by_hand(kl_type):
    logp, ref, mask, N, beta = kl_batch()
    loss, m = kl_term(logp, ref, mask, N, beta, kl_type)
    assert loss.item() == pytest.approx(beta * SUMS[kl_type] / 3, abs=1e-12)
    assert m["kl"].item() == loss.item() and not m["kl"].requires_grad
    # the monitor is k3 whatever the estimator: one number to compare runs by
    assert m["kl_k3_mean"].item() == pytest.approx(SUMS["k3"] / 3, abs=1e-12)
    (grad,) = torch.autograd.grad(loss, logp)
    want = torch.tensor([[g * beta / 3 for g in GRADS[kl_type]] + [0.0]], dtype=F64)
    torch.testing.assert_close(grad, want, atol=1e-12, rtol=0)


def test_mse_is_k2s_formula():
    """The authors' `mse` ((ref - logp)^2 / 2) and OpenRLHF's / verl's k2 are one formula."""
    logp, ref, _, mask, *_ = random_batch()
    logp = logp.detach()
    delta = torch.where(mask, ref - logp, 0.0)
    torch.testing.assert_close(kl_per_token(delta, "mse"), kl_per_token(delta, "k2"))
    torch.testing.assert_close(kl_per_token(delta, "k2"), 0.5 * delta ** 2)


@pytest.mark.parametrize("kl_type", KL_TYPES)
def test_estimators_zero_where_the_policy_is_the_reference(kl_type):
    logp, _, mask, N, beta = kl_batch()
    loss, _ = kl_term(logp, logp.detach(), mask, N, beta, kl_type)
    assert loss.item() == 0.0


def test_k3_is_the_default_and_the_present_behaviour():
    assert AlgoConfig().kl_type == "k3"
    out = oreal_loss(*hand_batch(), mode="bc")
    assert out["kl"].item() == pytest.approx(KL_HAND, abs=1e-12)
    logp, ref, mask, N, beta = kl_batch()
    torch.testing.assert_close(kl_k3_term(logp, ref, mask, N, beta)[0], kl_term(logp, ref, mask, N, beta, "k3")[0])


@pytest.mark.parametrize("kl_type", KL_TYPES)
def test_kl_type_reaches_the_loss_finite_differences(kl_type):
    """The whole loss with each estimator: its gradient equals central differences of the
    loss's own value (the policy terms' value is constant on-policy only for the negatives,
    so the check runs in mode reinforce, whose value is its objective)."""
    logp, ref, rm, mask, r, A = random_batch()

    def loss_of(x):
        return oreal_loss(x, ref, rm, mask, r, A, mode="reinforce", beta=0.3, kl_type=kl_type)["loss"]

    (grad,) = torch.autograd.grad(loss_of(logp), logp)
    torch.testing.assert_close(grad, central_differences(loss_of, logp), atol=1e-8, rtol=1e-6)
    out = oreal_loss(logp, ref, rm, mask, r, A, mode="reinforce", beta=0.3, kl_type=kl_type)
    N = mask.sum().to(F64)
    torch.testing.assert_close(out["kl"], kl_term(logp, ref, mask.bool(), N, 0.3, kl_type)[0].detach())


def test_kl_types_differ_on_the_same_batch():
    logp, ref, mask, N, beta = kl_batch()
    values = {t: kl_term(logp, ref, mask, N, beta, t)[0].item() for t in KL_TYPES}
    assert len({round(v, 9) for v in values.values()}) == 3  # k1, k2 = mse, k3


def test_bad_kl_type_and_k1_to_pi_old_are_refused_by_name():
    with pytest.raises(ValueError, match="algo.kl_type"):
        AlgoConfig(kl_type="kl")
    with pytest.raises(ValueError, match="algo.kl_type=k1 with algo.kl_target=old"):
        AlgoConfig(kl_type="k1", kl_target="old")
    AlgoConfig(kl_type="k1", kl_target="old", beta=0.0)  # no KL term: nothing to refuse
    with pytest.raises(ValueError, match="algo.kl_type"):
        kl_per_token(torch.zeros(1), "k4")
