"""The same problems as JSONL, Parquet and a saved Hugging Face dataset load into identical
problem lists, with configurable question / answer fields and answer-extraction rule."""
import json

import pytest

from launch.benchmarks import load_problems


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
