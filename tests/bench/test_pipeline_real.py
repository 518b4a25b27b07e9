"""`bench.pipeline_real`'s pure pieces: which steps are timed, and what a run reports."""
from bench.pipeline_real import settings, step_times, summarise


def _rows():
    return [
        {"step": 0, "perf/startup_s": 28.5, "startup/engines_s": 20.0, "startup/init_ray_s": 3.0,
         "eval/pass1": 0.5},
        {"step": 1, "rollout/samples": 8, "perf/step_s": 9.0},  # RM only: no policy loss
        {"step": 2, "rollout/samples": 8, "perf/step_s": 5.0, "learner/loss": 0.1},  # first update: lazy set-up
        {"step": 3, "rollout/samples": 8, "perf/step_s": 2.0, "learner/loss": 0.1},
        {"step": 4, "rollout/samples": 8, "perf/step_s": 4.0, "learner/loss": 0.1, "eval/pass1": 0.75},
        {"step": 5, "rollout/samples": 8, "perf/step_s": 3.0, "learner/loss": 0.1},
    ]


def test_only_policy_updates_after_the_first_are_timed():
    assert step_times(_rows()) == [2.0, 4.0, 3.0]


def test_a_run_reports_its_median_step_start_up_and_pass1():
    r = summarise(_rows(), wall_s=60.0)
    assert r["step_s_median"] == 3.0 and r["steps_timed"] == 3
    assert r["startup_s"] == 28.5 and (r["pass1_before"], r["pass1_after"]) == (0.5, 0.75)
    assert r["startup_stages_s"] == {"engines": 20.0, "init_ray": 3.0}  # where the start-up went


def test_the_long_setting_is_bench_peers_and_both_leave_steps_to_time():
    from bench.bench_peer import SETTINGS

    from conftest import compose
    from launch.config import to_train_config

    demo, long = settings()["demo"], settings()["long"]
    assert long[0] == SETTINGS["long"]["overrides"]
    freeze = to_train_config(compose(demo[0])).algo.actor_freeze_steps
    assert demo[1] >= freeze + 1 + 5  # 5 timed steps past the demo's RM-only ones and the untimed first update
    assert long[1] > 1 + 1


def test_the_cpu_sampler_names_roles_and_counts_a_child_process_cpu():
    import sys

    from bench.cpu_sampler import cpu_floor, role_of

    assert role_of(["ray::LearnerWorker.setup"], False) == "LearnerWorker"
    assert role_of(["/venv/bin/python", "-m", "verifier.worker", "3"], False) == "verifier.worker"
    assert role_of(["/venv/bin/python", "/venv/ray/dashboard/agent.py", "--x"], False) == "agent.py"
    assert role_of([], False) == "other" and role_of(["anything"], True) == "driver"
    assert role_of(["python", "/ray/_private/workers/default_worker.py", "--x"], False) == "ray worker (no actor)"
    # a parent that sleeps and a child that burns CPU for ~1.5 s: the child's CPU is counted
    burn = "import time; t = time.process_time()\nwhile time.process_time() - t < 1.5: pass"
    sampler = _sampled([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-m', "
                        f"'timeit', '-n', '1', '-r', '1', {burn!r}])"])
    roles = sampler.by_role()
    assert roles.get("timeit", 0.0) > 1.0, roles
    assert sampler.at(1e9) == sampler.samples[-1][1] and sampler.at(-1.0) == {}
    assert cpu_floor({"a": 3.0, "b": 1.0}, cores=2) == {"cpu_s": 4.0, "cores": 2, "floor_s": 2.0}


def test_a_process_that_takes_an_actor_title_counts_under_that_role():
    """Ray workers start as default_worker.py and take their actor's title later: all their CPU
    goes to the actor's role, none to the name they started under."""
    import sys

    code = ("import time, setproctitle\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n"
            "setproctitle.setproctitle('ray::Burner.run')\nt = time.process_time()\n"
            "while time.process_time() - t < 0.6: pass\ntime.sleep(0.5)")
    roles = _sampled([sys.executable, "-c", code]).by_role()
    assert set(roles) == {"driver"}  # the sampled command itself: its own title does not matter
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {code!r}])"
    roles = _sampled([sys.executable, "-c", parent]).by_role()
    assert roles.get("Burner", 0.0) > 1.0 and set(roles) == {"driver", "Burner"}, roles


def _sampled(argv: list[str]):
    """`argv` run to its end under a `TreeSampler` (every 0.1 s); the sampler."""
    import subprocess

    from bench.cpu_sampler import TreeSampler

    proc = subprocess.Popen(argv)
    sampler = TreeSampler(proc.pid, every=0.1)
    proc.wait()
    sampler.stop()
    return sampler


def test_the_start_up_figure_is_the_median_over_the_demos_launches(monkeypatch, tmp_path):
    """The two mode runs count, and the extra launches run as `make demo` does (W&B offline,
    one step), each a fresh demo process of its own folder."""
    import bench.pipeline_real as pr

    launched = []

    def fake_run_one(setting, staleness, out_dir, steps=None, wandb_mode="disabled", tag=""):
        launched.append((setting, staleness, steps, wandb_mode, tag))
        return {"startup_s": [31.0, 27.0, 28.0][len(launched) - 1], "max_staleness": staleness, "steps": steps,
                "wandb_mode": wandb_mode}

    monkeypatch.setattr(pr, "run_one", fake_run_one)
    modes = [{"startup_s": 29.0, "max_staleness": 0, "steps": 12, "wandb_mode": "disabled"},
             {"startup_s": 30.0, "max_staleness": 1, "steps": 12, "wandb_mode": "disabled"}]
    out = pr.startup_launches(tmp_path, modes, n=3)
    assert out["startup_s"] == 29.0 and out["startup_max_s"] == 31.0  # median and max of 29, 30, 31, 27, 28
    assert [r["startup_s"] for r in out["startup_runs"]] == [29.0, 30.0, 31.0, 27.0, 28.0]
    assert [r["wandb"] for r in out["startup_runs"]] == ["disabled"] * 2 + ["offline"] * 3
    assert [r["run"] for r in out["startup_runs"]][1:3] == ["max_staleness=1, steps=12", "max_staleness=0, steps=1"]
    assert launched == [("demo", 0, 1, "offline", f"-launch{i}") for i in range(3)]
    assert len({t for *_, t in launched}) == 3  # no launch reuses another's run folder
