"""The W&B samples table: what the policy wrote, how it was graded, and how the token RM
weighed it, for a few samples of a step (every `wandb.table_every` steps).

Read from the step's rollout record (`launch.records`, written by `rl_step`), so the table
shows exactly what was graded and trained on. w+/w- are the token RM's weights along the
response (`reward_model.loss.token_weights`) under the RM as it stands after the step: one
extra RM forward over the table's samples only, and only when the algorithm has an RM
(`algo.mode=oreal`); blank otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

COLUMNS = ("step", "query_id", "prompt", "response", "gold", "verdict", "reward",
           "w_pos_mean", "w_pos_min", "w_pos_max", "w_neg_mean", "w_neg_min", "w_neg_max")

# (w+, w-) along one response's tokens, as `LearnerGroup.token_weights` returns them.
TokenWeights = tuple[Sequence[float], Sequence[float]]


def pick(records: Sequence[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """`n` of a step's records, spread over its queries: sample 0 of every query, then
    sample 1, ... (records as `launch.records.step_records` orders them)."""
    return sorted(records, key=lambda r: (r["sample"], r["query_index"]))[:n]


def _stats(w: Sequence[float] | None) -> list[float | None]:
    if not w:
        return [None, None, None]
    return [sum(w) / len(w), min(w), max(w)]


def rows(picked: Sequence[dict[str, Any]], weights: Sequence[TokenWeights | None] | None = None) -> list[list]:
    """One table row per record, in `COLUMNS` order; `weights[i]` belongs to `picked[i]`
    (None, or no `weights` at all: the w+/w- cells are blank)."""
    out = []
    for i, r in enumerate(picked):
        w_pos, w_neg = (weights[i] if weights and weights[i] else (None, None))
        out.append([r["step"], r["query_id"], r["prompt"], r["response"], r["gold"], r["outcome"],
                    r["reward"], *_stats(w_pos), *_stats(w_neg)])
    return out


def samples_table(picked: Sequence[dict[str, Any]], weights: Sequence[TokenWeights | None] | None = None):
    """`rows` as a `wandb.Table`."""
    import wandb

    return wandb.Table(columns=list(COLUMNS), data=rows(picked, weights))


def token_weights(learner, groups, picked: Sequence[dict[str, Any]]) -> list[TokenWeights | None]:
    """The token RM's (w+, w-) for each picked record; `groups[i][k]` is the rollout of
    query_index i, sample k. None for an empty response (nothing to weigh)."""
    from learner.batch import TrainSample

    rollouts = [groups[r["query_index"]][r["sample"]] for r in picked]
    todo = [i for i, ro in enumerate(rollouts) if ro.response_ids]
    if not todo:
        return [None] * len(picked)
    samples = [TrainSample(rollouts[i].prompt_ids, rollouts[i].response_ids, picked[i]["reward"], 0.0) for i in todo]
    out: list[TokenWeights | None] = [None] * len(picked)
    for i, w in zip(todo, learner.token_weights(samples)):
        out[i] = w
    return out


def log_step(logger, wandb_cfg, run_dir: Path, step: int, groups, learner=None) -> None:
    """Log step `step`'s samples table when `wandb_cfg.table_every` says so (`step` as in
    metrics.jsonl, from 1; `wandb_cfg` a `launch.config.WandbConfig`). `learner`: the learner
    group when the algorithm has a token RM (w+/w- columns), else None."""
    from launch import records

    every = wandb_cfg.table_every
    if logger.wandb_run is None or not every or step % every:  # W&B disabled: not even the RM forward
        return
    picked = pick(records.read_step(records.step_file(run_dir, step))[0], wandb_cfg.table_rows)
    weights = token_weights(learner, groups, picked) if learner is not None else None
    logger.log_table(step, "samples", samples_table(picked, weights))
