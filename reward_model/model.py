"""``TokenRewardModel``: the initial policy with its LM head replaced by a zero ``Linear(hidden, 1)``.

Alignment convention (shared with ``learner.loss``)
----------------------------------------------------
``forward(input_ids, attention_mask)`` returns one score per position, ``scores[:, j]`` read
from the hidden state at ``j``, which has seen ``input_ids[:, :j+1]`` only (causal). The score
``w_t`` of a response token is read at the position that PREDICTS it, exactly like the
policy's log-prob of that token, so ``response_scores`` drops the last position and returns
``[S, L-1]`` where column ``j`` belongs to token ``input_ids[:, j + 1]``; the same layout as
``learner.loss.gather_logprobs`` and ``learner.loss.response_mask``::

    input_ids          p0   p1   y0   y1   y2   pad
    response_scores    w(p1) w(y0) w(y1) w(y2) w(pad)   <- from p0 | p0p1 | ..y0 | ..y1 | ..y2
    mask                0    1    1    1    0

Sequences are prompt + response, RIGHT padded (padding never changes earlier positions).

ZeRO-3: the model is plain submodules (``backbone``, ``head``); the head is zeroed inside its
own ``reset_parameters``, i.e. during construction, so the zero init also holds under
``deepspeed.zero.Init`` (which partitions parameters right after each module is built).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModel, AutoModelForCausalLM, PreTrainedModel

HEAD_FILE = "score_head.pt"


class ScoreHead(nn.Linear):
    """Bias-free ``Linear(hidden, 1)`` initialised to ZERO (every token weight starts at 0)."""

    def __init__(self, hidden_size: int, dtype: torch.dtype | None = None):
        super().__init__(hidden_size, 1, bias=False, dtype=dtype)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)


class TokenRewardModel(nn.Module):
    """Per-token scores ``w`` from a causal-LM backbone (the base model, without its LM head).

    Build it with ``TokenRewardModel.from_pretrained(path_or_model)``. Example::

        rm = TokenRewardModel.from_pretrained("Qwen/Qwen2.5-7B")       # zero head
        w = rm.response_scores(input_ids, attention_mask, mask)          # [S, L-1]
        loss, metrics = token_rm_loss(w, mask, labels)                   # reward_model.loss
    """

    def __init__(self, backbone: PreTrainedModel):
        super().__init__()
        self.backbone = backbone
        self.head = ScoreHead(backbone.config.hidden_size, dtype=backbone.dtype)

    @property
    def config(self):
        return self.backbone.config

    @classmethod
    def from_pretrained(cls, pretrained: str | os.PathLike | PreTrainedModel,
                        **kwargs) -> "TokenRewardModel":
        """From a causal LM (path or loaded ``PreTrainedModel``: the initial policy), or from a
        directory written by ``save_pretrained``. ``kwargs`` go to HF ``from_pretrained``
        (e.g. ``dtype=torch.bfloat16``).

        A causal LM gives its base model (``model.base_model``, found through
        ``base_model_prefix``; ``.model`` for Qwen2) and a fresh zero head; its LM head is
        dropped. A loaded model is NOT copied: the RM takes over its backbone, so pass a model
        that is not also used as the policy (``copy.deepcopy`` it otherwise).
        """
        if isinstance(pretrained, PreTrainedModel):
            return cls(pretrained.base_model)
        head_file = Path(pretrained) / HEAD_FILE
        if head_file.is_file():
            rm = cls(AutoModel.from_pretrained(pretrained, **kwargs))
            rm.head.load_state_dict(torch.load(head_file, map_location="cpu", weights_only=True))
            return rm
        return cls(AutoModelForCausalLM.from_pretrained(pretrained, **kwargs).base_model)

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        """Recompute the backbone's decoder layers in backward (HF checkpointing: ``kwargs`` go
        to the backbone's ``gradient_checkpointing_enable``). Like any HF model it only
        checkpoints in training mode: call ``.train()``."""
        self.backbone.gradient_checkpointing_enable(**kwargs)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Backbone in HF format plus ``score_head.pt`` (gather ZeRO-3 parameters first)."""
        self.backbone.save_pretrained(directory)
        torch.save(self.head.state_dict(), Path(directory) / HEAD_FILE)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Scores ``[B, L]`` (float32); ``scores[:, j]`` sees ``input_ids[:, :j+1]`` only."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return self.head(out.last_hidden_state).squeeze(-1).float()

    def response_scores(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                        response_mask: Tensor | None = None, rm_score: str = "prefix_mean") -> Tensor:
        """Scores in the loss layout ``[S, L-1]``: column ``j`` is the score ``w`` of token
        ``input_ids[:, j+1]``, read at position ``j`` (``rm_score="prefix_mean"``) or at the
        token's own position ``j+1`` (``"token"``: ``reward_model.loss.score_columns``). Zero
        outside ``response_mask`` if given."""
        from reward_model.loss import score_columns

        scores = score_columns(self(input_ids, attention_mask), rm_score)
        if response_mask is None:
            return scores
        return torch.where(response_mask.bool(), scores, scores.new_zeros(()))
