"""Bad input gives one line naming the row, path or key, before Ray starts where it can:
malformed data rows are skipped, counted and listed; a missing model folder, a tokenizer
without a stop token and negative coefficients are refused."""
from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from conftest import compose
from launch.data.benchmarks import MAX_LISTED_ROWS, load_jsonl_problems, problems_from_rows, read_jsonl_problems
from launch.config import ModelConfig, TrainConfig, to_train_config
from launch.data.tasks import TaskConfig, load_policy_tokenizer, load_task


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


# ---------------------------------------------------------------------------- data rows

def _bad_file(tmp_path):
    f = tmp_path / "data.jsonl"
    good = [json.dumps({"problem": f"Compute {i} + 1.", "answer": str(i + 1)}).encode() for i in range(3)]
    lines = [
        good[0],                                                     # 1 ok
        b"{not json",                                                # 2 bad JSON
        json.dumps({"answer": "3"}).encode(),                        # 3 no problem
        json.dumps({"problem": "Compute 2 + 2."}).encode(),          # 4 no answer
        json.dumps({"problem": "   ", "answer": "1"}).encode(),      # 5 empty problem
        json.dumps({"problem": "Compute 1 + 1.", "answer": " "}).encode(),  # 6 empty answer
        b'{"problem": "caf\xe9 \xff", "answer": "1"}',               # 7 not UTF-8 (latin-1 bytes)
        b"",                                                         # 8 blank: skipped silently
        json.dumps({"problem": "x" * 30_001, "answer": "1"}).encode(),  # 9 enormous
        b"[1, 2]",                                                   # 10 not an object
        good[1],                                                     # 11 ok
        json.dumps({"problem": "Was ist 2 + 2? \u00fc", "answer": "4"}).encode("utf-8"),  # 12 ok (UTF-8)
    ]
    f.write_bytes(b"\n".join(lines) + b"\n")
    return f


def test_bad_rows_are_skipped_counted_and_named(tmp_path):
    f = _bad_file(tmp_path)
    problems, skipped = read_jsonl_problems(f, max_question_chars=20_000)
    assert [p.id for p in problems] == ["data-1", "data-11", "data-12"]
    assert problems[2].question.endswith("\u00fc")
    assert len(skipped) == 8
    reasons = {int(s.split(":")[1]): s for s in skipped}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 9, 10]
    for line, needle in ((2, "not valid JSON"), (3, "no question field"), (4, "no answer field 'answer'"),
                         (5, "no question field"), (6, "empty answer"), (7, "not UTF-8"),
                         (9, "30,001 characters, over task.max_question_chars=20,000"),
                         (10, "not a JSON object (got list)")):
        assert reasons[line].startswith(f"{f}:{line}: ") and needle in reasons[line], reasons[line]
        assert "\n" not in reasons[line]


def test_the_loader_warns_once_listing_each_skipped_row(tmp_path, caplog):
    f = _bad_file(tmp_path)
    with caplog.at_level(logging.WARNING, logger="oreal"):
        problems = load_jsonl_problems(f)
    assert len(problems) == 3
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    lines = record.getMessage().splitlines()
    assert lines[0] == f"{f}: skipped 8 bad row(s) of 11, loaded 3:"
    assert [int(x.strip().split(":")[1]) for x in lines[1:]] == [2, 3, 4, 5, 6, 7, 9, 10]


def test_long_lists_are_cut_and_counted(tmp_path, caplog):
    f = tmp_path / "many.jsonl"
    f.write_text(json.dumps({"problem": "p", "answer": "1"}) + "\n" + "{broken\n" * 25)
    with caplog.at_level(logging.WARNING, logger="oreal"):
        assert len(load_jsonl_problems(f)) == 1
    lines = caplog.records[-1].getMessage().splitlines()
    assert len(lines) == 1 + MAX_LISTED_ROWS + 1 and lines[-1].strip() == f"... and {25 - MAX_LISTED_ROWS} more"


def test_max_question_chars_is_the_task_key(tmp_path):
    f = tmp_path / "long.jsonl"
    f.write_text("".join(json.dumps({"question": "q" * n, "answer": "1"}) + "\n" for n in (10, 100, 1000)))
    splits = load_task(TaskConfig(name="jsonl", path=str(f), num_heldout=0, num_train=0, max_question_chars=100))
    assert sorted(len(p.question) for p in splits.train) == [10, 100]
    with pytest.raises(ValueError, match="task.max_question_chars"):
        TaskConfig(max_question_chars=0)


def test_no_usable_row_is_one_error_naming_the_file(tmp_path):
    f = tmp_path / "broken.jsonl"
    f.write_bytes(b"{nope\n\xff\xfe\n")
    with pytest.raises(ValueError) as err:
        load_jsonl_problems(f)
    text = _one_line(err)
    assert text.startswith(f"{f}: no usable row (2 skipped: {f}:1: not valid JSON")
    assert f"{f}:2: not UTF-8" in text
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match=r"empty\.jsonl: no usable row \(0 skipped, the file is empty\)"):
        load_jsonl_problems(empty)


def test_hub_rows_are_skipped_the_same_way(caplog):
    rows = [{"problem": "p", "answer": "1"}, {"problem": "q"}, "not a dict"]
    with caplog.at_level(logging.WARNING, logger="oreal"):
        problems = problems_from_rows(rows, "hub", "answer", source="org/data")
    assert [p.id for p in problems] == ["hub-1"]
    assert "org/data row 2: row has no answer field 'answer'" in caplog.text
    assert "org/data row 3: row is not a JSON object (got str)" in caplog.text


def test_a_wrong_answer_spec_is_a_config_error_not_a_bad_row(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"problem": "p", "answer": "1"}) + "\n")
    with pytest.raises(ValueError, match=r"unknown answer spec 'weird:answer' \(task.answer_field"):
        load_jsonl_problems(f, answer_field="weird:answer")


# ---------------------------------------------------------------------------- model and tokenizer

def test_a_missing_model_folder_is_refused_at_config_time_naming_the_key(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        to_train_config(compose([f"model.path={tmp_path}/no-such-model"]))
    assert _one_line(err).startswith(f"model.path='{tmp_path}/no-such-model': no such folder")
    with pytest.raises(FileNotFoundError, match=r"model.path=.*config\.json not found"):
        ModelConfig(path=str(tmp_path))  # a folder, but not a model
    # a hub id cannot be checked offline: it passes here and fails when its tokenizer is loaded
    assert ModelConfig(path="nobody/no-such-model").path == "nobody/no-such-model"


def test_a_hub_id_that_cannot_be_loaded_names_the_key():
    with pytest.raises(ValueError) as err:
        load_policy_tokenizer("nobody/no-such-model")
    assert _one_line(err).startswith("model.path='nobody/no-such-model': cannot load its tokenizer")


def _tokenizer_without_eos(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return folder


def test_a_tokenizer_without_stop_token_is_refused_before_ray(tmp_path):
    from launch.roles import prepare_policy

    folder = _tokenizer_without_eos(tmp_path / "no_eos")
    cfg = dataclasses.replace(TrainConfig(), model=ModelConfig(path=str(folder)))
    with pytest.raises(ValueError) as err:
        prepare_policy(cfg, splits=None)  # train() calls it before any role starts
    text = _one_line(err)
    assert text.startswith(f"model.path='{folder}': the tokenizer has no stop token")


# ---------------------------------------------------------------------------- coefficients

@pytest.mark.parametrize("override,key", [
    ("algo.eta=-0.5", "algo.eta"),
    ("algo.beta=-0.01", "algo.beta"),
    ("algo.actor_freeze_steps=-1", "algo.actor_freeze_steps"),
    ("rollout.temperature=-1.0", "rollout.temperature"),
    ("rollout.max_new_tokens=0", "rollout.max_new_tokens"),
    ("learner.policy_optim.weight_decay=-0.1", "weight_decay"),
    ("learner.rm_optim.grad_clip=-1.0", "grad_clip"),
    ("verifier.warn_frac=0.8", "verifier.warn_frac"),
    ("verifier.stop_frac=-0.1", "verifier.stop_frac"),
    ("task.max_question_chars=0", "task.max_question_chars"),
])
def test_negative_coefficients_name_their_key(override, key):
    with pytest.raises(ValueError) as err:
        to_train_config(compose([override]))
    assert key in _one_line(err)


def test_zero_is_allowed_where_it_means_off():
    cfg = to_train_config(compose(["algo.beta=0", "rollout.temperature=0", "learner.policy_optim.grad_clip=0"]))
    assert (cfg.algo.beta, cfg.rollout.temperature, cfg.learner.policy_optim.grad_clip) == (0.0, 0.0, 0.0)


def test_ray_temp_dir_too_deep_for_sockets_moves_under_tmp(tmp_path):
    """A clone in a deep folder: Ray refuses socket paths past 107 bytes, so the temp dir
    moves to a short, stable folder; a short one is kept as given."""
    from launch.ray_connect import ray_temp_dir

    assert ray_temp_dir(None) is None
    assert ray_temp_dir("/work/main/.cache/ray") == "/work/main/.cache/ray"
    deep = "/check/work/main/.cache/clone/oreal/.cache/ray"
    short = ray_temp_dir(deep)
    assert short != deep and "oreal-ray-" in short
    socket = f"{short}/session_2026-12-02_03-54-56_280459_3007600/sockets/plasma_store"
    assert len(socket.encode()) <= 107
    assert ray_temp_dir(deep) == short  # stable: the same folder each time
