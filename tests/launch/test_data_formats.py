"""The same problems as JSONL, Parquet and a saved Hugging Face dataset load into identical
problem lists, with configurable question / answer fields and answer-extraction rule."""
import json

import pytest

from launch.data.benchmarks import load_problems


def _rows(n: int = 20) -> list[dict]:
    return [{"question": f"What is {i} + {i}?", "solution": f"{i} + {i} = {2 * i}, so \\boxed{{{2 * i}}}.",
             "answer": float(2 * i), "level": i % 5} for i in range(n)]


def _write_all(rows: list[dict], folder, stem: str) -> dict[str, str]:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = folder / f"{stem}.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parquet = folder / f"{stem}.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    saved = folder / stem
    datasets.Dataset.from_list(rows).save_to_disk(str(saved))
    split_dict = folder / "dict" / stem  # a DatasetDict with one split
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(split_dict))
    return {"jsonl": str(jsonl), "parquet": str(parquet), "dataset": str(saved), "dataset_dict": str(split_dict)}


@pytest.mark.parametrize("answer_field,first_answer", [("boxed:solution", "0"), ("answer", "0")])
def test_same_problems_from_jsonl_parquet_and_saved_dataset(tmp_path, answer_field, first_answer):
    paths = _write_all(_rows(), tmp_path, "mine")
    loaded = {kind: load_problems(p, answer_field=answer_field, question_field="question")
              for kind, p in paths.items()}
    assert len(loaded["jsonl"]) == 20 and loaded["jsonl"][0].answer == first_answer
    assert loaded["jsonl"][7].answer == "14" and loaded["jsonl"][7].id == "mine-8"
    for kind, problems in loaded.items():
        assert problems == loaded["jsonl"], kind


def test_preset_rule_by_stem_and_bad_rows_skipped(tmp_path, full_benchmarks):
    """The first 20 MATH-500 rows under the preset's name, in each format: the preset's
    answer rule applies by stem; a row without an answer is skipped in every format."""
    rows = [json.loads(line) for line in (full_benchmarks / "math500.jsonl").read_text().splitlines()[:20]]
    rows[3] = {**rows[3], "answer": None}
    paths = _write_all(rows, tmp_path, "math500")
    loaded = {kind: load_problems(p) for kind, p in paths.items()}
    assert len(loaded["jsonl"]) == 19
    for kind, problems in loaded.items():
        assert problems == loaded["jsonl"], kind


def test_missing_and_ambiguous_folders(tmp_path):
    import datasets

    with pytest.raises(FileNotFoundError, match="not a dataset folder"):
        (tmp_path / "empty").mkdir()
        load_problems(str(tmp_path / "empty"))
    two = tmp_path / "two"
    ds = datasets.Dataset.from_list(_rows(2))
    datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(two))
    with pytest.raises(ValueError, match="none named 'test'"):
        load_problems(str(two), question_field="question")


# ---- hf:<name>: any Hugging Face dataset by name, through datasets.load_dataset ---------
# No hub here: `load_dataset` also takes a local folder of data files laid out as a hub
# repository (data/<split>-00000-of-00001.<ext>), the same call a hub name goes through.

def _hub_layout(rows: list[dict], folder, split: str, ext: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "data").mkdir(parents=True)
    data = folder / "data" / f"{split}-00000-of-00001.{ext}"
    if ext == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), data)
    else:
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.mark.parametrize("answer_field", ["boxed:solution", "answer"])
@pytest.mark.parametrize("split,ext", [("train", "parquet"), ("test", "jsonl")])
def test_same_problems_from_an_hf_name(tmp_path, answer_field, split, ext):
    from launch.data.benchmarks import HubDataset

    rows = _rows()
    jsonl = load_problems(_write_all(rows, tmp_path, "mine")["jsonl"], answer_field=answer_field,
                          question_field="question")
    repo = _hub_layout(rows, tmp_path / "hub" / "mine", split, ext)
    hub = HubDataset(split=split, cache_dir=str(tmp_path / "cache"))
    problems = load_problems(f"hf:{repo}", answer_field=answer_field, question_field="question", hub=hub)
    assert len(problems) == 20 and problems == jsonl  # ids too: <last part of the name>-<row>


def test_hf_name_through_the_task_and_eval_configs(tmp_path):
    from launch.evaluation.config import EvalConfig
    from launch.data.tasks import TaskConfig, load_task

    paths = _write_all(_rows(), tmp_path, "mine")
    repo = _hub_layout(_rows(), tmp_path / "hub" / "mine", "test", "parquet")
    common = dict(name="jsonl", question_field="question", answer_field="boxed:solution", num_heldout=5, seed=1)
    from_jsonl = load_task(TaskConfig(path=paths["jsonl"], **common))
    from_hub = load_task(TaskConfig(path=f"hf:{repo}", hf_split="test", hf_cache_dir=str(tmp_path / "c"), **common))
    assert from_hub == from_jsonl and len(from_hub.train) == 15
    assert EvalConfig(benchmarks=["hf:AI-MO/NuminaMath-CoT", "hf:gsm8k"]).benchmarks[0].startswith("hf:")
    with pytest.raises(ValueError, match="task.name=jsonl"):
        TaskConfig(path="hf:AI-MO/NuminaMath-CoT")
    with pytest.raises(ValueError, match="task.hf_split"):
        TaskConfig(name="jsonl", path="hf:AI-MO/NuminaMath-CoT", hf_split="")


def test_hf_wrong_split_or_config_is_one_line_naming_the_key(tmp_path):
    from launch.data.benchmarks import HubDataset

    repo = _hub_layout(_rows(), tmp_path / "mine", "test", "parquet")
    for hub, why in ((HubDataset(split="train"), "Unknown split"), (HubDataset("nope", "test"), "nope")):
        with pytest.raises(ValueError) as e:
            load_problems(f"hf:{repo}", hub=hub, key="eval.benchmarks")
        msg = str(e.value)
        assert msg.startswith(f"eval.benchmarks='hf:{repo}'") and why in msg and "\n" not in msg
    with pytest.raises(ValueError, match="no dataset name"):
        load_problems("hf:")


@pytest.mark.parametrize("env", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_hf_name_offline_and_not_cached_fails_fast_naming_the_key(monkeypatch, tmp_path, env):
    """The hub switched off (set after datasets was imported, as here, or before) and a name
    not in the cache: one line at once, naming the key and the name, pointing at a local copy."""
    import time

    import datasets  # noqa: F401  (its import is not what is timed)

    from launch.data.benchmarks import HubDataset

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv(env, "1")
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as e:
        load_problems("hf:made-up-org/no-such-dataset-15", key="task.path",
                      hub=HubDataset(cache_dir=str(tmp_path / "cache")))
    assert time.monotonic() - start < 2.0
    msg = str(e.value)
    assert msg.startswith("task.path='hf:made-up-org/no-such-dataset-15'") and "\n" not in msg
    for part in ("HF_HUB_OFFLINE", "not in the datasets cache", "local copy"):
        assert part in msg


def test_hf_name_without_network_fails_fast(monkeypatch, tmp_path):
    """No offline variable, but no network: a short probe, then the same one line (datasets
    alone would retry for about 25 s)."""
    import time

    from launch.data import benchmarks

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(benchmarks, "hub_offline", lambda: False)
    monkeypatch.setattr(benchmarks, "hub_reachable", lambda: False)
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match=r"^eval.benchmarks='hf:made-up-org/x'.*cannot be reached.*local copy"):
        benchmarks.load_problems("hf:made-up-org/x", key="eval.benchmarks",
                                 hub=benchmarks.HubDataset(cache_dir=str(tmp_path)))
    assert time.monotonic() - start < 2.0


def test_eval_cli_hf_name_offline_is_one_line_before_ray(tmp_path):
    """`python -m launch.eval eval.benchmarks=[hf:...]` with the hub off: exit 1 with one
    `error:` line naming eval.benchmarks and the name; no Ray, no engine started."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "launch.eval", "eval.benchmarks=[hf:made-up-org/no-such-dataset-15]",
                          f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: eval.benchmarks='hf:made-up-org/no-such-dataset-15': the Hugging Face hub is off")
    assert "local copy" in last and "Started a local Ray instance" not in out.stdout + out.stderr
