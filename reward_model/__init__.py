"""Token-level reward model: per-token scores from the outcome only (``docs/algorithm.md``, step 5)."""
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

_MODEL = ("ScoreHead", "TokenRewardModel")


def __getattr__(name: str):
    """The model classes import transformers' modelling code (seconds of CPU); the loss
    functions need torch only, and the driver reaches them through the learner's modules."""
    if name in _MODEL:
        from reward_model import model

        return getattr(model, name)
    raise AttributeError(f"module 'reward_model' has no attribute {name!r}")

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
