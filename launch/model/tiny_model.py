"""A tiny Qwen2-style causal LM and its tokenizer, made on the spot (no hub access).

The embedded default policy: `ensure_tiny_model(TinyModelConfig())` builds (once, then
caches by a hash of the config) a folder that `AutoModelForCausalLM`, `AutoTokenizer` and
vLLM all load by path, like any hub checkpoint.

Tokenizer design. transformers 5.19 loads any folder whose config says
``model_type: qwen2`` with `Qwen2Tokenizer`, which rebuilds the pre-tokenizer from its own
class: a plain byte-level BPE saved there comes back with different ids. So the BPE is
trained with exactly Qwen2's pipeline (NFC normaliser; Qwen2's split regex, then
byte-level without regex; byte-level decoder) and saved *as* a `Qwen2Tokenizer` built from
the trained vocab and merges: every loader then gives identical ids. Qwen2's regex splits
every digit off on its own (``\\p{N}``), so numbers are always one token per digit, which
suits arithmetic. Special tokens: ``<|endoftext|>`` (pad), ``<|im_start|>``,
``<|im_end|>`` (eos: the single stop token that ends every trained response).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

from launch.data.tasks import DEFAULT_SYSTEM_PROMPT, arith_corpus

# Bump when the build recipe changes, so cached folders from the old recipe are not reused.
BUILD_VERSION = 2

PAD_TOKEN, IM_START, EOS_TOKEN = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Head sizes vLLM 0.32's CPU attention backend accepts (CPUAttentionBackend).
VLLM_CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, EOS_TOKEN]  # ids 0, 1, 2

# Qwen-style template: every turn is "<|im_start|>{role}\n{content}<|im_end|>\n".
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# A little generic text next to the arithmetic, so common words and LaTeX get merges too.
GENERIC_TEXT = [
    DEFAULT_SYSTEM_PROMPT,
    "system user assistant",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "The answer is \\boxed{0}. The final answer is $\\boxed{1}$.",
    "0 1 2 3 4 5 6 7 8 9 + - * / = ( ) [ ] { } < > ^ _ . , ; : ! ? % $ # & | ' \" \\",
    "Let x be the number of apples. Find the value of x such that the sum of the two "
    "numbers is equal to the product. We have that the total is the answer. Therefore, "
    "what is the smallest positive integer? How many ways are there? Compute the area of "
    "the triangle and the radius of the circle. Solve for y in terms of x. Suppose that "
    "each of them has a different probability.",
    "\\frac{1}{2} \\sqrt{3} \\pi \\cdot \\times \\left( \\right) \\le \\ge \\neq x^2 a_n",
]


@dataclass
class TinyModelConfig:
    """Shape of the embedded tiny policy (schema of `conf/model/tiny.yaml`)."""

    # Width of the residual stream.
    hidden_size: int = 64
    # Transformer blocks.
    num_layers: int = 2
    # Attention heads (and key/value heads); head_dim = hidden_size / num_heads must be a
    # size vLLM's CPU attention supports (VLLM_CPU_HEAD_DIMS: 32, 64, 80, ...; 16 fails).
    num_heads: int = 1
    # Width of the MLP.
    intermediate_size: int = 256
    # Tokenizer vocabulary target (3 special tokens + 256 bytes + BPE merges); the
    # embedding has exactly this many rows even if training yields fewer tokens.
    vocab_size: int = 512
    # Longest prompt + response the model accepts (vLLM's max_model_len).
    max_position_embeddings: int = 1024
    # Share the input embedding with the LM head.
    tie_word_embeddings: bool = True
    # Seed of the random weight initialisation (the tokenizer does not depend on it).
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size={self.hidden_size} is not divisible by model.num_heads={self.num_heads}"
            )
        if self.head_dim not in VLLM_CPU_HEAD_DIMS:
            raise ValueError(
                f"model.hidden_size / model.num_heads = {self.head_dim}: vLLM's CPU attention "
                f"needs a head size in {VLLM_CPU_HEAD_DIMS}"
            )
        if self.vocab_size < 256 + len(SPECIAL_TOKENS):
            raise ValueError(f"model.vocab_size must be >= {256 + len(SPECIAL_TOKENS)}, got {self.vocab_size}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def tokenizer_corpus() -> list[str]:
    """The BPE's training text: arithmetic questions and solutions, plus generic text."""
    return arith_corpus() + GENERIC_TEXT * 20


def train_bpe(vocab_size: int = 512):
    """The raw trained `tokenizers.Tokenizer` (deterministic: fixed corpus, fixed order)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    # Same normaliser, pre-tokeniser and decoder that Qwen2Tokenizer.__init__ installs.
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: nothing is unknown
        show_progress=False,
    )
    bpe.train_from_iterator(tokenizer_corpus(), trainer)
    return bpe


def build_tokenizer(vocab_size: int = 512, model_max_length: int = 1024):
    """A `Qwen2Tokenizer` made from `train_bpe`'s vocab and merges, with the chat template.

    Saved with `save_pretrained`, it loads back through `AutoTokenizer` (and so vLLM) with
    the same ids as the trained BPE.
    """
    from transformers import Qwen2Tokenizer

    trained = json.loads(train_bpe(vocab_size).to_str())["model"]
    tok = Qwen2Tokenizer(
        vocab=trained["vocab"],
        merges=[tuple(m) for m in trained["merges"]],
        unk_token=None,  # byte-level: every string has an encoding
        bos_token=None,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START],
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.model_max_length = model_max_length
    return tok


def build_tiny_model(cfg: TinyModelConfig, out_dir: str | os.PathLike) -> str:
    """Random-init fp32 `Qwen2ForCausalLM` + tokenizer, saved into `out_dir`; returns its path."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer(cfg.vocab_size, cfg.max_position_embeddings)
    if len(tok) > cfg.vocab_size:
        raise ValueError(f"tokenizer has {len(tok)} tokens > model.vocab_size={cfg.vocab_size}")
    pad_id, eos_id = tok.convert_tokens_to_ids([PAD_TOKEN, EOS_TOKEN])
    config = Qwen2Config(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Qwen2ForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=pad_id, eos_token_id=eos_id, pad_token_id=pad_id
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def config_hash(cfg: TinyModelConfig) -> str:
    """Short hash of everything a built folder depends on (cache key): the config, the
    recipe version, the tokenizer's training text and template, the transformers version."""
    corpus = hashlib.sha256("\0".join(tokenizer_corpus() + [CHAT_TEMPLATE]).encode()).hexdigest()
    key = {"cfg": asdict(cfg), "build": BUILD_VERSION, "corpus": corpus,
           "transformers": version("transformers")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def ensure_tiny_model(cfg: TinyModelConfig, cache_root: str | os.PathLike | None = None) -> str:
    """Path of the tiny model for `cfg`, building it the first time.

    The folder is ``<cache_root>/tiny-<config hash>``, built in a temporary folder beside it
    and renamed into place, so a reader never sees a half-written model and two processes
    building at once both end up with one complete folder.
    """
    from launch.model.cache import build_once, default_cache_root

    root = Path(cache_root) if cache_root is not None else default_cache_root()
    return build_once(root / f"tiny-{config_hash(cfg)}", lambda tmp: build_tiny_model(cfg, tmp))


def resolve_model_path(path: str | None, tiny_cfg: TinyModelConfig | None = None) -> str:
    """Turn `model.path` into something `from_pretrained` and vLLM accept.

    None or "tiny" -> the cached tiny model for `tiny_cfg` (default shape if None);
    an existing local folder -> its absolute path (Hydra or Ray may change the working
    folder later); any other name -> returned as-is (a hub id, e.g. "Qwen/Qwen2.5-0.5B").
    A path-like string (contains "/" and starts with "." or "/" or "~") that does not exist
    is an error rather than a hub lookup.
    """
    if path is None or path == "tiny":
        return ensure_tiny_model(tiny_cfg or TinyModelConfig())
    local = Path(path).expanduser()
    if local.is_dir():
        return str(local.resolve())
    if local.exists():
        raise NotADirectoryError(f"model.path={path!r} is a file; expected a model folder")
    if is_local_path(path):
        raise FileNotFoundError(f"model.path={path!r} does not exist (resolved to {local.resolve()})")
    return path


def is_local_path(path: str) -> bool:
    """Whether `model.path` names a local folder rather than a hub id: it starts with "/",
    "." or "~" (a hub id such as "Qwen/Qwen2.5-7B" cannot be checked offline)."""
    return path.startswith((".", "/", "~"))


if __name__ == "__main__":
    t0 = time.perf_counter()
    print(ensure_tiny_model(TinyModelConfig()), f"({time.perf_counter() - t0:.1f} s)")
