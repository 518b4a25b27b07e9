"""Token-level reward model: per-token scores from the outcome only (``docs/oreal.md``, step 5)."""
from reward_model.loss import (
    heldout_metrics,
    pair_accuracy,
    prefix_mean,
    prefix_score_buckets,
    rm_accuracy,
    score_columns,
    sequence_score,
    token_rm_loss,
    token_weights,
    topk_rescale,
)
from reward_model.model import ScoreHead, TokenRewardModel

__all__ = [
    "ScoreHead",
    "TokenRewardModel",
    "heldout_metrics",
    "pair_accuracy",
    "prefix_mean",
    "prefix_score_buckets",
    "rm_accuracy",
    "score_columns",
    "sequence_score",
    "token_rm_loss",
    "token_weights",
    "topk_rescale",
]
