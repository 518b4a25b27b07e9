"""The shape of a dense decoder (Qwen2/Llama style) and its parameter counts: what the memory
planner (`launch.planning.memory_plan`) needs to know about `model.path` without loading any weights.

Read from the model's Hugging Face `config.json` (through `transformers.AutoConfig`, which
fills in each architecture's defaults), or from `TinyModelConfig` when `model.path` is null.
A hub name is read from the local Hugging Face cache, or fetched (config.json only) unless
`HF_HUB_OFFLINE` is set; when neither works the error says so and names `model.path`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launch.model.tiny_model import TinyModelConfig


class ShapeError(ValueError):
    """The model's shape could not be read (names `model.path`)."""


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    # q/k/v projections carry a bias (Qwen2: yes; Llama: attention_bias, default no).
    qkv_bias: bool = True

    @classmethod
    def from_tiny(cls, cfg: TinyModelConfig) -> "ModelShape":
        """`launch.model.tiny_model.build_tiny_model`'s Qwen2 model (as many KV heads as heads)."""
        return cls(hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                   num_kv_heads=cfg.num_heads, head_dim=cfg.head_dim, intermediate_size=cfg.intermediate_size,
                   vocab_size=cfg.vocab_size, tie_word_embeddings=cfg.tie_word_embeddings)

    @classmethod
    def from_hf_config(cls, config: Any) -> "ModelShape":
        """From a `transformers.PretrainedConfig` (a multimodal one's `text_config` if present)."""
        c = getattr(config, "text_config", None) or config
        heads = c.num_attention_heads
        bias = getattr(c, "attention_bias", None)
        return cls(hidden_size=c.hidden_size, num_layers=c.num_hidden_layers, num_heads=heads,
                   num_kv_heads=getattr(c, "num_key_value_heads", None) or heads,
                   head_dim=getattr(c, "head_dim", None) or c.hidden_size // heads,
                   intermediate_size=getattr(c, "intermediate_size", None) or 4 * c.hidden_size,
                   vocab_size=c.vocab_size, tie_word_embeddings=bool(getattr(c, "tie_word_embeddings", False)),
                   qkv_bias=(getattr(c, "model_type", "") == "qwen2") if bias is None else bool(bias))

    # ---- parameter counts (exact for Qwen2ForCausalLM: checked against the module in tests)
    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        """One decoder layer: q, k, v (+ biases), o, gate/up/down, two RMSNorms."""
        H, I = self.hidden_size, self.intermediate_size
        attn = H * (self.q_dim + 2 * self.kv_dim) + self.q_dim * H
        if self.qkv_bias:
            attn += self.q_dim + 2 * self.kv_dim
        return attn + 3 * H * I + 2 * H

    @property
    def embed_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def backbone_params(self) -> int:
        """The base model (embedding, layers, final norm): the token RM's backbone."""
        return self.embed_params + self.num_layers * self.layer_params + self.hidden_size

    @property
    def params(self) -> int:
        """The causal LM: backbone + LM head (shared with the embedding when tied)."""
        return self.backbone_params + (0 if self.tie_word_embeddings else self.embed_params)

    @property
    def largest_module_params(self) -> int:
        """The most parameters ZeRO-3 gathers at once for one module: a decoder layer or the
        embedding / LM head."""
        return max(self.layer_params, self.embed_params)

    def kv_bytes_per_token(self, dtype_bytes: int, tensor_parallel_size: int = 1) -> int:
        """KV cache of one token on one GPU of an engine: layers x 2 (K, V) x its KV heads x
        head_dim x bytes; with TP the KV heads are split (replicated when TP > KV heads)."""
        heads = max(1, -(-self.num_kv_heads // tensor_parallel_size))
        return self.num_layers * 2 * heads * self.head_dim * dtype_bytes

    def describe(self) -> str:
        n = self.params
        size = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
        return (f"{size} params: hidden {self.hidden_size}, {self.num_layers} layers, "
                f"{self.num_heads} heads / {self.num_kv_heads} KV heads of {self.head_dim}, "
                f"MLP {self.intermediate_size}, vocab {self.vocab_size}"
                f"{', tied embeddings' if self.tie_word_embeddings else ''}")


def load_shape(path: str | None, tiny: TinyModelConfig) -> ModelShape:
    """`model.path` -> its shape: null/"tiny" from `tiny`, else its config.json (no weights)."""
    if path is None or path == "tiny":
        return ModelShape.from_tiny(tiny)
    local = Path(path).expanduser()
    if not local.is_dir() and path.startswith((".", "/", "~")):
        raise ShapeError(f"model.path={path!r} does not exist (resolved to {local.resolve()})")
    from transformers import AutoConfig  # imports torch: only for a real model path

    try:
        config = AutoConfig.from_pretrained(str(local) if local.is_dir() else path)
    except (OSError, ValueError) as e:
        if local.is_dir():
            raise ShapeError(f"model.path={path!r}: no readable config.json in that folder ({e})") from e
        import os

        from huggingface_hub.constants import HF_HUB_CACHE

        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        raise ShapeError(
            f"model.path={path!r} is not a local folder and its config.json is not in the local Hugging Face "
            f"cache ({HF_HUB_CACHE}) nor reachable{offline}: download it (`hf download {path} config.json`) or "
            f"point model.path at a local folder (plan.check=false skips the memory plan)") from e
    try:
        return ModelShape.from_hf_config(config)
    except AttributeError as e:
        raise ShapeError(f"model.path={path!r}: config.json lacks a decoder shape key the planner needs ({e}); "
                         "the planner knows dense Qwen2/Llama-style decoders") from e
