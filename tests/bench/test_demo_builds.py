"""bench.demo_builds' pieces: a build's record from its cache folder and `make demo` log, and the
spread over builds (identical warm-ups recognised, different ones not)."""
from __future__ import annotations

import json

import pytest

from bench.demo_builds import build_record, run_folder, spread


def _build(tmp_path, name: str, weights: bytes, before: float, after: float):
    cache, run = tmp_path / name / "cache", tmp_path / name / "run"
    (cache / "oreal" / "warmup-abc").mkdir(parents=True)
    (cache / "oreal" / "warmup-abc" / "model.safetensors").write_bytes(weights)
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({
        "heldout_pass1_before": before, "heldout_pass1_after": after, "rm_heldout_pair_accuracy_before": 0.5,
        "rm_heldout_pair_accuracy_after": 0.7, "wall_s": 100.0}))
    log = tmp_path / name / "demo.log"
    log.write_text(f"step 30 | ...\nrun folder: {tmp_path / 'elsewhere'}\nmore\nrun folder: {run}\n")
    return build_record(cache, log)


def test_a_build_is_read_from_its_cache_and_log(tmp_path):
    b = _build(tmp_path, "b1", b"w", 0.6, 0.85)
    assert (b["heldout_pass1_before"], b["heldout_pass1_after"], b["warmup"]) == (0.6, 0.85, ["warmup-abc"])
    assert b["run_dir"].endswith("b1/run")  # the last 'run folder:' line
    assert b["warmup_sha256"] == "50e721e49c013f00c62cf59f2163542a9d8df02464efeb615d31051b0fddc326"  # sha256(b"w")


def test_spread_over_builds(tmp_path):
    same = [_build(tmp_path, f"s{i}", b"w", 0.6, after) for i, after in enumerate((0.8, 0.9))]
    s = spread(same)
    assert s["warmup_identical"] is True
    assert s["heldout_pass1_after"]["mean"] == pytest.approx(0.85)
    assert s["heldout_pass1_after"]["sd"] == pytest.approx(0.0707, abs=1e-4)
    assert (s["heldout_pass1_after"]["min"], s["heldout_pass1_after"]["max"], s["heldout_pass1_after"]["n"]) == (0.8, 0.9, 2)
    other = _build(tmp_path, "o", b"v", 0.5, 0.8)
    assert spread(same + [other])["warmup_identical"] is False


def test_an_unfinished_demo_is_named(tmp_path):
    with pytest.raises(ValueError, match="run folder"):
        run_folder("SFT warm-up: 50%\nTraceback ...")


def test_warmup_variants_are_read_and_summed_up(tmp_path):
    from bench.demo_builds import warmup_record

    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"heldout_pass1_before": 0.325}))
    assert warmup_record("model.warmup.threads=1", run) == {
        "override": "model.warmup.threads=1", "heldout_pass1_before": 0.325, "run_dir": str(run)}


def test_the_report_renders_builds_and_warmups(tmp_path):
    from bench.report import renderer

    d = {"builds": [{"heldout_pass1_before": 0.6, "heldout_pass1_after": 0.835, "rm_heldout_pair_accuracy_before": 0.5,
                     "rm_heldout_pair_accuracy_after": 0.576, "wall_s": 175.0, "warmup_sha256": "2ba97be8684f65"}],
         "spread": {"warmup_identical": True, "heldout_pass1_after": {"mean": 0.835, "sd": 0.0}},
         "warmup_variants": [{"override": "model.warmup.seed=2", "heldout_pass1_before": 0.485}],
         "warmup_start_spread": {"min": 0.485, "max": 0.6, "mean": 0.5425, "sd": 0.08, "n": 2}}
    text = "\n".join(renderer("demo_builds", d)(d))
    assert "| 1 | 60.0 | 83.5 | 50.0 | 57.6 | 175 | 2ba97be8684f |" in text
    assert "| model.warmup.seed=2 | 48.5 |" in text and "48.5 to 60.0" in text
