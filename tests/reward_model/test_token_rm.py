"""Token-level reward model (reward_model/): prefix mean, RM loss, token weights, the model."""
import copy
import math

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import learner.loss
from learner.loss import oreal_loss, response_mask
from reward_model import (
    TokenRewardModel,
    prefix_mean,
    rm_accuracy,
    sequence_score,
    token_rm_loss,
    token_weights,
)

F64 = torch.float64
NAN, LN3 = float("nan"), math.log(3)


# --------------------------------------------------------------------------- loss and weights
def test_prefix_mean_leading_and_trailing_zeros():
    w = torch.tensor([[9.0, 9.0, 1.0, 3.0, 5.0, 9.0], [2.0, 4.0, 0.0, NAN, NAN, NAN]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])
    # row 0: 1, (1+3)/2 = 2, (1+3+5)/3 = 3 ; row 1: 2, (2+4)/2 = 3, (2+4+0)/3 = 2
    want = torch.tensor([[0.0, 0.0, 1.0, 2.0, 3.0, 0.0], [2.0, 3.0, 2.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(prefix_mean(w, mask), want)
    torch.testing.assert_close(sequence_score(w, mask), torch.tensor([3.0, 2.0]))


def test_token_weights_hand_values():
    # wbar = [ln3, ln3, 0] -> q = [3/4, 3/4, 1/2] -> w+ = [1/2, 1/2, 0], w- = 0
    # wbar = [-ln3, 0]     -> q = [1/4, 1/2]      -> w- = [1/2, 0],      w+ = 0
    w = torch.tensor([[LN3, LN3, -2 * LN3], [-LN3, LN3, NAN]], dtype=F64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    w_pos, w_neg = token_weights(w, mask)
    torch.testing.assert_close(w_pos, torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]], dtype=F64))
    torch.testing.assert_close(w_neg, torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]], dtype=F64))
    assert not w_pos.requires_grad and not w_neg.requires_grad


def test_token_weights_temperature():
    # T = 1/2 (algo.rm_weight_temperature): wbar = ln3 -> q = sigmoid(2 ln3) = 9/10 -> w+ = 4/5;
    # wbar = -ln3 -> w- = 4/5; wbar = 0 stays 0 (the order of the weights is unchanged).
    w = torch.tensor([[LN3, LN3, -2 * LN3], [-LN3, LN3, NAN]], dtype=F64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    w_pos, w_neg = token_weights(w, mask, temperature=0.5)
    torch.testing.assert_close(w_pos, torch.tensor([[0.8, 0.8, 0.0], [0.0, 0.0, 0.0]], dtype=F64))
    torch.testing.assert_close(w_neg, torch.tensor([[0.0, 0.0, 0.0], [0.8, 0.0, 0.0]], dtype=F64))
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            token_weights(w, mask, temperature=bad)


def test_token_weights_zero_scores_and_token_switch():
    mask = torch.tensor([[0, 1, 1, 1, 0]])
    w_pos, w_neg = token_weights(torch.zeros(1, 5), mask)
    assert w_pos.abs().max() == 0 and w_neg.abs().max() == 0
    # score="token" (paper prose): q_t = sigmoid(w_t) of the token itself, no prefix mean.
    # w = [ln3, -ln3, 0] on the response: q = [3/4, 1/4, 1/2] -> w+ = [1/2, 0, 0], w- = [0, 1/2, 0];
    # the prefix mean would give wbar = [ln3, 0, 0] -> w+ = [1/2, 0, 0], w- = [0, 0, 0].
    ln3 = math.log(3.0)
    scores = torch.tensor([[9.0, ln3, -ln3, 0.0, 9.0]])
    w_pos, w_neg = token_weights(scores, mask, score="token")
    torch.testing.assert_close(w_pos, torch.tensor([[0.0, 0.5, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(w_neg, torch.tensor([[0.0, 0.0, 0.5, 0.0, 0.0]]))
    _, w_neg_prefix = token_weights(scores, mask)
    assert w_neg_prefix.abs().max() < 1e-6
    with pytest.raises(ValueError, match="score"):
        token_weights(scores, mask, score="bogus")


def rm_hand_batch():
    """Three sequences, S = 3 (garbage outside the mask).
    0: response [ln3, ln3], label 1:        wbar_n = ln3, BCE = -ln(3/4) = 0.287682072452
    1: response [ln3, -ln3, 2ln3, -2ln3], label 0: wbar_n = 0, BCE = ln 2 = 0.693147180560
    2: response [0, 2ln3] after 2 prompt columns, label 0: wbar_n = ln3, BCE = -ln(1/4) = 1.386294361120
    loss = (0.287682072452 + 0.693147180560 + 1.386294361120) / 3 = 0.789041204711
    """
    w = torch.tensor([[NAN, LN3, LN3, NAN], [LN3, -LN3, 2 * LN3, -2 * LN3], [NAN, NAN, 0.0, 2 * LN3]],
                     dtype=F64, requires_grad=True)
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 1, 1]])
    return w, mask, torch.tensor([1, 0, 0])


def test_token_rm_loss_hand_value_and_gradient():
    w, mask, labels = rm_hand_batch()
    loss, metrics = token_rm_loss(w, mask, labels)
    assert loss.item() == pytest.approx(0.789041204711, abs=1e-11)
    # right: seq 0 (wbar > 0, label 1); undecided: seq 1 (wbar = 0); wrong: seq 2
    assert metrics["accuracy"].item() == pytest.approx(1 / 3)
    assert metrics["n_seqs"].item() == 3
    # d loss / d w_k = (sigmoid(wbar_n) - y) / (n S):
    #   seq 0: (3/4 - 1) / (2*3) = -1/24 ; seq 1: (1/2 - 0) / (4*3) = 1/24 ; seq 2: (3/4) / (2*3) = 1/8
    loss.backward()
    want = torch.tensor([[0, -1 / 24, -1 / 24, 0], [1 / 24] * 4, [0, 0, 1 / 8, 1 / 8]], dtype=F64)
    torch.testing.assert_close(w.grad, want)


def test_smoothed_targets_hand_value_and_gradient():
    """algo.rm_label_smoothing=0.2: targets 0.9 / 0.1; the gradient (sigmoid(wbar_n) - y) / (n S)
    vanishes at sigmoid = 0.9 instead of growing the score for ever."""
    from reward_model.loss import smoothed

    w, mask, labels = rm_hand_batch()
    y = smoothed(labels.to(F64), 0.2)
    assert y.tolist() == pytest.approx([0.9, 0.1, 0.1])
    loss, _ = token_rm_loss(w, mask, y)
    # sigmoid(wbar_n) = 3/4, 1/2, 3/4: BCE = -(y ln p + (1 - y) ln(1 - p)), averaged over 3
    p = torch.tensor([0.75, 0.5, 0.75], dtype=F64)
    want = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    assert loss.item() == pytest.approx(want.item(), abs=1e-12)
    loss.backward()
    want_grad = torch.tensor([[0, (0.75 - 0.9) / 6, (0.75 - 0.9) / 6, 0], [(0.5 - 0.1) / 12] * 4,
                              [0, 0, (0.75 - 0.1) / 6, (0.75 - 0.1) / 6]], dtype=F64)
    torch.testing.assert_close(w.grad, want_grad)
    assert torch.equal(smoothed(labels, 0.0), labels)
    # the accuracy the pair path logs from the same call reads a soft label as its class
    assert token_rm_loss(w.detach(), mask, y)[1]["accuracy"].item() == pytest.approx(1 / 3)


def test_token_l2_hand_value_and_gradient():
    """algo.rm_token_l2=0.5 adds 0.5 * mean_t w_t^2 to each sequence's BCE: mean squares ln3^2,
    (1 + 1 + 4 + 4)/4 ln3^2 and (0 + 4)/2 ln3^2, so 0.5 * 5.5 ln3^2 / 3 on top of the BCE's
    0.789041204711; the gradient gains 2 * 0.5 * w_k / (n S) on each response token (none
    outside the mask, where the scores are NaN)."""
    w, mask, labels = rm_hand_batch()
    loss, _ = token_rm_loss(w, mask, labels, token_l2=0.5)
    assert loss.item() == pytest.approx(0.789041204711 + 0.5 * 5.5 * LN3 ** 2 / 3, abs=1e-11)
    loss.backward()
    bce_grad = torch.tensor([[0, -1 / 24, -1 / 24, 0], [1 / 24] * 4, [0, 0, 1 / 8, 1 / 8]], dtype=F64)
    n = mask.sum(-1, keepdim=True).to(F64)
    l2_grad = torch.where(mask.bool(), 2 * 0.5 * w.detach() / (n * 3), torch.zeros((), dtype=F64))
    torch.testing.assert_close(w.grad, bce_grad + l2_grad)
    assert token_rm_loss(w.detach(), mask, labels, token_l2=0.0)[0].item() == pytest.approx(0.789041204711, abs=1e-11)


def test_token_l2_prefers_equal_scores():
    """For one mean score, the penalty is least when the scores are equal: the loss of [1, 1]
    is below that of [3, -1] (same mean, same BCE) by 0.1 * (5 - 1)."""
    mask, labels = torch.ones(2, 2), torch.tensor([1, 1])
    w = torch.tensor([[1.0, 1.0], [3.0, -1.0]], dtype=F64)
    flat, spread = (token_rm_loss(w[i:i + 1], mask[i:i + 1], labels[i:i + 1], token_l2=0.1)[0].item() for i in (0, 1))
    assert spread - flat == pytest.approx(0.1 * (5 - 1), abs=1e-12)


def test_token_rm_loss_gradcheck():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 6, generator=g, dtype=F64, requires_grad=True)
    mask = torch.tensor([[1] * 6, [0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1], [1, 1, 0, 0, 0, 0]])
    labels = torch.tensor([1, 0, 1, 0])
    assert torch.autograd.gradcheck(lambda x: token_rm_loss(x, mask, labels)[0], (w,))
    assert torch.autograd.gradcheck(lambda x: token_rm_loss(x, mask, labels, token_l2=0.3)[0], (w,))


def test_token_rm_loss_global_count_split_and_empty_rows():
    w, mask, labels = rm_hand_batch()
    whole, _ = token_rm_loss(w, mask, labels)
    halves = [token_rm_loss(w[r], mask[r], labels[r], n_seqs=3)[0] for r in (slice(0, 1), slice(1, 3))]
    torch.testing.assert_close(halves[0] + halves[1], whole)
    # a padding row (no response tokens) changes nothing
    w_pad = torch.cat([w.detach(), torch.zeros(1, 4, dtype=F64)])
    mask_pad = torch.cat([mask, torch.zeros(1, 4, dtype=mask.dtype)])
    padded, metrics = token_rm_loss(w_pad, mask_pad, torch.tensor([1, 0, 0, 1]))
    torch.testing.assert_close(padded, whole.detach())
    assert metrics["n_seqs"].item() == 3
    assert rm_accuracy(w_pad, mask_pad, torch.tensor([1, 0, 0, 1])).item() == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def qwen2():
    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=128, vocab_size=128,
                         max_position_embeddings=64)
    return Qwen2ForCausalLM(config).eval()


@pytest.fixture
def rm(qwen2):
    return TokenRewardModel.from_pretrained(copy.deepcopy(qwen2))


def batch(seed=0, S=3, L=10):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 128, (S, L), generator=g)
    prompt_lens, total_lens = torch.tensor([3, 2, 4]), torch.tensor([10, 7, 8])
    attention = torch.arange(L) < total_lens[:, None]
    return ids, attention.long(), response_mask(prompt_lens, total_lens, L)


def test_structure_zero_head(rm, qwen2):
    names = {n for n, _ in rm.named_parameters()}
    assert "head.weight" in names and not any("lm_head" in n for n in names)
    assert rm.head.weight.shape == (1, 64) and rm.head.bias is None
    assert rm.head.weight.abs().max() == 0
    assert rm.backbone.__class__.__name__ == "Qwen2Model"


def test_zero_head_scores_and_weights_zero(rm):
    ids, attention, mask = batch()
    scores = rm.response_scores(ids, attention, mask)
    assert scores.shape == (3, 9) and scores.abs().max() == 0
    w_pos, w_neg = token_weights(scores, mask)
    assert w_pos.abs().max() == 0 and w_neg.abs().max() == 0
    # so in the policy loss only the KL term has gradient
    g = torch.Generator().manual_seed(5)
    logp = (-torch.rand(3, 9, generator=g)).requires_grad_()
    ref = logp.detach() + 0.3 * torch.randn(3, 9, generator=g)
    out = oreal_loss(logp, ref, scores, mask, torch.tensor([1.0, -1.0, -1.0]),
                     torch.tensor([1.0, -0.5, -0.5]))
    assert out["pos"].item() == 0 and out["neg"].item() == 0
    (grad,) = torch.autograd.grad(out["loss"], logp)
    kl, _ = learner.loss.kl_k3_term(logp, ref, mask, mask.sum().float(), beta=0.01)
    (kl_grad,) = torch.autograd.grad(kl, logp)
    torch.testing.assert_close(grad, kl_grad)


def test_rm_loss_gradient_reaches_head_then_backbone(rm):
    ids, attention, mask = batch()
    labels = torch.tensor([1, 0, 1])
    loss, _ = token_rm_loss(rm.response_scores(ids, attention, mask), mask, labels)
    loss.backward()
    assert rm.head.weight.grad.abs().max() > 0
    # with a zero head, d loss / d hidden = 0: the backbone gets no gradient yet
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in rm.backbone.parameters())
    with torch.no_grad():
        rm.head.weight -= 1.0 * rm.head.weight.grad
    rm.zero_grad()
    token_rm_loss(rm.response_scores(ids, attention, mask), mask, labels)[0].backward()
    assert rm.backbone.embed_tokens.weight.grad.abs().max() > 0


def test_score_alignment_causal(rm):
    """Column j (the score of token j+1) sees tokens 0..j only."""
    torch.nn.init.normal_(rm.head.weight)
    ids, attention, _ = batch(L=8)
    attention = torch.ones_like(attention)
    with torch.no_grad():
        base = rm.response_scores(ids, attention)
        for k in range(1, 8):                       # perturb token k
            ids2 = ids.clone()
            ids2[:, k] = (ids2[:, k] + 1) % 128
            moved = rm.response_scores(ids2, attention)
            torch.testing.assert_close(moved[:, :k], base[:, :k])     # scores of tokens <= k
            if k < 7:
                assert (moved[:, k] - base[:, k]).abs().min() > 0     # score of token k+1 sees it
        # and column j is the full-sequence score at position j
        torch.testing.assert_close(base, rm(ids, attention)[:, :-1])


def test_right_padding_does_not_change_scores(rm):
    torch.nn.init.normal_(rm.head.weight)
    ids, attention, mask = batch()
    with torch.no_grad():
        padded = rm.response_scores(ids, attention, mask)
        for s in range(3):
            n = int(attention[s].sum())
            alone = rm.response_scores(ids[s:s + 1, :n], attention[s:s + 1, :n])
            torch.testing.assert_close(padded[s, :n - 1][mask[s, :n - 1]], alone[0][mask[s, :n - 1]],
                                       atol=1e-5, rtol=1e-5)
        assert (padded[~mask] == 0).all()


def test_from_path_and_save_roundtrip(qwen2, tmp_path):
    qwen2.save_pretrained(tmp_path / "policy")
    rm = TokenRewardModel.from_pretrained(tmp_path / "policy")
    assert rm.head.weight.abs().max() == 0
    torch.testing.assert_close(rm.backbone.embed_tokens.weight, qwen2.model.embed_tokens.weight)
    torch.nn.init.normal_(rm.head.weight)
    rm.save_pretrained(tmp_path / "rm")
    again = TokenRewardModel.from_pretrained(tmp_path / "rm")
    ids, attention, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(again(ids, attention), rm(ids, attention))
