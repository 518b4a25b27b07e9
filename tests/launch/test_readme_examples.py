"""Every training command in README.md's code blocks is true.

Each `python -m launch.train ...` line (a `\\` continuation joined, a `# comment` dropped; the
ones after `ray job submit ... --` too) must be listed in EXAMPLES below, and every entry of
EXAMPLES must be in the README: a command added to, changed in or removed from the README
fails here until this list says what it does. For each command:

- as written, here (a config-only check, fast: composition, path resolution, the warm-up
  check, the resume check, everything `launch.train` checks before Ray starts): it passes,
  or, where it names a placeholder path of the reader's (`/data/...`, `/shared/...`), it is
  refused before Ray starts with a message that starts with the key;
- with its placeholders replaced by what stands in for them here, it passes;
- `run`: e2e, it runs with `steps=1` plus fast overrides (keys the example does not set);
  `covered_by`: another e2e test runs it (a Ray job, the resume sequence).

To check a README draft before it is merged: OREAL_README=<draft.md> pytest tests/launch/test_readme_examples.py
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import CACHE, FIXTURE_BENCHMARKS, ROOT, compose

README = Path(os.environ.get("OREAL_README") or ROOT / "README.md")
# Stand-ins for the reader's placeholders; "{...}" are filled in by the test.
TINY = "{tiny_model}"
SHARED = "{shared}"


@dataclass(frozen=True)
class Example:
    # Where a placeholder makes it fail here: the key its one-line error starts with.
    refused_here: str | None = None
    # Placeholder (as written in the README) -> its stand-in here.
    substitute: dict[str, str] = field(default_factory=dict)
    # Runs here with steps=1 + FAST (e2e).
    run: bool = False
    # Or: the e2e test that runs it (as written, with its own fast overrides).
    covered_by: str | None = None
    # The full benchmark files are needed to run it (skipped where absent, as a user's clone).
    needs_benchmarks: bool = False
    # A `ray job submit` entrypoint: also checked as a Ray job's driver sees it.
    job: bool = False


EXAMPLES: dict[str, Example] = {
    # Configuration
    "algo=shaped steps=20": Example(run=True),
    "verifier.reward_fn=verifier.plugins.string_match:reward steps=20": Example(run=True),
    "model=hf model.path=/data/ckpt/my-sft-model": Example(
        refused_here="model.path", substitute={"/data/ckpt/my-sft-model": TINY}, run=True),
    "model=hf model.path=/data/ckpt/my-sft-model task.name=jsonl task.path=gsm8k_test "
    "rollout.max_model_len=2048 rollout.max_new_tokens=1024": Example(
        refused_here="model.path", substitute={"/data/ckpt/my-sft-model": TINY}, run=True, needs_benchmarks=True),
    # Ray Jobs: on this machine, and on a GPU cluster
    "output_dir=$HOME/oreal-runs/job-demo steps=2 save_policy=true": Example(
        substitute={"$HOME": SHARED}, covered_by="tests/launch/test_ray_job_e2e.py", job=True),
    "+experiment=paper_7b model.path=Qwen/Qwen2.5-7B-Instruct model.cache_dir=/shared/hf "
    "task.benchmarks_dir=/shared/data/benchmarks output_dir=/shared/runs/oreal-7b wandb.mode=online "
    "wandb.project=oreal": Example(
        refused_here="task.benchmarks_dir",
        substitute={"/shared/data/benchmarks": str(FIXTURE_BENCHMARKS), "/shared/": SHARED + "/"}, job=True),
    # Sweeps and W&B: one after another here, in parallel as Ray jobs on a GPU cluster ($seed: 0)
    "-m algo=bc,oreal seed=0,1 steps=20": Example(covered_by="tests/launch/test_sweep_e2e.py"),
    "+experiment=paper_7b model.path=Qwen/Qwen2.5-7B-Instruct seed=$seed model.cache_dir=/shared/hf "
    "task.benchmarks_dir=/shared/data/benchmarks output_dir=/shared/sweeps/seeds/$seed wandb.mode=online "
    "wandb.project=oreal wandb.group=seeds \"wandb.name='seed=$seed'\"": Example(
        refused_here="task.benchmarks_dir",
        substitute={"/shared/data/benchmarks": str(FIXTURE_BENCHMARKS), "/shared/": SHARED + "/"}, job=True),
    # Checkpoints and exact resume
    "output_dir=$HOME/oreal-runs/a": Example(covered_by="tests/launch/test_resume_e2e.py"),
    "output_dir=$HOME/oreal-runs/a ckpt.resume=auto": Example(covered_by="tests/launch/test_resume_e2e.py"),
    "output_dir=$HOME/oreal-runs/a ckpt.resume=$HOME/oreal-runs/a/ckpt/step_000010": Example(
        refused_here="ckpt.resume", covered_by="tests/launch/test_resume_e2e.py"),
}
# Fast overrides for a run here, each used only when the example does not set that key.
FAST = ["prompts_per_step=4", "rollout.n_samples=4", "rollout.max_new_tokens=48", "eval_size=8",
        "model.warmup.steps=400", "algo.actor_freeze_steps=0", "ckpt.enabled=false"]


def readme_commands(text: str) -> list[str]:
    """The arguments of every `python -m launch.train` command in the text's code blocks."""
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M):
        for line in re.sub(r"\\\n", " ", block).splitlines():
            line = re.sub(r"\s#\s.*$", "", line)
            found = re.search(r"python -m launch\.train\b(.*)", line)
            if found:
                commands.append(" ".join(found.group(1).split()))
    return commands


def _shell(args: str, cwd: Path) -> str:
    """The shell's part: $PWD and $HOME (both the launch folder here), the loop variable $seed."""
    return args.replace("$PWD", str(cwd)).replace("$HOME", str(cwd)).replace("$seed", "0")


def _substituted(args: str, example: Example, stand_ins: dict[str, str]) -> str:
    for placeholder, stand_in in example.substitute.items():
        args = args.replace(placeholder, stand_in.format(**stand_ins))
    return args


def _before_ray(args: str) -> None:
    """What `launch.train` checks before Ray starts, short of downloading a hub model or
    running the memory plan (tests/launch/test_memory_plan.py): the typed config, every
    path, the warm-up, the run folder and a hub model's cache under a job, the checkpoint to
    resume. A sweep (`-m`): every point."""
    from launch.state import checkpoint
    from launch.config import to_train_config
    from launch.model.hub_model import check_cache_dir

    for overrides in _points(shlex.split(args)):
        cfg = to_train_config(compose(overrides))
        check_cache_dir(cfg)
        checkpoint.find_resume(cfg, Path(cfg.output_dir or "outputs/x"))


def _points(argv: list[str]) -> list[list[str]]:
    """The overrides of each point of a sweep (`-m a=1,2 b=x,y`: 4 points), or [argv]."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    if argv[:1] not in (["-m"], ["--multirun"]):
        return [argv]
    parsed = OverridesParser.create().parse_overrides(argv[1:])
    choices = [[f"{o.input_line.split('=', 1)[0]}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
               else [o.input_line] for o in parsed]
    return [list(point) for point in itertools.product(*choices)]


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    from launch.model.tiny_model import TinyModelConfig, ensure_tiny_model

    shared = tmp_path_factory.mktemp("shared")
    # the tiny model's folder stands in for a user's; 2048 positions for the 2048-token example
    tiny = ensure_tiny_model(TinyModelConfig(hidden_size=64, num_layers=2, num_heads=1, max_position_embeddings=2048))
    return {"tiny_model": tiny, "shared": str(shared)}


def test_every_readme_command_is_listed_and_every_listed_command_is_in_the_readme():
    found = readme_commands(README.read_text())
    assert found, f"no `python -m launch.train` command found in {README}"
    unknown = [c for c in found if c not in EXAMPLES]
    stale = [c for c in EXAMPLES if c not in found]
    assert not unknown, f"README commands this test does not know (add them to EXAMPLES): {unknown}"
    assert not stale, f"EXAMPLES no longer in {README} (remove them): {stale}"
    for args, example in EXAMPLES.items():
        assert example.run or example.covered_by or example.refused_here, f"{args}: nothing checks that it runs"
        if example.covered_by:
            assert (ROOT / example.covered_by).is_file(), example.covered_by


def test_readme_extraction_joins_continuations_and_drops_comments():
    text = ("```bash\npython -m launch.train a=1 \\\n    b=2   # note\nray job submit -- \\\n"
            "    python -m launch.train c=3\nmake demo\n```\nprose python -m launch.train d=4\n")
    assert readme_commands(text) == ["a=1 b=2", "c=3"]


@pytest.mark.parametrize("args", list(EXAMPLES))
def test_as_written_it_passes_or_is_refused_before_ray_naming_the_key(args, stand_ins, tmp_path, monkeypatch):
    example = EXAMPLES[args]
    monkeypatch.chdir(tmp_path)  # relative paths and $HOME/oreal-runs/a land here
    as_written = _shell(args, tmp_path)
    if example.refused_here:
        with pytest.raises((ValueError, FileNotFoundError)) as err:
            _before_ray(as_written)
        assert str(err.value).startswith(f"{example.refused_here}="), str(err.value)
    else:
        _before_ray(as_written)
    if example.substitute:  # (a checkpoint to resume from has no stand-in: test_resume_e2e makes one)
        _before_ray(_shell(_substituted(args, example, stand_ins), tmp_path))


@pytest.mark.parametrize("args", [a for a, e in EXAMPLES.items() if e.job])
def test_the_job_entrypoints_pass_the_checks_of_a_ray_jobs_driver(args, stand_ins, tmp_path, monkeypatch):
    """Under `ray job submit` (the job supervisor's variable set): the run folder is given, absolute."""
    from launch.ray_job import RAY_JOB_ENV

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(RAY_JOB_ENV, json.dumps({"runtime_env": {"env_vars": {"WANDB_MODE": "offline"}}}))
    _before_ray(_shell(_substituted(args, EXAMPLES[args], stand_ins), tmp_path))


# ---------------------------------------------------------------------------- e2e: they run

def _run_args(args: str, stand_ins: dict[str, str], out: Path) -> list[str]:
    given = shlex.split(_substituted(args, EXAMPLES[args], stand_ins))
    keys = {a.split("=", 1)[0].lstrip("+") for a in given}
    extra = [o for o in FAST if o.split("=", 1)[0] not in keys]
    given = [a for a in given if not a.startswith("steps=")]
    return [*given, *extra, "steps=1", f"output_dir={out}", f"hydra.run.dir={out}_hydra",
            f"ray.temp_dir={CACHE / 'ray'}"]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("args", [a for a, e in EXAMPLES.items() if e.run])
def test_it_runs_with_one_step(args, stand_ins, tmp_path, request):
    if EXAMPLES[args].needs_benchmarks:
        request.getfixturevalue("full_benchmarks")  # skips, naming the folder, where they are absent
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_SERVICE", "RAY_ADDRESS"))}
    cmd = [sys.executable, "-m", "launch.train", *_run_args(args, stand_ins, out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{shlex.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r["step"] == 1 and "rollout/samples" in r for r in rows)
    assert json.loads((out / "summary.json").read_text())["heldout_pass1_after"] is not None
