"""Issue 16 in the token RM: where `rm_score=token` reads a token's score (its own position,
w(s_<=t)), the authors' topk_rescale, and the instruments that tell whether the RM learns."""
import math

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from learner.loss import response_mask
from reward_model import (
    TokenRewardModel,
    heldout_metrics,
    pair_accuracy,
    prefix_score_buckets,
    score_columns,
    token_rm_loss,
    token_weights,
    topk_rescale,
)

LN3 = math.log(3)
NAN = float("nan")


# --------------------------------------------------------------------------- rm_score=token
def test_score_columns_token_reads_each_tokens_own_position_hand_values():
    # prompt [p0 p1], response [y0 y1 y2], L = 5: the response columns are j = 1, 2, 3.
    # Per-position RM output x (position i has seen input_ids[:i+1]):
    #   x = [9 (p0), ln3 (p1), -ln3 (y0), 0 (y1), 2 ln3 (y2)]
    x = torch.tensor([[9.0, LN3, -LN3, 0.0, 2 * LN3]], dtype=torch.float64)
    mask = response_mask(torch.tensor([2]), torch.tensor([5]), 5)
    assert mask.long().tolist() == [[0, 1, 1, 1]]
    # token: y0, y1, y2 read at their own positions 2, 3, 4 -> w = [-ln3, 0, 2 ln3]
    #   q = sigmoid(w) = [1/4, 1/2, 9/10] -> w+ = [0, 0, 4/5], w- = [1/2, 0, 0]
    own = score_columns(x, "token")
    torch.testing.assert_close(own[0, 1:], torch.tensor([-LN3, 0.0, 2 * LN3], dtype=torch.float64))
    w_pos, w_neg = token_weights(own, mask, score="token")
    torch.testing.assert_close(w_pos, torch.tensor([[0.0, 0.0, 0.0, 0.8]], dtype=torch.float64))
    torch.testing.assert_close(w_neg, torch.tensor([[0.0, 0.5, 0.0, 0.0]], dtype=torch.float64))
    # prefix_mean (released configs): read at the predicting positions 1, 2, 3 -> w = [ln3, -ln3, 0]
    #   wbar = [ln3, 0, 0] -> q = [3/4, 1/2, 1/2] -> w+ = [1/2, 0, 0], w- = 0
    shifted = score_columns(x, "prefix_mean")
    w_pos, w_neg = token_weights(shifted, mask)
    torch.testing.assert_close(w_pos, torch.tensor([[0.0, 0.5, 0.0, 0.0]], dtype=torch.float64))
    assert w_neg.abs().max() == 0
    # The RM's sequence score averages the same columns: token mode mean(-ln3, 0, 2 ln3) = ln3 / 3.
    loss, _ = token_rm_loss(own, mask, torch.tensor([1.0]))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-LN3 / 3)), abs=1e-12)
    with pytest.raises(ValueError, match="rm_score"):
        score_columns(x, "own")


@pytest.fixture(scope="module")
def rm():
    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=128, max_position_embeddings=64)
    model = TokenRewardModel.from_pretrained(Qwen2ForCausalLM(config).eval())
    torch.nn.init.normal_(model.head.weight, std=1.0)  # a trained-looking head
    return model.eval()


def test_token_scores_see_their_own_token_prefix_mean_scores_do_not(rm):
    """w(s_<=t): changing y_t changes its own `token` score; the `prefix_mean` column of y_t is
    read before y_t and cannot depend on it (both in the real model, causal)."""
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    changed = ids.clone()
    changed[0, 4] = 11                       # y_t = input_ids[:, 4] -> loss column j = 3
    mask = response_mask(torch.tensor([2]), torch.tensor([6]), 6)
    with torch.no_grad():
        for rm_score, moves in (("token", True), ("prefix_mean", False)):
            a = rm.response_scores(ids, response_mask=mask, rm_score=rm_score)
            b = rm.response_scores(changed, response_mask=mask, rm_score=rm_score)
            assert (a[0, 3] != b[0, 3]).item() is moves, rm_score
            torch.testing.assert_close(a[0, :3], b[0, :3])  # earlier tokens never see y_t
        full = rm(ids)
        torch.testing.assert_close(rm.response_scores(ids, rm_score="token"), full[:, 1:])
        torch.testing.assert_close(rm.response_scores(ids), full[:, :-1])


# --------------------------------------------------------------------------- topk_rescale
def test_topk_rescale_hand_values():
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [0, 1, 1, 1, 1]]).bool()
    prob = torch.tensor([[0.9, 0.6, 0.8, 0.7, 5.0],   # k = int(4 * .5) = 2: 0.9 -> 1, 0.8 -> 0
                         [0.3, 0.3, 0.0, 0.0, 0.0],   # k = 1: a single top value -> 1
                         [9.0, 0.2, 0.4, 0.4, 0.1]])  # k = 2: tie 0.4, 0.4 -> both 1 (span 0)
    want = torch.tensor([[1.0, 0, 0, 0, 0], [1.0, 0, 0, 0, 0], [0, 0, 1.0, 1.0, 0]])
    got = topk_rescale(prob, mask, 0.5)
    assert got[1].sum() == 1.0  # which of the tied pair wins is torch.topk's choice
    got[1] = got[1].sort(descending=True).values
    torch.testing.assert_close(got, want)
    # k = int(1 * 0.5) = 0: no token weighted (the authors' code would fail here)
    assert topk_rescale(torch.tensor([[0.9]]), torch.tensor([[True]]), 0.5).sum() == 0


def test_token_weights_topk_switch_hand_values():
    # w = [ln3, 0, -ln3, ln3] -> wbar = [ln3, ln3/2, 0, ln3/4]
    #   q = [3/4, 0.634, 1/2, 0.568] (sigmoid(ln3/2) = sqrt3/(1+sqrt3), sigmoid(ln3/4) = 3^.25/(1+3^.25))
    #   w+: k = int(4 * .5) = 2 -> q = 3/4 and 0.634, scaled to 1 and 0; the rest 0
    #   w-: 1 - q = [1/4, 0.366, 1/2, 0.432], k = int(4 * .25) = 1 -> the 1/2 -> 1
    w = torch.tensor([[LN3, 0.0, -LN3, LN3]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    w_pos, w_neg = token_weights(w, mask, topk_ratios=(0.5, 0.25))
    torch.testing.assert_close(w_pos, torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(w_neg, torch.tensor([[0.0, 0.0, 1.0, 0.0]], dtype=torch.float64))


# --------------------------------------------------------------------------- instruments
def test_pair_accuracy_hand_values():
    keys = torch.tensor([0, 0, 1, 1, 2])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    # query 0: 2 > 1 right; query 1: 0 < 3 wrong; query 2 has no negative: no pair
    assert pair_accuracy(torch.tensor([2.0, 1.0, 0.0, 3.0, 9.0]), labels, keys).item() == 0.5
    # a zero head ties every pair: counted wrong, as rm_accuracy counts wbar_n = 0
    assert pair_accuracy(torch.zeros(5), labels, keys).item() == 0.0
    # all K samples of one query: 2 positives x 2 negatives, 3 of 4 ordered right (AUC)
    auc = pair_accuracy(torch.tensor([3.0, 1.0, 2.0, 0.0]), torch.tensor([1.0, 1.0, 0.0, 0.0]),
                        torch.zeros(4, dtype=torch.long))
    assert auc.item() == 0.75
    assert math.isnan(pair_accuracy(torch.ones(2), torch.ones(2), torch.zeros(2, dtype=torch.long)).item())


def test_prefix_score_buckets_hand_values():
    # row 0: n = 4 after one prompt column, w = [1, 3, 5, 7] -> wbar = [1, 2, 3, 4]: one per quarter
    # row 1: n = 2, w = [2, 4] -> wbar = [2, 3]: t=1 -> ceil(4/2) - 1 = 1, t=2 -> ceil(8/2) - 1 = 3
    # row 2: n = 8, w = 1..8 -> wbar = [1, 1.5, ..., 4.5]: two tokens per quarter
    w = torch.tensor([[9.0, 1.0, 3.0, 5.0, 7.0, 9, 9, 9], [2.0, 4.0, NAN, NAN, NAN, 9, 9, 9],
                      [1.0, 2, 3, 4, 5, 6, 7, 8]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0], [1] * 8])
    sums, counts = prefix_score_buckets(w, mask, 4)
    torch.testing.assert_close(sums, torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 0.0, 3.0],
                                                   [2.5, 4.5, 6.5, 8.5]]))
    torch.testing.assert_close(counts, torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0],
                                                     [2.0, 2.0, 2.0, 2.0]]))


def test_heldout_metrics_hand_values():
    # pairs (0, 1) and (2, 3); wbar_n = [ln3, -ln3, 0, ln3]; labels [1, 0, 1, 0]
    # BCE: -ln(3/4), -ln(3/4), ln 2, -ln(1/4) -> mean; |score| mean = 3 ln3 / 4; pair acc 1/2
    w = torch.tensor([[LN3, LN3], [-LN3, -LN3], [LN3, -LN3], [LN3, NAN]])
    mask = torch.tensor([[1, 1], [1, 1], [1, 1], [1, 0]])
    out = heldout_metrics(w, mask, torch.tensor([1, 0, 1, 0]), torch.tensor([0, 0, 1, 1]))
    bce = (2 * -math.log(0.75) + math.log(2) + -math.log(0.25)) / 4
    assert out["bce"] == pytest.approx(bce, abs=1e-6)
    assert out["score_abs_mean"] == pytest.approx(3 * LN3 / 4, abs=1e-6)
    assert out["pair_accuracy"] == 0.5 and out["accuracy"] == pytest.approx(0.5)



def test_rm_stats_merge_over_micro_batches_and_ranks_equals_the_whole_batch():
    """The instruments of a batch split in two (micro-batches, or ranks that gather) equal
    those of the whole batch, pairs split across the parts included; hand values on top."""
    from reward_model.instruments import RMStats, metric_names

    # query 7: positive wbar_n = ln3 above negative -ln3 (right); query 8: positive 0, negative 0 (tie: wrong)
    w = torch.tensor([[LN3, LN3, NAN], [-LN3, -LN3, -LN3], [0.0, 0.0, 0.0], [LN3, -LN3, NAN]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1], [1, 1, 0]])
    labels, keys = torch.tensor([1.0, -1.0, 1.0, -1.0]), [7, 7, 8, 8]
    whole = RMStats.of(w, mask, labels, keys).metrics(n_pos_tokens=5, n_neg_tokens=5)
    split = (RMStats.of(w[:1], mask[:1], labels[:1], keys[:1])
             + RMStats.of(w[1:], mask[1:], labels[1:], keys[1:])).metrics(5, 5)
    assert split == pytest.approx(whole)
    assert set(whole) <= set(metric_names())
    assert whole["reward_model/pair_accuracy"] == 0.5
    assert whole["reward_model/score_abs_mean"] == pytest.approx(2 * LN3 / 4)
    # w+ on negatives: row 3's wbar = [ln3, 0] -> w+ = [1/2, 0]: 0.5 / 5 tokens
    assert whole["reward_model/w_pos_on_neg_mean"] == pytest.approx(0.1)
    assert whole["reward_model/w_neg_on_pos_mean"] == 0.0
    # positives' last quarter holds their last tokens: wbar_n = ln3 (row 0) and 0 (row 2)
    assert whole["reward_model/prefix_score/pos/q4"] == pytest.approx(LN3 / 2)
    # negatives' last tokens: -ln3 (row 1) and 0 (row 3)
    assert whole["reward_model/prefix_score/neg/q4"] == pytest.approx(-LN3 / 2)
    # nothing to average: left out (no pair among positives only)
    only_pos = RMStats.of(w[:1], mask[:1], labels[:1], keys[:1]).metrics(2, 0)
    assert "reward_model/pair_accuracy" not in only_pos and "reward_model/w_pos_on_neg_mean" not in only_pos
