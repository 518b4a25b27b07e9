"""launch.model.tokenizer_class: the class AutoTokenizer chose, recorded per folder and reused."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from launch.data.tasks import build_prompt
from launch.model.tiny_model import TinyModelConfig, ensure_tiny_model
from launch.model.tokenizer_class import _record_path, load_tokenizer

ROOT = Path(__file__).resolve().parents[2]
TEXT = "<|im_start|>user\nCompute 47 + 38 - 19.<|im_end|>\nThe answer is \\boxed{66}.<|im_end|>"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("OREAL_CACHE", str(tmp_path / "cache"))
    return shutil.copytree(ensure_tiny_model(TinyModelConfig()), tmp_path / "policy")


def _auto(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _same(a, b):
    assert type(a) is type(b)
    assert a(TEXT)["input_ids"] == b(TEXT)["input_ids"]
    assert (a.eos_token_id, a.pad_token_id, len(a)) == (b.eos_token_id, b.pad_token_id, len(b))
    assert build_prompt(a, "What is 2 + 2?") == build_prompt(b, "What is 2 + 2?")


def test_first_load_records_autotokenizers_choice_and_the_second_follows_it(folder):
    record = _record_path(str(folder))
    assert not record.exists()
    first = load_tokenizer(str(folder))
    assert json.loads(record.read_text()) == {"module": type(first).__module__, "name": type(first).__name__}
    _same(first, _auto(folder))
    _same(load_tokenizer(str(folder)), _auto(folder))


def test_a_later_run_loads_without_autotokenizers_import(folder):
    load_tokenizer(str(folder))
    probe = ("import sys; from launch.model.tokenizer_class import load_tokenizer; "
             f"t = load_tokenizer({str(folder)!r}); print(type(t).__name__, t.eos_token_id, "
             "'transformers.models.auto.tokenization_auto' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=os.environ.copy(), capture_output=True,
                         text=True, timeout=300, check=True).stdout.split()
    auto = _auto(folder)
    assert out == [type(auto).__name__, str(auto.eos_token_id), "False", "False"]


def test_a_changed_folder_is_chosen_afresh(folder):
    load_tokenizer(str(folder))
    before = _record_path(str(folder))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    after = _record_path(str(folder))
    assert after != before and not after.exists()
    _same(load_tokenizer(str(folder)), _auto(folder))  # AutoTokenizer decides, whatever it picks
    _same(load_tokenizer(str(folder)), _auto(folder))  # and the record repeats it
    (folder / "extra.json").write_text("{}")  # a new file in the folder: a new key too
    assert _record_path(str(folder)) != after


def test_an_unusable_record_falls_back_to_autotokenizer(folder):
    record = _record_path(str(folder))
    record.parent.mkdir(parents=True)
    for bad in ("not json", json.dumps({"module": "transformers", "name": "NoSuchTokenizer"}),
                json.dumps({"module": "no_such_module", "name": "X"}), json.dumps(["list"])):
        record.write_text(bad)
        _same(load_tokenizer(str(folder)), _auto(folder))


def test_hub_names_are_not_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _record_path("Qwen/Qwen2.5-7B-Instruct") is None
