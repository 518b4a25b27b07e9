"""Issue 16: defaults as the authors ran OREAL (AdamW betas, the switches that keep the older
readings reachable), and w+ forced to 1 turning oreal's positive term into bc's."""
import inspect
import math

import pytest
import torch

from conftest import compose
from learner.config import AlgoConfig, LearnerConfig, OptimConfig
from learner.deepspeed_config import ds_config
from learner.loss import oreal_loss
from reward_model.loss import WeightRule


def _cfg(overrides=None):
    from omegaconf import OmegaConf

    return OmegaConf.to_object(compose(overrides))


def test_adamw_betas_are_torch_defaults_for_both_models_old_value_reachable():
    torch_default = inspect.signature(torch.optim.AdamW).parameters["betas"].default
    assert tuple(torch_default) == (0.9, 0.999)
    cfg = LearnerConfig()
    assert tuple(cfg.policy_optim.betas) == tuple(cfg.rm_optim.betas) == tuple(OptimConfig().betas) == (0.9, 0.999)
    for optim, model in ((cfg.policy_optim, "policy"), (cfg.rm_optim, "rm")):
        assert ds_config(cfg, optim, model)["optimizer"]["params"]["betas"] == [0.9, 0.999]
    demo = _cfg()
    assert tuple(demo.learner.policy_optim.betas) == tuple(demo.learner.rm_optim.betas) == (0.9, 0.999)
    old = _cfg(["learner.policy_optim.betas=[0.9,0.95]", "learner.rm_optim.betas=[0.9,0.95]"]).learner
    assert ds_config(old, old.policy_optim, "policy")["optimizer"]["params"]["betas"] == [0.9, 0.95]
    assert ds_config(old, old.rm_optim, "rm")["optimizer"]["params"]["betas"] == [0.9, 0.95]


def test_new_switches_default_to_the_authors_script():
    algo = AlgoConfig()
    assert algo.schedule_through_freeze is True       # LR schedule advances in the RM-only steps
    assert algo.topk_rescale is False and algo.topk_ratios is None   # commented out in their configs
    assert (algo.topk_ratio_pos, algo.topk_ratio_neg) == (0.25, 0.25)  # their commented values
    assert algo.force_w_pos_one is False
    assert algo.rm_score == "prefix_mean"
    assert AlgoConfig(topk_rescale=True, topk_ratio_neg=0.5).topk_ratios == (0.25, 0.5)
    for key, bad in (("topk_ratio_pos", 0.0), ("topk_ratio_neg", 1.5)):
        with pytest.raises(ValueError, match=f"algo.{key}"):
            AlgoConfig(**{key: bad})
    # The paper's RM warms up over its RM-only steps (10 warm-up steps over 10 of them); the
    # demo's (rm=learns, 8 optimiser steps per RL step) warms up over its first RL step's 8, of
    # 10 RM-only steps.
    demo = _cfg()
    assert demo.algo.actor_freeze_steps == 10 and demo.algo.rm_updates_per_step == 8
    assert demo.learner.rm_optim.warmup_steps == demo.algo.rm_updates_per_step
    # ...and draws 3x the queries and passes twice as often in those RM-only steps; the paper does neither.
    assert (demo.algo.rm_only_prompts_per_step, demo.algo.rm_only_epochs) == (3 * demo.prompts_per_step, 8)
    assert demo.algo.rm_schedule(demo.steps)[:11] == [16] * 10 + [8]
    paper_demo = _cfg(["rm=paper"])
    assert paper_demo.learner.rm_optim.warmup_steps == paper_demo.algo.actor_freeze_steps == 5
    paper = _cfg(["+experiment=paper_7b"])
    assert paper.learner.rm_optim.warmup_steps == paper.algo.actor_freeze_steps == 10
    for cfg in (paper_demo, paper):
        assert cfg.algo.rm_only_prompts_per_step is None and cfg.algo.rm_only_epochs is None
    # The token weights read q = sigmoid(wbar / T): the paper's T = 1 unless rm=learns sharpens them.
    assert demo.algo.rm_weight_temperature == 0.25
    assert paper_demo.algo.rm_weight_temperature == paper.algo.rm_weight_temperature == AlgoConfig().rm_weight_temperature == 1.0
    switched = _cfg(["algo.schedule_through_freeze=false", "algo.topk_rescale=true",
                     "algo.force_w_pos_one=true", "algo.rm_score=token"]).algo
    assert (switched.schedule_through_freeze, switched.topk_ratios, switched.force_w_pos_one,
            switched.rm_score) == (False, (0.25, 0.25), True, "token")


def _mixed_batch(seed=0, S=6, T=7):
    g = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(S, T, generator=g, dtype=torch.float64) * 3).requires_grad_()
    ref = -torch.rand(S, T, generator=g, dtype=torch.float64) * 3
    rm = torch.randn(S, T, generator=g, dtype=torch.float64) * 2
    mask = torch.ones(S, T, dtype=torch.bool)
    mask[1, 5:] = False
    mask[4, :2] = False
    rewards = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    adv = torch.tensor([1.2, -0.4, 0.8, -0.9, 1.5, -0.2])
    return logp, ref, rm, mask, rewards, adv


@pytest.mark.parametrize("pos_mult_adv", [True, False])
def test_force_w_pos_one_turns_oreals_positive_term_into_bcs(pos_mult_adv):
    """Same value of the positive term and the same gradient on the positives' log-probs (the
    negative term only reaches negative rows; the KL is the same in both modes)."""
    grads, outs = {}, {}
    for name, kwargs in (("bc", dict(mode="bc")), ("forced", dict(mode="oreal", force_w_pos_one=True)),
                         ("oreal", dict(mode="oreal"))):
        logp, ref, rm, mask, rewards, adv = _mixed_batch()
        outs[name] = oreal_loss(logp, ref, rm, mask, rewards, adv, pos_mult_adv=pos_mult_adv, **kwargs)
        outs[name]["loss"].backward()
        grads[name] = logp.grad
    pos_rows = rewards > 0
    assert outs["forced"]["pos"].item() == pytest.approx(outs["bc"]["pos"].item(), rel=1e-12)
    torch.testing.assert_close(grads["forced"][pos_rows], grads["bc"][pos_rows], rtol=1e-12, atol=1e-15)
    assert outs["forced"]["w_pos_mean"].item() == 1.0
    # without the switch the learned weights change the term (here w+ < 1 on most tokens)
    assert not math.isclose(outs["oreal"]["pos"].item(), outs["bc"]["pos"].item(), rel_tol=1e-3)
    # the negative term keeps oreal's w-: forcing w+ leaves it alone
    assert outs["forced"]["neg"].item() == pytest.approx(outs["oreal"]["neg"].item(), rel=1e-12)
    torch.testing.assert_close(grads["forced"][~pos_rows], grads["oreal"][~pos_rows])


def test_force_w_pos_one_on_positives_only_equals_bc_loss_and_gradient():
    logp, ref, rm, mask, _, adv = _mixed_batch()
    rewards = torch.ones(6)
    adv = adv.abs()
    out_bc = oreal_loss(logp, ref, rm, mask, rewards, adv, mode="bc")
    (g_bc,) = torch.autograd.grad(out_bc["loss"], logp)
    out_forced = oreal_loss(logp, ref, rm, mask, rewards, adv, mode="oreal", force_w_pos_one=True)
    (g_forced,) = torch.autograd.grad(out_forced["loss"], logp)
    assert out_forced["loss"].item() == pytest.approx(out_bc["loss"].item(), rel=1e-12)
    torch.testing.assert_close(g_forced, g_bc, rtol=1e-12, atol=1e-15)


def test_topk_switch_reaches_the_loss():
    logp, ref, rm, mask, rewards, adv = _mixed_batch()
    plain = oreal_loss(logp, ref, rm, mask, rewards, adv, mode="oreal")
    topk = oreal_loss(logp, ref, rm, mask, rewards, adv, mode="oreal", weight_rule=WeightRule(topk_ratios=(0.25, 0.25)))
    assert plain["pos"].item() != pytest.approx(topk["pos"].item())
    # at most int(n / 4) tokens per sequence carry a weight, each in [0, 1]
    from reward_model.loss import token_weights

    w_pos, w_neg = token_weights(rm, mask, topk_ratios=(0.25, 0.25))
    n = mask.sum(-1)
    assert ((w_pos > 0).sum(-1) <= n // 4).all() and ((w_neg > 0).sum(-1) <= n // 4).all()
    assert w_pos.max() <= 1 and w_neg.min() >= 0


def test_shuffled_token_weights_keep_the_rms_means_and_values():
    from learner.loss import shuffle_within
    from reward_model.loss import token_weights

    logp, ref, rm, mask, rewards, adv = _mixed_batch()
    torch.manual_seed(0)
    plain = oreal_loss(logp, ref, rm, mask, rewards, adv, mode="oreal")
    shuffled = oreal_loss(logp, ref, rm, mask, rewards, adv, mode="oreal", shuffle_weights=True)
    for key in ("w_pos_mean", "w_neg_mean"):
        assert shuffled[key].item() == pytest.approx(plain[key].item(), rel=1e-12)
    assert shuffled["pos"].item() != pytest.approx(plain["pos"].item())
    w_pos, _ = token_weights(rm, mask)
    mask_pos = mask & (rewards > 0)[:, None]
    out = shuffle_within(w_pos, mask_pos, torch.Generator().manual_seed(1))
    assert sorted(out[mask_pos].tolist()) == sorted(w_pos[mask_pos].tolist())  # a permutation
    assert out[~mask_pos].abs().max() == 0
    assert AlgoConfig().shuffle_token_weights is False and LearnerConfig().rm_head_lr_mult == 1.0
    with pytest.raises(ValueError, match="learner.rm_head_lr_mult"):
        LearnerConfig(rm_head_lr_mult=0.0)
