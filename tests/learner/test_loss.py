"""Policy loss (learner/loss.py): hand-computed values, finite differences, masking, DP sharding."""
import math

import pytest
import torch

from learner.loss import (
    ADVANTAGE_ESTIMATORS,
    MODES,
    gather_logprobs,
    grpo_advantages,
    kl_k3_term,
    negative_term,
    oreal_loss,
    positive_bc_term,
    reinforce_term,
    response_mask,
    rloo_advantages,
)
from reward_model.loss import WeightRule, token_weights

F64 = torch.float64
NAN, INF, LN3 = float("nan"), float("inf"), math.log(3)


# --------------------------------------------------------------------------- advantages
def test_rloo_hand_example():
    # K=4, one correct: A+ = 1 - (-1-1-1)/3 = 2 ; A- = -1 - (1-1-1)/3 = -2/3
    A = rloo_advantages(torch.tensor([[1.0, -1.0, -1.0, -1.0]]))
    torch.testing.assert_close(A, torch.tensor([[2.0, -2 / 3, -2 / 3, -2 / 3]]))


@pytest.mark.parametrize("K", [2, 4, 16])
def test_rloo_closed_forms(K):
    for n_correct in range(1, K):
        r = torch.tensor([[1.0] * n_correct + [-1.0] * (K - n_correct)])
        A, p = rloo_advantages(r)[0], n_correct / K
        torch.testing.assert_close(A[0].item(), 2 * K * (1 - p) / (K - 1))   # A+
        torch.testing.assert_close(A[-1].item(), -2 * K * p / (K - 1))       # A-
    # all correct / all wrong: no signal
    assert rloo_advantages(torch.ones(1, K)).abs().max() == 0
    assert rloo_advantages(-torch.ones(1, K)).abs().max() == 0


def test_rloo_needs_two_samples():
    with pytest.raises(ValueError):
        rloo_advantages(torch.ones(3, 1))


def test_grpo_hand_example_unbiased_std():
    # r = [1,-1,-1,-1]: mean -0.5; unbiased var = (1.5^2 + 3 * 0.5^2) / 3 = 1 -> std 1
    A = grpo_advantages(torch.tensor([[1.0, -1.0, -1.0, -1.0], [1.0, 1.0, 1.0, 1.0]]))
    torch.testing.assert_close(A, torch.tensor([[1.5, -0.5, -0.5, -0.5], [0.0, 0.0, 0.0, 0.0]]))


def test_advantage_registry():
    assert ADVANTAGE_ESTIMATORS == {"rloo": rloo_advantages, "grpo": grpo_advantages}


# --------------------------------------------------------------------------- hand-computed batch
def hand_batch():
    """S=2, T=3. Sequence 0 positive (r=+1, A=1.5), 3 tokens; sequence 1 negative (r=-1,
    A=-0.5), 2 tokens + 1 pad holding nan/inf garbage. N+ = 3, N- = 2, N = 5.

    delta = ref - logp: seq0 [0, 1, 0], seq1 [-1, 0]; k3 = e^d - d - 1:
      e - 2 = 0.718281828459 and e^-1 = 0.367879441171 -> sum 1.086161269630
      KL = 0.01 * 1.086161269630 / 5 = 0.002172322539
    RM scores w: seq0 [ln3, ln3, -2 ln3] -> wbar [ln3, ln3, 0] -> q [3/4, 3/4, 1/2]
                 -> w+ [1/2, 1/2, 0];   seq1 [-ln3, ln3] -> wbar [-ln3, 0] -> q [1/4, 1/2]
                 -> w- [1/2, 0].
    """
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -3.0, NAN]], dtype=F64, requires_grad=True)
    ref = torch.tensor([[-1.0, -1.0, -0.5], [-2.0, -3.0, INF]], dtype=F64)
    rm = torch.tensor([[LN3, LN3, -2 * LN3], [-LN3, LN3, NAN]], dtype=F64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logp, ref, rm, mask, torch.tensor([1.0, -1.0]), torch.tensor([1.5, -0.5])


KL_HAND = 0.002172322539

# mode: (pos, neg)
#  reinforce: pos = -(+1)(-1-2-0.5)/5 = 0.7 ; neg = -(-1)(-1-3)/5 = -0.8
#  shaped:    pos = -(1.5)(-3.5)/5 = 1.05   ; neg = -(-0.5)(-4)/5 = -0.4
#  bc:        pos = 1.5 (1+2+0.5)/3 = 1.75  ; neg = -0.5 (-0.5)(1+1)/2 = 0.25
#  oreal:     pos = 1.5 (0.5*1 + 0.5*2 + 0*0.5)/3 = 0.75 ; neg = -0.5 (-0.5)(0.5 + 0)/2 = 0.0625
HAND = {"reinforce": (0.7, -0.8), "shaped": (1.05, -0.4), "bc": (1.75, 0.25), "oreal": (0.75, 0.0625)}


@pytest.mark.parametrize("mode", list(HAND))
def test_hand_values(mode):
    out = oreal_loss(*hand_batch(), mode=mode)
    pos, neg = HAND[mode]
    for key, want in [("pos", pos), ("neg", neg), ("kl", KL_HAND), ("loss", pos + neg + KL_HAND)]:
        assert out[key].item() == pytest.approx(want, abs=1e-9), key
    assert (out["n_pos_tokens"].item(), out["n_neg_tokens"].item()) == (3, 2)
    assert (out["n_pos_seqs"].item(), out["n_neg_seqs"].item()) == (1, 1)
    assert out["loss"].requires_grad and not out["pos"].requires_grad


def test_hand_weight_means():
    out = oreal_loss(*hand_batch(), mode="oreal")
    assert out["w_pos_mean"].item() == pytest.approx(1 / 3)    # (1/2 + 1/2 + 0) / 3
    assert out["w_neg_mean"].item() == pytest.approx(1 / 4)    # (1/2 + 0) / 2
    out = oreal_loss(*hand_batch(), mode="bc")
    assert out["w_pos_mean"].item() == out["w_neg_mean"].item() == 1.0


def test_hand_weight_temperature():
    # algo.rm_weight_temperature = 1/2: w+ [4/5, 4/5, 0], w- [4/5, 0] (q = sigmoid(wbar / T)), so
    # pos = 1.5 (0.8*1 + 0.8*2 + 0)/3 = 1.2 and neg = 0.0625 * 0.8/0.5 = 0.1; KL unchanged.
    out = oreal_loss(*hand_batch(), mode="oreal", weight_rule=WeightRule(temperature=0.5))
    assert out["w_pos_mean"].item() == pytest.approx(1.6 / 3)
    assert out["w_neg_mean"].item() == pytest.approx(0.4)
    for key, want in [("pos", 1.2), ("neg", 0.1), ("kl", KL_HAND)]:
        assert out[key].item() == pytest.approx(want, abs=1e-9), key


def test_hand_pos_weight_one():
    # pos_mult_adv=False (paper prose): pos = (1 + 2 + 0.5) / 3 = 1.166666666667
    out = oreal_loss(*hand_batch(), mode="bc", pos_mult_adv=False)
    assert out["pos"].item() == pytest.approx(3.5 / 3)
    assert out["neg"].item() == pytest.approx(0.25)


def test_hand_gradient_oreal():
    # d pos / d logp_0t = -A+ w+_t / N+ = -1.5 * 0.5 / 3 = -0.25 (t=0,1), 0 (t=2)
    # d neg / d logp_10 = -eta A- w-_0 / N- = -0.5 * -0.5 * 0.5 / 2 = 0.0625; 0 at t=1
    # d KL / d logp = beta (1 - e^delta) / N = 0.002 (1 - e^delta):
    #   seq0 t=1: 0.002 (1 - e) = -0.003436563657 ; seq1 t=0: 0.002 (1 - e^-1) = 0.001264241118
    logp, *rest = hand_batch()
    oreal_loss(logp, *rest, mode="oreal")["loss"].backward()
    want = torch.tensor([[-0.25, -0.253436563657, 0.0], [0.063764241118, 0.0, 0.0]], dtype=F64)
    torch.testing.assert_close(logp.grad, want, atol=1e-11, rtol=0)


def test_hand_gradient_bc_and_shaped():
    # bc:     seq0: -1.5/3 = -0.5 (+KL) ; seq1: -0.5 * -0.5 / 2 = 0.125 (+KL)
    # shaped: seq0: -1.5/5 = -0.3 (+KL) ; seq1: 0.5/5 = 0.1 (+KL)
    kl = torch.tensor([[0.0, -0.003436563657, 0.0], [0.001264241118, 0.0, 0.0]], dtype=F64)
    for mode, g0, g1 in [("bc", -0.5, 0.125), ("shaped", -0.3, 0.1)]:
        logp, *rest = hand_batch()
        oreal_loss(logp, *rest, mode=mode)["loss"].backward()
        want = torch.tensor([[g0, g0, g0], [g1, g1, 0.0]], dtype=F64) + kl
        torch.testing.assert_close(logp.grad, want, atol=1e-11, rtol=0)


# --------------------------------------------------------------------------- random batches
def random_batch(S=6, T=9, seed=0):
    """Contiguous response spans at random offsets (prompt columns, then padding), float64."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, 3, (S,), generator=g)
    length = torch.randint(1, T - 3, (S,), generator=g)
    j = torch.arange(T)
    mask = (j >= start[:, None]) & (j < (start + length)[:, None])
    logp = -torch.rand(S, T, generator=g, dtype=F64) * 3
    ref = logp.detach() + 0.5 * torch.randn(S, T, generator=g, dtype=F64)
    rm = 2 * torch.randn(S, T, generator=g, dtype=F64)
    rewards = torch.tensor([1.0, -1.0] * (S // 2))
    advantages = torch.where(rewards > 0, 1.0 + torch.rand(S, generator=g), -torch.rand(S, generator=g))
    return logp.requires_grad_(), ref, rm, mask, rewards, advantages


def reference_objective(logp, ref, rm, mask, rewards, A, mode, eta=0.5, beta=0.01, pos_mult_adv=True):
    """The objective written out plainly, with rho replaced by log pi: same gradient."""
    m = mask.to(F64)
    pos = (rewards > 0).to(F64)[:, None] * m
    neg = m - pos
    N_pos, N_neg = pos.sum(), neg.sum()
    delta = (ref - logp) * m
    kl = beta * ((delta.exp() - delta - 1) * m).sum() / (N_pos + N_neg)
    if mode in ("reinforce", "shaped"):
        R = (rewards if mode == "reinforce" else A)[:, None]
        return -(R * logp * m).sum() / (N_pos + N_neg) + kl
    w_pos, w_neg = token_weights(rm, mask) if mode == "oreal" else (torch.ones_like(m),) * 2
    A_pos = A if pos_mult_adv else torch.ones_like(A)
    bc = (A_pos[:, None] * w_pos * -logp * pos).sum() / N_pos
    shaped_neg = -eta * (A[:, None] * w_neg * logp * neg).sum() / N_neg
    return bc + shaped_neg + kl


def central_differences(f, x, eps=1e-6):
    grad = torch.zeros_like(x)
    flat = x.detach().clone().view(-1)
    for i in range(flat.numel()):
        hi, lo = flat.clone(), flat.clone()
        hi[i] += eps
        lo[i] -= eps
        grad.view(-1)[i] = (f(hi.view_as(x)) - f(lo.view_as(x))) / (2 * eps)
    return grad


@pytest.mark.parametrize("mode,pos_mult_adv", [(m, True) for m in MODES] + [("oreal", False)])
def test_finite_differences_full_loss(mode, pos_mult_adv):
    logp, ref, rm, mask, r, A = random_batch()
    out = oreal_loss(logp, ref, rm, mask, r, A, mode=mode, pos_mult_adv=pos_mult_adv)
    (grad,) = torch.autograd.grad(out["loss"], logp)
    fd = central_differences(
        lambda x: reference_objective(x, ref, rm, mask, r, A, mode, pos_mult_adv=pos_mult_adv), logp)
    torch.testing.assert_close(grad, fd, atol=1e-8, rtol=1e-6)


def test_gradcheck_terms():
    logp, ref, rm, mask, r, A = random_batch()
    mask = mask.bool()
    w = torch.rand(logp.shape, dtype=F64)
    N = torch.tensor(7.0, dtype=F64)
    assert torch.autograd.gradcheck(lambda x: positive_bc_term(x, A, w, mask, N)[0], (logp,))
    assert torch.autograd.gradcheck(lambda x: reinforce_term(x, A, mask, N)[0], (logp,))
    assert torch.autograd.gradcheck(lambda x: kl_k3_term(x, ref, mask, N, 0.3)[0], (logp,))


def test_rho_value_one_gradient_log_pi():
    """The negative term's value does not depend on log pi (rho = 1), its gradient is that
    of -eta sum A- w- log pi / N-."""
    logp, _, _, mask, _, A = random_batch()
    mask = mask.bool()
    w = torch.rand(logp.shape, dtype=F64)
    N, eta = torch.tensor(5.0, dtype=F64), 0.5
    loss, _ = negative_term(logp, A, w, mask, N, eta)
    loss_moved, _ = negative_term(logp.detach() - 1.0, A, w, mask, N, eta)
    want_value = -eta * (A[:, None] * w * mask).sum() / N
    torch.testing.assert_close(loss.detach(), want_value)
    torch.testing.assert_close(loss_moved, want_value)
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, -eta * A[:, None] * w * mask / N)
    # rho itself: value 1, d rho / d logp = 1
    x = torch.tensor([-0.3, -2.0], dtype=F64, requires_grad=True)
    rho = torch.exp(x - x.detach())
    rho.sum().backward()
    assert rho.tolist() == [1.0, 1.0] and x.grad.tolist() == [1.0, 1.0]


def test_negatives_pushed_down_positives_up():
    logp, ref, rm, mask, r, A = random_batch()
    out = oreal_loss(logp, logp.detach(), rm, mask, r, A, mode="bc")    # no KL pull
    (grad,) = torch.autograd.grad(out["loss"], logp)
    step = -grad                                                       # gradient descent
    pos = mask & (r > 0)[:, None]
    neg = mask & (r <= 0)[:, None]
    assert (step[pos] > 0).all() and (step[neg] < 0).all()


def test_zero_rm_scores_only_kl_has_gradient():
    logp, ref, _, mask, r, A = random_batch()
    out = oreal_loss(logp, ref, torch.zeros_like(logp), mask, r, A, mode="oreal")
    assert out["pos"].item() == out["neg"].item() == 0.0
    assert out["w_pos_mean"].item() == out["w_neg_mean"].item() == 0.0
    (grad,) = torch.autograd.grad(out["loss"], logp)
    N = mask.sum().to(F64)
    (kl_grad,) = torch.autograd.grad(kl_k3_term(logp, ref, mask.bool(), N, 0.01)[0], logp)
    torch.testing.assert_close(grad, kl_grad)
    assert grad.abs().max() > 0


@pytest.mark.parametrize("mode", list(MODES))
def test_padding_never_contributes(mode):
    logp, ref, rm, mask, r, A = random_batch()
    out = oreal_loss(logp, ref, rm, mask, r, A, mode=mode)
    (grad,) = torch.autograd.grad(out["loss"], logp)
    # garbage (nan/inf) outside the mask, plus two extra padding columns
    pad = lambda x, v: torch.cat([torch.where(mask, x.detach(), v), torch.full((6, 2), v, dtype=F64)], 1)
    logp2 = pad(logp, NAN).requires_grad_()
    mask2 = torch.cat([mask, torch.zeros(6, 2, dtype=torch.bool)], 1)
    out2 = oreal_loss(logp2, pad(ref, INF), pad(rm, -INF), mask2, r, A, mode=mode)
    (grad2,) = torch.autograd.grad(out2["loss"], logp2)
    for key in ("loss", "pos", "neg", "kl"):
        torch.testing.assert_close(out2[key], out[key])
    torch.testing.assert_close(grad2[:, :-2], grad)
    assert (grad2[~mask2] == 0).all()


@pytest.mark.parametrize("mode", list(MODES))
def test_two_rank_split_equals_single_rank(mode):
    """Each half uses the global counts N+, N-; the halves' losses and gradients sum to the whole."""
    logp, ref, rm, mask, r, A = random_batch(S=6)
    whole = oreal_loss(logp, ref, rm, mask, r, A, mode=mode)
    (g_whole,) = torch.autograd.grad(whole["loss"], logp)
    n_pos, n_neg = whole["n_pos_tokens"], whole["n_neg_tokens"]
    total, parts = 0.0, []
    for rows in (slice(0, 2), slice(2, 6)):                # uneven split
        part = oreal_loss(logp[rows], ref[rows], rm[rows], mask[rows], r[rows], A[rows],
                          mode=mode, n_pos_tokens=n_pos, n_neg_tokens=n_neg)
        parts.append(part)
        total = total + part["loss"]
    (g_split,) = torch.autograd.grad(total, logp)
    torch.testing.assert_close(total, whole["loss"])
    torch.testing.assert_close(g_split, g_whole)
    assert sum(p["n_pos_tokens"] for p in parts) == n_pos


def test_one_sided_batch():
    """Only the negative of the hand batch: N+ = 0, N = N- = 2 (no phantom token)."""
    logp, ref, rm, mask, r, A = hand_batch()
    rows = slice(1, 2)
    args = (logp[rows], ref[rows], rm[rows], mask[rows], r[rows], A[rows])
    # reinforce: -(-1)(-1-3)/2 = -2 ; KL = 0.01 * e^-1 / 2 = 0.001839397206
    out = oreal_loss(*args, mode="reinforce")
    assert out["pos"].item() == 0 and out["neg"].item() == pytest.approx(-2.0)
    assert out["kl"].item() == pytest.approx(0.001839397206, abs=1e-12)
    # oreal: -0.5 (-0.5)(0.5)/2 = 0.0625, as in the full batch (N- unchanged)
    assert oreal_loss(*args, mode="oreal")["neg"].item() == pytest.approx(0.0625)


def test_default_normalisers_are_local_counts():
    logp, ref, rm, mask, r, A = random_batch()
    a = oreal_loss(logp, ref, rm, mask, r, A)
    b = oreal_loss(logp, ref, rm, mask, r, A, n_pos_tokens=int(a["n_pos_tokens"]),
                   n_neg_tokens=int(a["n_neg_tokens"]))
    torch.testing.assert_close(a["loss"], b["loss"])


def test_argument_errors():
    logp, ref, rm, mask, r, A = hand_batch()
    with pytest.raises(ValueError, match="mode"):
        oreal_loss(logp, ref, rm, mask, r, A, mode="ppo")
    with pytest.raises(ValueError, match="rm_scores"):
        oreal_loss(logp, ref, None, mask, r, A, mode="oreal")
    with pytest.raises(ValueError, match="both"):
        oreal_loss(logp, ref, rm, mask, r, A, n_pos_tokens=3)
    # reinforce needs neither RM scores nor advantages
    out = oreal_loss(logp, ref, None, mask, r, None, mode="reinforce")
    assert out["loss"].item() == pytest.approx(-0.1 + KL_HAND)


# --------------------------------------------------------------------------- alignment helpers
def test_response_mask_hand_example():
    # prompt [p0 p1], response [y0 y1 y2], one pad: L = 6; columns of y0, y1, y2 are 1, 2, 3
    # second row: prompt of 3, response of 1, two pads: column 2
    m = response_mask(torch.tensor([2, 3]), torch.tensor([5, 4]), 6)
    assert m.tolist() == [[False, True, True, True, False], [False, False, True, False, False]]


def naive_logprobs(logits, input_ids):
    return torch.log_softmax(logits.float(), -1)[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)


@pytest.mark.parametrize("chunk_tokens", [3, 1024])
def test_gather_logprobs_matches_log_softmax(chunk_tokens):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 8, 11, generator=g, dtype=F64, requires_grad=True)
    ids = torch.randint(0, 11, (3, 8), generator=g)
    got = gather_logprobs(logits, ids, chunk_tokens=chunk_tokens)
    assert got.shape == (3, 7)
    want = naive_logprobs(logits, ids)
    torch.testing.assert_close(got, want.to(got.dtype))
    w = torch.randn(3, 7, dtype=got.dtype)
    (g_got,) = torch.autograd.grad((got * w).sum(), logits)
    (g_want,) = torch.autograd.grad((want * w).sum(), logits)
    torch.testing.assert_close(g_got, g_want.to(g_got.dtype), atol=1e-6, rtol=1e-5)


def test_gather_logprobs_float32_from_bf16_and_alignment():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 7, generator=g).bfloat16()
    ids = torch.randint(0, 7, (2, 5), generator=g)
    with torch.no_grad():
        got = gather_logprobs(logits, ids)
    assert got.dtype == torch.float32
    # column j is log pi(ids[:, j+1]) from the logits at position j
    s, j = 1, 2
    want = torch.log_softmax(logits[s, j].float(), -1)[ids[s, j + 1]]
    torch.testing.assert_close(got[s, j], want)


def test_gather_logprobs_gradcheck():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 5, generator=g, dtype=F64, requires_grad=True)
    ids = torch.randint(0, 5, (2, 4), generator=g)
    # float32 inside, so compare at float32 precision
    assert torch.autograd.gradcheck(lambda x: gather_logprobs(x, ids, chunk_tokens=2).double(),
                                    (logits,), eps=1e-3, atol=1e-3, rtol=1e-3)
