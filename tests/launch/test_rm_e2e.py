"""End-to-end: the token RM on data of its own (all samples, a replay buffer) and its held-out
instruments, through the real loop (shared topology: tests/conftest.py `e2e_roles`)."""
from __future__ import annotations

import dataclasses
import json

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_rm_trains_on_all_samples_with_replay_and_its_heldout_figures_are_logged(fresh_policy, e2e_cfg, tmp_path):
    from launch.state.checkpoint import complete_checkpoints
    from launch.loop import train
    from launch.evaluation.rm_heldout import PAIRS_FILE

    # step 1 is an RM-only step that draws 2 queries more (algo.rm_only_prompts_per_step)
    algo = dataclasses.replace(e2e_cfg.algo, mode="oreal", rm_samples="all", rm_replay_steps=2, rm_eval_every=1,
                               rm_eval_pairs=8, rm_replay_anchor_steps=1, actor_freeze_steps=1,
                               rm_only_prompts_per_step=e2e_cfg.prompts_per_step + 2)
    cfg = dataclasses.replace(e2e_cfg, steps=2, eval_every=0, algo=algo,
                              ckpt=dataclasses.replace(e2e_cfg.ckpt, enabled=True, every=0))
    fresh_policy.learner.set_algo(cfg.algo)
    result = train(cfg, tmp_path, roles=fresh_policy)

    pairs = [json.loads(line) for line in (tmp_path / PAIRS_FILE).read_text().splitlines()]
    assert len(pairs) >= 8 and all(p["pos"] != p["neg"] for p in pairs)
    assert any(p["first_error"] is not None for p in pairs)  # the arithmetic task knows where they go wrong
    by_step = {int(r["step"]): r for r in result.history}
    for step in (0, 1, 2):  # at the start and after every step (rm_eval_every=1)
        row = by_step[step]
        assert 0.0 <= row["reward_model/heldout_pair_accuracy"] <= 1.0 and row["reward_model/heldout_bce"] > 0
        assert row["reward_model/heldout_pairs"] == len(pairs)
        assert 0 < row["reward_model/first_error_chance"] < 1
    for step in (1, 2):
        row = by_step[step]
        if row["learner/skipped"]:
            continue
        # one optimiser step per mini-batch of each pass (the e2e learner's RM schedule: conf/rm/learns.yaml)
        assert row["reward_model/updates"] == algo.rm_updates_per_step and row["reward_model/fit_bce"] > 0
    assert result.summary["rm_heldout_pair_accuracy_after"] == by_step[2]["reward_model/heldout_pair_accuracy"]
    assert (tmp_path / "reward_model.png").is_file() and (tmp_path / "token_weights.png").is_file()

    # the replay is in the last checkpoint: step 1's RM samples in the anchor (rm_replay_anchor_steps=1),
    # step 2's in the recent buffer, all K of each mixed query
    (ckpt,) = complete_checkpoints(tmp_path / "ckpt")
    replay = ckpt.meta["state"]["rm_replay"]
    assert replay["steps"] == 2 and replay["anchor_steps"] == 1
    assert len(replay["anchor"]) == 1 and len(replay["buffer"]) == 1
    records = [json.loads(line) for step in (1, 2) for line in
               (tmp_path / "rollouts" / f"step_{step:05d}.jsonl").read_text().splitlines()]
    assert sum(len(s) for s in replay["anchor"] + replay["buffer"]) > 0
    for step_samples in replay["anchor"] + replay["buffer"]:
        for cls in (True, False):  # each mixed query weighs 1 per class
            total = sum(s["rm_weight"] for s in step_samples if (s["reward"] > 0) == cls)
            assert total == pytest.approx(round(total))
    assert len(records) == (2 * cfg.prompts_per_step + 2) * cfg.rollout.n_samples
    assert by_step[1]["learner/policy_frozen"] == 1 and by_step[2].get("learner/policy_frozen", 0) == 0
    assert by_step[1]["rollout/queries_drawn"] == cfg.prompts_per_step + 2
    assert by_step[2]["rollout/queries_drawn"] == cfg.prompts_per_step
