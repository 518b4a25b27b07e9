"""The engines' log-probs against the learner's (learner/correction.py): the mismatch metric,
truncated importance sampling weights, and the corrected policy terms' value and gradient by
hand and by finite differences; how ranks merge the metrics (learner/group.py)."""
import math

import pytest
import torch

from learner.config import AlgoConfig
from learner.correction import engine_correction
from learner.loss import MODES, negative_term, oreal_loss, positive_bc_term, reinforce_term
from test_loss import F64, KL_HAND, central_differences, hand_batch, random_batch

NAN = float("nan")


def test_mismatch_and_weights_by_hand():
    """log ratio = logp_learner - logp_engine: [0.5, -1.0, unknown (NaN engine)], a padding
    column never counts. cap 1.5: e^0.5 = 1.6487 is clipped, e^-1 = 0.3679 kept, unknown 1."""
    logp = torch.tensor([[-1.0, -2.0, -0.5, NAN]], dtype=F64, requires_grad=True)
    engine = torch.tensor([[-1.5, -1.0, NAN, 9.0]], dtype=F64)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w, m = engine_correction(logp, engine, mask, 1.5)
    assert m["rollout/logprob_mismatch_sum"].item() == pytest.approx(1.5)
    assert m["rollout/logprob_mismatch_n"].item() == 2
    assert m["rollout/logprob_mismatch_max"].item() == pytest.approx(1.0)
    assert m["learner/tis_clipped_n"].item() == 1
    assert m["learner/tis_weight_sum"].item() == pytest.approx(1.5 + math.exp(-1) + 1.0)
    torch.testing.assert_close(w[:, :3], torch.tensor([[1.5, math.exp(-1), 1.0]], dtype=F64))
    assert not w.requires_grad  # detached: a weight, not a path for the gradient
    # no cap: the metric only; no engine log-probs: nothing
    w0, m0 = engine_correction(logp, engine, mask, None)
    assert w0 is None and set(m0) == {f"rollout/logprob_mismatch_{k}" for k in ("sum", "n", "max")}
    assert engine_correction(logp, None, mask, None) == (None, {})
    assert engine_correction(logp, None, torch.zeros_like(mask), 2.0) == (None, {})  # a placeholder batch
    with pytest.raises(ValueError, match="rollout.behaviour_logprobs"):
        engine_correction(logp, None, mask, 2.0)


def test_ratio_overflow_is_clipped_not_inf():
    logp = torch.tensor([[0.0, -1.0]])
    engine = torch.tensor([[-200.0, -1.0]])  # e^200 overflows float32
    w, m = engine_correction(logp, engine, torch.ones(1, 2), 3.0)
    assert w.tolist() == [[3.0, 1.0]] and m["learner/tis_clipped_n"].item() == 1


# hand_batch: seq 0 positive (A+ = 1.5, logp [-1, -2, -0.5], N+ = 3), seq 1 negative
# (A- = -0.5, logp [-1, -3], N- = 2, a NaN pad); TIS weights below (7.0 sits on the pad).
TIS = torch.tensor([[2.0, 0.25, 1.0], [0.25, 3.0, 7.0]], dtype=F64)
# bc:        pos = 1.5 (2*1 + 0.25*2 + 1*0.5) / 3            = 1.5
#            neg = -0.5 * -0.5 * (0.25 + 3.0) / 2            = 0.40625
# reinforce: pos = -(+1)(2*-1 + 0.25*-2 + 1*-0.5) / 5        = 0.6
#            neg = -(-1)(0.25*-1 + 3*-3) / 5                 = -1.85
TIS_HAND = {"bc": (1.5, 0.40625), "reinforce": (0.6, -1.85)}
# gradients: bc seq0 -A+ tis / N+ = -0.5 tis; seq1 -eta A- tis / N- = 0.125 tis;
# reinforce: seq0 -r tis / N = -tis / 5, seq1 +tis / 5; plus the KL's, which TIS leaves alone.
KL_GRAD = torch.tensor([[0.0, -0.003436563657, 0.0], [0.001264241118, 0.0, 0.0]], dtype=F64)


@pytest.mark.parametrize("mode", list(TIS_HAND))
def test_corrected_terms_value_and_gradient_by_hand(mode):
    logp, *rest = hand_batch()
    out = oreal_loss(logp, *rest, mode=mode, tis_weights=TIS)
    pos, neg = TIS_HAND[mode]
    assert out["pos"].item() == pytest.approx(pos, abs=1e-12)
    assert out["neg"].item() == pytest.approx(neg, abs=1e-12)
    assert out["kl"].item() == pytest.approx(KL_HAND, abs=1e-12)  # the KL is not weighted
    out["loss"].backward()
    g0, g1 = (-0.5, 0.125) if mode == "bc" else (-0.2, 0.2)
    want = torch.tensor([[g0 * 2.0, g0 * 0.25, g0 * 1.0], [g1 * 0.25, g1 * 3.0, 0.0]], dtype=F64) + KL_GRAD
    torch.testing.assert_close(logp.grad, want, atol=1e-11, rtol=0)


def test_weights_of_one_change_nothing():
    for mode in MODES:
        a = oreal_loss(*hand_batch(), mode=mode)
        b = oreal_loss(*hand_batch(), mode=mode, tis_weights=torch.ones(2, 3, dtype=F64))
        for key in ("loss", "pos", "neg", "kl"):
            assert a[key].item() == b[key].item()


def weighted_objective(logp, ref, rm, mask, r, A, mode, w, beta=0.01, eta=0.5):
    """The corrected objective written out plainly (rho -> log pi; w a constant per token)."""
    m = mask.to(F64)
    pos = (r > 0).to(F64)[:, None] * m
    neg = m - pos
    N_pos, N_neg = pos.sum(), neg.sum()
    delta = (ref - logp) * m
    kl = beta * ((delta.exp() - delta - 1) * m).sum() / (N_pos + N_neg)
    if mode in ("reinforce", "shaped"):
        R = (r if mode == "reinforce" else A)[:, None]
        return -(R * w * logp * m).sum() / (N_pos + N_neg) + kl
    from reward_model.loss import token_weights

    w_pos, w_neg = token_weights(rm, mask) if mode == "oreal" else (torch.ones_like(m),) * 2
    bc = (A[:, None] * w_pos * w * -logp * pos).sum() / N_pos
    return bc - eta * (A[:, None] * w_neg * w * logp * neg).sum() / N_neg + kl


@pytest.mark.parametrize("mode", list(MODES))
def test_corrected_loss_gradient_finite_differences(mode):
    logp, ref, rm, mask, r, A = random_batch()
    w = 0.2 + 2.8 * torch.rand(logp.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    out = oreal_loss(logp, ref, rm, mask, r, A, mode=mode, tis_weights=w)
    (grad,) = torch.autograd.grad(out["loss"], logp)
    fd = central_differences(lambda x: weighted_objective(x, ref, rm, mask, r, A, mode, w), logp)
    torch.testing.assert_close(grad, fd, atol=1e-8, rtol=1e-6)


def test_terms_gradcheck_with_weights():
    """The terms whose value is their objective (the on-policy negative term's value is the
    constant sum of its weights: its gradient is checked by hand and against the objective above)."""
    logp, ref, rm, mask, r, A = random_batch()
    mask = mask.bool()
    w = torch.rand(logp.shape, dtype=F64) + 0.5
    N = torch.tensor(7.0, dtype=F64)
    assert torch.autograd.gradcheck(lambda x: positive_bc_term(x, A, w, mask, N, tis=w * 2)[0], (logp,))
    assert torch.autograd.gradcheck(lambda x: reinforce_term(x, A, mask, N, tis=w)[0], (logp,))
    # the negative term's value: -eta sum tis A- w- / N-, whatever log pi
    value = negative_term(logp, A, w, mask, N, 0.5, tis=w * 3)[0]
    torch.testing.assert_close(value.detach(), -0.5 * (A[:, None] * w * w * 3 * mask).sum() / N)


def test_off_policy_tis_is_the_truncated_full_ratio():
    """One step off-policy the learner's logp is pi_old of the update, one version past the
    sampler: the TIS weight then truncates the whole ratio pi/pi_engine. Where the ratio is
    below the cap the gradient equals the untruncated off-policy term's; above, it is capped."""
    logp = torch.tensor([[-1.0, -2.0, -0.5]], dtype=F64, requires_grad=True)
    engine = torch.tensor([[-1.5, -1.0, -3.0]], dtype=F64)  # ratios e^0.5, e^-1, e^2.5
    mask, w_neg = torch.ones(1, 3, dtype=torch.bool), torch.tensor([[1.0, 0.5, 2.0]], dtype=F64)
    A, N, eta, cap = torch.tensor([-0.8], dtype=F64), torch.tensor(3.0, dtype=F64), 0.5, 2.0
    tis, _ = engine_correction(logp, engine, mask, cap)
    (g_tis,) = torch.autograd.grad(negative_term(logp, A, w_neg, mask, N, eta, tis=tis)[0], logp)
    (g_full,) = torch.autograd.grad(negative_term(logp, A, w_neg, mask, N, eta, old_logprobs=engine)[0], logp)
    ratio = torch.exp(logp.detach() - engine)
    torch.testing.assert_close(g_full, -eta * A * ratio * w_neg / N)
    torch.testing.assert_close(g_tis, -eta * A * ratio.clamp(max=cap) * w_neg / N)
    assert torch.equal(g_tis[:, :2], g_full[:, :2]) and g_tis[0, 2] < g_full[0, 2]


def test_tis_with_an_off_policy_ratio_is_refused():
    logp, ref, rm, mask, r, A = hand_batch()
    with pytest.raises(ValueError, match="old_logprobs=None"):
        oreal_loss(logp, ref, rm, mask, r, A, old_logprobs=ref, tis_weights=TIS)


def test_tis_cap_config():
    assert AlgoConfig().tis_cap is None  # off: the paper
    assert AlgoConfig(tis_cap=2.0).tis_cap == 2.0
    for bad in (0.5, 0.0, float("nan")):
        with pytest.raises(ValueError, match="algo.tis_cap"):
            AlgoConfig(tis_cap=bad)


def test_tis_cap_turns_the_engines_logprobs_on():
    from actors.config import RolloutConfig
    from launch.config import TrainConfig

    off = RolloutConfig(behaviour_logprobs=False)
    assert TrainConfig(rollout=off).rollout.behaviour_logprobs is False
    cfg = TrainConfig(rollout=RolloutConfig(behaviour_logprobs=False), algo=AlgoConfig(tis_cap=2.0))
    assert cfg.rollout.behaviour_logprobs is True


def test_ranks_and_micro_batches_merge_sums_and_maxima():
    """`add_sums` (micro-batches) and `merge_ranks` (ranks) sum, except `*_max`; `_finalise` turns
    the sums into the logged mean mismatch and the clipped share of the trained tokens."""
    from learner.batch import GlobalCounts, add_sums
    from learner.group import _finalise, merge_ranks

    rank0: dict[str, float] = {}
    for mb in ({"rollout/logprob_mismatch_sum": 1.0, "rollout/logprob_mismatch_n": 4,
                "rollout/logprob_mismatch_max": 0.5, "learner/tis_clipped_n": 1, "learner/tis_weight_sum": 3.0},
               {"rollout/logprob_mismatch_sum": 2.0, "rollout/logprob_mismatch_n": 4,
                "rollout/logprob_mismatch_max": 0.75, "learner/tis_clipped_n": 0, "learner/tis_weight_sum": 4.0}):
        add_sums(rank0, {k: torch.tensor(float(v)) for k, v in mb.items()})
    rank0["learner/tokens"] = 8.0
    rank1 = {"rollout/logprob_mismatch_sum": 0.5, "rollout/logprob_mismatch_n": 2.0,
             "rollout/logprob_mismatch_max": 0.25, "learner/tis_clipped_n": 1.0, "learner/tis_weight_sum": 1.0,
             "learner/tokens": 2.0}
    merged = merge_ranks([rank0, rank1])
    assert merged["rollout/logprob_mismatch_max"] == 0.75 and merged["learner/tokens"] == 10.0
    out = _finalise(merged, GlobalCounts(6, 4, 2))
    assert out["rollout/logprob_mismatch"] == pytest.approx(3.5 / 10)
    assert out["rollout/logprob_mismatch_max"] == 0.75
    assert out["learner/tis_clipped_frac"] == pytest.approx(2 / 10)
    assert out["learner/tis_weight_mean"] == pytest.approx(8.0 / 10)
    assert not any(k.endswith(("_sum", "_n")) for k in out)
