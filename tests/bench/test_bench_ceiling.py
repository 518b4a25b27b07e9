"""bench/bench_ceiling.py's pure pieces: the bounds against TRL, reading TRL's step from a
bench_peer report, and the table (the measurements themselves run in `make bench-peer`)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import bench_ceiling as bc  # noqa: E402


def test_module_import_needs_neither_vllm_nor_torch():
    code = ("import sys; import bench.bench_ceiling; "
            "bad = [m for m in ('vllm', 'torch', 'ray', 'trl') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_ratio_if_overhead_free_by_hand():
    # TRL: 8 s decode + 7 s train; ours: 6 s decode + 7 s train -> 15 / 13.
    assert bc.ratio_if_overhead_free(8.0, 6.0, 7.0) == pytest.approx(15 / 13)
    # Training dominating pulls the ratio towards 1 however fast the decoder.
    assert bc.ratio_if_overhead_free(8.0, 0.1, 1000.0) < 1.01


def test_against_trl_bounds_and_train_budget():
    b = bc.against_trl(trl_step_s=24.0, vllm_decode_s=6.0, train_s=6.0)
    assert b["max_x_trl_all_trained"] == pytest.approx(2.0)
    assert b["max_x_trl_no_training"] == pytest.approx(4.0)
    # 3x needs a step of 8 s: 2 s of training left, a third of train_s.
    assert b["train_budget_for_3x"] == pytest.approx(1 / 3)
    # Decoding alone slower than a third of TRL's step: no training budget at all.
    assert bc.against_trl(24.0, 9.0, 6.0)["train_budget_for_3x"] < 0


def test_trl_step_s_reads_a_peer_report_and_tolerates_a_missing_one(tmp_path):
    peer = tmp_path / "peer.json"
    peer.write_text(json.dumps({"by_setting": {"long": {"trl_step_s_mean": 22.5}}}))
    assert bc.trl_step_s(peer, "long") == 22.5
    assert bc.trl_step_s(peer, "small") is None
    assert bc.trl_step_s(tmp_path / "absent.json", "long") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert bc.trl_step_s(tmp_path / "bad.json", "long") is None


def test_table_names_every_setting_with_and_without_a_trl_step():
    base = {"vllm_tokens_per_s": 1900.0, "hf_tokens_per_s": 1500.0, "decode_speedup": 1.25,
            "train_compute": {"best_s": 7.0}, "ratio_if_overhead_free": 1.1}
    results = {"long": {**base, "against_trl": bc.against_trl(22.0, 6.8, 7.0)}, "small": dict(base)}
    table = bc.format_table(results)
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2].startswith("long") and lines[3].startswith("small")
    assert "22.00" in lines[2] and "nan" in lines[3]


def test_cli_rejects_an_unknown_setting():
    with pytest.raises(SystemExit, match="unknown setting"):
        bc.main(["--settings", "huge"])


def _peer_setting(run_dir=None, oreal_fracs=(0.6, 0.25, 0.5, 0.0, 0.25)):
    oreal = {"steady_from_step": 2, "step_s_mean": 5.0,
             "per_step": [{"step": i + 1, "kept_query_frac": f} for i, f in enumerate(oreal_fracs)]}
    if run_dir is not None:  # an older report: no kept_query_frac per step, the run folder has it
        oreal = {"steady_from_step": 2, "step_s_mean": 5.0, "per_step": [{"step": 1}], "run_dir": str(run_dir)}
    return {"systems": {"trl": {"step_s_mean": 30.0},
                        "shaped": {"steady_from_step": 2, "per_step": [{"step": 1, "kept_query_frac": 1.0},
                                                                       {"step": 2, "kept_query_frac": 1.0}]},
                        "oreal": oreal},
            "comparison": {"shaped_samples_per_s_x_trl": 1.6, "oreal_samples_per_s_x_trl": 2.0}}


def test_each_mode_has_the_ceiling_of_the_share_it_trains_on():
    """ceiling = trl_step / (decode + trained share x train), by hand: shaped trains every
    query, oreal a quarter of them over its steady steps (the first step left out)."""
    m = bc.mode_ceilings(_peer_setting(), vllm_decode_s=6.0, train_s=12.0)
    assert m["shaped"]["trained_frac"] == 1.0 and m["shaped"]["max_x_trl"] == pytest.approx(30.0 / 18.0)
    assert m["shaped"]["of_ceiling"] == pytest.approx(0.96) and m["shaped"]["met"]
    assert m["oreal"]["trained_frac"] == pytest.approx(0.25)
    assert m["oreal"]["max_x_trl"] == pytest.approx(30.0 / 9.0)
    assert m["oreal"]["of_ceiling"] == pytest.approx(0.6) and not m["oreal"]["met"]


def test_the_trained_share_falls_back_to_the_runs_own_record(tmp_path):
    rows = [{"step": 0, "eval/pass1": 0.1}] + [
        {"step": i + 1, "rollout/samples": 64, "learner/kept_query_frac": f} for i, f in enumerate((0.9, 0.5, 0.0))]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = bc.mode_ceilings(_peer_setting(run_dir=tmp_path), vllm_decode_s=6.0, train_s=12.0)
    assert m["oreal"]["trained_frac"] == pytest.approx(0.25)
    missing = bc.mode_ceilings(_peer_setting(run_dir=tmp_path / "gone"), vllm_decode_s=6.0, train_s=12.0)
    assert "oreal" not in missing and "shaped" in missing  # no share known: no ceiling claimed
