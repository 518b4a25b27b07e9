"""launch/cluster/rayjob.yaml against KubeRay's own RayJob schema, strictly (an unknown field is an
error, as with `kubectl apply --validate=strict`; the API server would drop it without a word),
and the manifest's recovery: retries that resume. No Kubernetes needed.

The schemas are KubeRay's CRD (ray.io_rayjobs.yaml) at v1.5.1, the oldest operator the manifest
supports, and v1.7.0, trimmed to the fields the manifest uses (tests/fixtures/kuberay/trim_crd.py).
"""
from __future__ import annotations

import copy
import shlex
from dataclasses import asdict
from pathlib import Path

import jsonschema
import pytest
import yaml
from omegaconf import OmegaConf

from conftest import ROOT, compose

RAYJOB = ROOT / "launch" / "cluster" / "rayjob.yaml"
SCHEMAS = sorted((ROOT / "tests" / "fixtures" / "kuberay").glob("rayjob-v*.schema.yaml"))
TRIMMED = "x-oreal-trimmed"


def strict(schema: dict) -> dict:
    """A CRD's structural schema as JSON Schema that refuses unknown fields: an object with
    `properties` and neither `additionalProperties` nor x-kubernetes-preserve-unknown-fields
    is closed."""
    out = dict(schema)
    if "properties" in schema:
        out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(schema["additionalProperties"])
    if isinstance(schema.get("items"), dict):
        out["items"] = strict(schema["items"])
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            out[key] = [strict(s) for s in schema[key]]
    return out


def violations(manifest: dict, schema: dict) -> list[str]:
    """One line per error: where, and what (a field KubeRay has but the trimmed copy left out
    is named as such)."""
    lines = []
    for err in jsonschema.Draft202012Validator(strict(schema)).iter_errors(manifest):
        where = ".".join(str(p) for p in err.absolute_path) or "<root>"
        hint = ""
        if err.validator == "additionalProperties":
            trimmed = set(err.schema.get(TRIMMED, ())) & set(err.instance)
            if trimmed:
                hint = f" ({sorted(trimmed)}: in KubeRay's schema, trimmed out of the fixture: run trim_crd.py again)"
        lines.append(f"{where}: {err.message}{hint}")
    return sorted(lines)


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load(RAYJOB.read_text())


def test_the_fixtures_are_kuberay_schemas_of_the_versions_they_name():
    assert [p.name for p in SCHEMAS] == ["rayjob-v1.5.1.schema.yaml", "rayjob-v1.7.0.schema.yaml"]
    for path in SCHEMAS:
        version = path.name.removeprefix("rayjob-").removesuffix(".schema.yaml")
        assert f"KubeRay {version}:" in path.read_text().splitlines()[0]
        spec = yaml.safe_load(path.read_text())["properties"]["spec"]["properties"]
        # every top-level field of RayJobSpec, with KubeRay's types
        assert {"entrypoint", "rayClusterSpec", "backoffLimit", "activeDeadlineSeconds", "submissionMode",
                "shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "submitterPodTemplate",
                "submitterConfig", "suspend", "runtimeEnvYAML", "clusterSelector"} <= set(spec)
        assert spec["backoffLimit"]["type"] == spec["activeDeadlineSeconds"]["type"] == "integer"


@pytest.mark.parametrize("schema_path", SCHEMAS, ids=lambda p: p.name.split("-")[1].removesuffix(".schema.yaml"))
def test_rayjob_validates_strictly_against_kuberays_schema(rayjob, schema_path):
    assert violations(rayjob, yaml.safe_load(schema_path.read_text())) == []


@pytest.mark.parametrize("edit, expected", [
    (lambda m: m["spec"].update(backofLimit=3), r"spec: Additional properties are not allowed \('backofLimit'"),
    (lambda m: m["spec"].update(backoffLimit="3"), r"spec.backoffLimit: '3' is not of type 'integer'"),
    (lambda m: m["spec"]["rayClusterSpec"]["authOptions"].update(mode="tokens"),
     r"spec.rayClusterSpec.authOptions.mode: 'tokens' is not one of \['disabled', 'token'\]"),
    (lambda m: m["spec"]["rayClusterSpec"].pop("headGroupSpec"), r"'headGroupSpec' is a required property"),
    (lambda m: m["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0].update(
        imagePullPolicy="Always"), r"\['imagePullPolicy'\]: in KubeRay's schema, trimmed out"),
    (lambda m: m["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"][
        "limits"].update(cpu=[8]), r"resources.limits.cpu: \[8\] is not valid under any of the given schemas"),
])
def test_the_check_catches_what_the_api_server_would_refuse_or_drop(rayjob, edit, expected):
    import re

    bad = copy.deepcopy(rayjob)
    edit(bad)
    found = violations(bad, yaml.safe_load(SCHEMAS[0].read_text()))
    assert any(re.search(expected, line) for line in found), found


# ------------------------------------------------------------------------------ recovery

def _entrypoint(rayjob: dict) -> list[str]:
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "launch.train"], argv
    return argv[3:]


def test_rayjob_retries_on_a_new_cluster_and_every_attempt_resumes(rayjob):
    spec = rayjob["spec"]
    assert spec["backoffLimit"] >= 1, "a failed attempt would not be retried"
    assert 9 * 3600 < spec["activeDeadlineSeconds"] <= 7 * 24 * 3600, spec["activeDeadlineSeconds"]
    assert "ckpt.resume=auto" in _entrypoint(rayjob)
    # a retry's driver starts a new Ray cluster: the run folder must outlive it
    assert OmegaConf.select(compose(_entrypoint(rayjob)), "output_dir").startswith("/shared/")


class _SavingLearner:
    """The files LearnerGroup.save_checkpoint and save_pretrained write, without a learner."""

    def __init__(self, world_size: int):
        self.world_size = world_size

    def save_checkpoint(self, folder: str, step: int) -> None:
        for model in ("policy", "rm"):
            (Path(folder) / model / "state").mkdir(parents=True)
        for rank in range(self.world_size):
            (Path(folder) / f"rng_rank{rank}.pt").write_bytes(b"rng")

    def save_pretrained(self, out_dir: str) -> None:
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "config.json").write_text("{}")
        (Path(out_dir) / "model.safetensors").write_bytes(b"w")


def test_the_entrypoint_starts_fresh_then_a_retry_resumes(rayjob, tmp_path):
    """The entrypoint's own overrides (the paper preset, ckpt.resume=auto), the run folder in a
    temporary one: the first attempt finds nothing and starts at step 0; after a checkpoint,
    the same command resumes from it rather than refusing a folder that holds checkpoints."""
    from launch.config import TrainConfig
    from launch.state.checkpoint import Checkpointer, DriverState, find_resume

    shared = tmp_path / "shared"
    overrides = [o.replace("=/shared/", f"={shared}/") for o in _entrypoint(rayjob)]
    for o in overrides:  # stand-ins of the model and benchmark folders (never read here)
        if o.startswith(("model.path=", "task.benchmarks_dir=")):
            Path(o.split("=", 1)[1]).mkdir(parents=True)
        if o.startswith("model.path="):
            (Path(o.split("=", 1)[1]) / "config.json").write_text("{}")
    cfg = OmegaConf.to_object(compose(overrides))
    run_dir = Path(cfg.output_dir)
    assert isinstance(cfg, TrainConfig) and cfg.ckpt.resume == "auto" and run_dir.is_relative_to(shared)
    assert find_resume(cfg, run_dir) is None

    class Roles:
        learner = _SavingLearner(cfg.learner.world_size)

    state = DriverState.start(cfg.seed, cfg.algo.rm_replay_steps)
    state.step = state.policy_version = 10
    state.drawn = 10 * cfg.prompts_per_step
    Checkpointer(cfg.ckpt, run_dir, cfg.steps).save(state, Roles(), asdict(cfg), "run-1", [])
    with (run_dir / "metrics.jsonl").open("w") as f:
        f.writelines(f'{{"step": {s}, "rollout/samples": 1.0}}\n' for s in range(1, 12))
    resumed = find_resume(cfg, run_dir)
    assert resumed is not None and resumed.step == 10 and resumed.wandb_run_id == "run-1"
