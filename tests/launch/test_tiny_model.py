"""The embedded tiny model: loads back by path, and its tokenizer survives every loader."""
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from launch.data.tasks import DEFAULT_SYSTEM_PROMPT, TaskConfig, build_prompt, make_arith_problems
from launch.model.tiny_model import (
    EOS_TOKEN,
    PAD_TOKEN,
    TinyModelConfig,
    build_tiny_model,
    build_tokenizer,
    ensure_tiny_model,
    resolve_model_path,
    train_bpe,
)

# Texts the ids must survive: arithmetic, chat markup, LaTeX, prose, odd whitespace, unicode.
TEXTS = [
    "Compute 47 + 38 - 19.",
    "47 + 38 = 85. 85 - 19 = 66. The answer is \\boxed{66}.<|im_end|>",
    "<|im_start|>user\nCompute 1234 - 987.<|im_end|>\n<|im_start|>assistant\n",
    "Let $f(x) = \\frac{x^2 + 1}{\\sqrt{3}}$; find $f(12)$ when x \u2265 0.",
    "Janet\u2019s ducks lay 16 eggs per day.  She eats three.\n\n#### 18",
    "  leading spaces, tabs\tand\r\nCRLF lines  ",
    "Caf\u00e9 vs Cafe\u0301 (NFC), \u65e5\u672c\u8a9e, emoji \U0001F600, I'll we've they're",
    "3.14159 -42 1,000,000 0007 x_{10}^{2}",
]


@pytest.fixture(scope="module")
def tiny_path() -> str:
    return ensure_tiny_model(TinyModelConfig())


@pytest.fixture(scope="module")
def auto_tok(tiny_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_path)


def test_model_loads_back_by_path(tiny_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    cfg = TinyModelConfig()
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.dtype == torch.float32
    assert model.config.head_dim == 64 and model.config.num_attention_heads == 1
    assert model.config.vocab_size == cfg.vocab_size
    assert model.config.tie_word_embeddings
    logits = model(torch.tensor([[1, 2, 3, 4]])).logits
    assert logits.shape == (1, 4, cfg.vocab_size) and torch.isfinite(logits).all()


def test_ids_round_trip_through_auto_tokenizer_and_vllm(tiny_path, auto_tok):
    from vllm.tokenizers import get_tokenizer

    raw = train_bpe(TinyModelConfig().vocab_size)  # what the BPE was trained to produce
    vllm_tok = get_tokenizer(tiny_path)
    assert type(auto_tok).__name__ == "Qwen2Tokenizer"
    texts = TEXTS + [p.question + " " + p.solution for p in make_arith_problems(
        TaskConfig(num_train=20, num_heldout=0, max_operands=4, max_digits=3)).train]
    for text in texts:
        ids = raw.encode(text).ids
        assert auto_tok.encode(text, add_special_tokens=False) == ids, text
        assert vllm_tok.encode(text, add_special_tokens=False) == ids, text
        assert auto_tok.decode(ids) == vllm_tok.decode(ids)
        if text.isascii():
            assert auto_tok.decode(ids) == text
    assert vllm_tok.eos_token_id == auto_tok.eos_token_id
    assert len(vllm_tok) == len(auto_tok) == TinyModelConfig().vocab_size


def test_every_digit_is_its_own_token(auto_tok):
    # Qwen2's split regex isolates each digit, so a number is one token per digit and each
    # digit always has the same id, whatever surrounds it.
    digit_ids = [auto_tok.convert_tokens_to_ids(d) for d in "0123456789"]
    assert len(set(digit_ids)) == 10 and auto_tok.unk_token_id not in digit_ids
    for text in ["48", "1234567890", "x=48.", "(48)", " 48 ", "\\boxed{48}"]:
        pieces = auto_tok.tokenize(text)
        digits = [p for p in pieces if any(c.isdigit() for c in p)]
        assert digits == [c for c in text if c.isdigit()], (text, pieces)


def test_special_tokens_are_single_ids(tiny_path, auto_tok):
    from transformers import AutoConfig, GenerationConfig

    eos = auto_tok.eos_token_id
    assert auto_tok.eos_token == EOS_TOKEN
    assert auto_tok.encode(EOS_TOKEN, add_special_tokens=False) == [eos]
    assert auto_tok.encode("<|im_start|>", add_special_tokens=False) == [auto_tok.convert_tokens_to_ids("<|im_start|>")]
    assert auto_tok.pad_token == PAD_TOKEN and auto_tok.pad_token_id != eos
    assert AutoConfig.from_pretrained(tiny_path).eos_token_id == eos
    assert GenerationConfig.from_pretrained(tiny_path).eos_token_id == eos
    # A response ends in exactly one stop token.
    assert auto_tok.encode("\\boxed{66}." + EOS_TOKEN, add_special_tokens=False)[-1] == eos


def test_chat_template_renders(auto_tok):
    prompt = build_prompt(auto_tok, "Compute 2 + 3.", DEFAULT_SYSTEM_PROMPT)
    assert prompt == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nCompute 2 + 3.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = auto_tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=True
    )
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert auto_tok.decode(ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_cache_is_reused(tiny_path, tmp_path):
    t0 = time.perf_counter()
    again = ensure_tiny_model(TinyModelConfig())
    assert again == tiny_path and time.perf_counter() - t0 < 1.0
    other = ensure_tiny_model(TinyModelConfig(seed=1), cache_root=tmp_path)
    assert Path(other).parent == tmp_path and Path(other).name != Path(tiny_path).name
    assert [p.name for p in tmp_path.iterdir()] == [Path(other).name]  # no temp folder left


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    import launch.model.tiny_model as tm

    def broken(cfg, out_dir):
        (Path(out_dir) / "config.json").write_text("{}")  # half-written
        raise RuntimeError("disk full")

    monkeypatch.setattr(tm, "build_tiny_model", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        tm.ensure_tiny_model(TinyModelConfig(), cache_root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_builds_are_deterministic(tmp_path):
    a, b = build_tokenizer(), build_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    assert all(a.encode(t) == b.encode(t) for t in TEXTS)

    cfg = TinyModelConfig()
    w = [load_file(Path(build_tiny_model(c, tmp_path / name)) / "model.safetensors")
         for name, c in [("a", cfg), ("b", cfg), ("c", TinyModelConfig(seed=cfg.seed + 1))]]
    assert w[0].keys() == w[1].keys()
    assert all(torch.equal(w[0][k], w[1][k]) for k in w[0])
    assert not torch.equal(w[0]["model.embed_tokens.weight"], w[2]["model.embed_tokens.weight"])


def test_resolve_model_path(tiny_path, tmp_path):
    cfg = TinyModelConfig()
    assert resolve_model_path(None, cfg) == resolve_model_path(None) == tiny_path
    assert resolve_model_path("tiny", cfg) == tiny_path
    assert resolve_model_path(str(tmp_path), cfg) == str(tmp_path.resolve())
    assert resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct", cfg) == "Qwen/Qwen2.5-0.5B-Instruct"
    for missing in ["./no/such-model", str(tmp_path / "nope" / "model")]:
        with pytest.raises(FileNotFoundError, match="no/such-model|nope/model"):
            resolve_model_path(missing, cfg)
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="weights.bin"):
        resolve_model_path(str(tmp_path / "weights.bin"), cfg)


def test_config_checks_head_split():
    with pytest.raises(ValueError, match="num_heads"):
        TinyModelConfig(hidden_size=64, num_heads=3)
    with pytest.raises(ValueError, match="head size"):
        TinyModelConfig(hidden_size=64, num_heads=4)  # head_dim 16: vLLM CPU refuses it
    assert TinyModelConfig().head_dim == 64
