"""Token-level reward model: per-token scores from the outcome only (``docs/oreal.md``, step 5)."""
from reward_model.loss import prefix_mean, rm_accuracy, sequence_score, token_rm_loss, token_weights
from reward_model.model import ScoreHead, TokenRewardModel

__all__ = [
    "ScoreHead",
    "TokenRewardModel",
    "prefix_mean",
    "rm_accuracy",
    "sequence_score",
    "token_rm_loss",
    "token_weights",
]
