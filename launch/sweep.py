"""Where a run or a sweep point writes, and its W&B group and name.

`python -m launch.train -m algo=bc,oreal seed=0,1` (Hydra's multirun) runs 4 points one after
another in one driver. Each point gets:

- its own run folder: Hydra's `<hydra.sweep.dir>/<hydra.sweep.subdir>` (default
  `multirun/DATE/TIME/N`), or `<output_dir>/N` when `output_dir` is set (one sweep folder on
  shared storage; `output_dir=<point folder> ckpt.resume=auto` resumes one point alone);
- its own W&B run, named after the point's values of the swept keys
  (`algo=bc,seed=1`; `wandb.name` overrides it);
- the sweep's W&B group: `wandb.group`, else the sweep folder's id (Hydra's default
  `multirun/2026-11-05/12-34-56` gives `2026-11-05_12-34-56`, any other folder its name).

A single run (no `-m`) keeps `wandb.name` and `wandb.group` as given: null leaves it
ungrouped, with the name W&B picks.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path, PurePath
from typing import Iterable, Sequence

from launch.config import TrainConfig

# Keys that say where a run goes or how it is logged, not what it trains: left out of a name.
_PLUMBING = ("output_dir", "ray.", "wandb.", "hydra.", "ckpt.", "plan.")


def sweep_group(sweep_dir: str | PurePath) -> str:
    """The sweep's id, the same for every point of one sweep: Hydra's default sweep folder
    `.../multirun/DATE/TIME` -> `DATE_TIME`; any other folder -> its name."""
    p = PurePath(sweep_dir)
    if p.parent.parent.name == "multirun":
        return f"{p.parent.name}_{p.name}"
    return p.name


def swept_keys(argv: Sequence[str], sweeper_params: Iterable[str] = ()) -> set[str]:
    """Keys the command line (or `hydra.sweeper.params`) sweeps: `seed=0,1` and
    `algo=choice(bc,oreal)` are sweeps, `steps=1` is not."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args, _ = get_args_parser().parse_known_args(list(argv))
    overrides = OverridesParser.create().parse_overrides(args.overrides or [])
    return {o.key_or_group for o in overrides if o.is_sweep_override()} | set(sweeper_params)


def point_name(overrides: Sequence[str], swept: set[str]) -> str | None:
    """A sweep point's run name: its values of the swept keys, sorted, Hydra's
    `override_dirname` style (`algo.eta=0.1,seed=1`). With no swept key among them: all of
    its overrides but the plumbing ones (`_PLUMBING`); None when nothing is left."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    picked = [o for o in parsed if o.key_or_group in swept]
    if not picked:
        picked = [o for o in parsed if not o.key_or_group.startswith(_PLUMBING)]
    items = sorted(f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in picked)
    return ",".join(items) or None


def place_run(cfg: TrainConfig, hydra_cfg, argv: Sequence[str] | None = None) -> tuple[TrainConfig, Path]:
    """(cfg with the W&B group and name of this run or point filled in, its run folder).
    `hydra_cfg` is `HydraConfig.get()`."""
    from hydra.types import RunMode

    if hydra_cfg.mode != RunMode.MULTIRUN:
        return cfg, Path(cfg.output_dir or hydra_cfg.runtime.output_dir).resolve()
    subdir = str(hydra_cfg.sweep.subdir)
    sweep_dir = Path(cfg.output_dir) if cfg.output_dir else Path(hydra_cfg.sweep.dir)
    run_dir = (sweep_dir / subdir).resolve() if cfg.output_dir else Path(hydra_cfg.runtime.output_dir).resolve()
    params = (hydra_cfg.sweeper.get("params") or {}).keys()
    swept = swept_keys(sys.argv[1:] if argv is None else argv, params)
    wandb = dataclasses.replace(cfg.wandb, group=cfg.wandb.group or sweep_group(sweep_dir.resolve()),
                                name=cfg.wandb.name or point_name(list(hydra_cfg.overrides.task), swept))
    return dataclasses.replace(cfg, wandb=wandb), run_dir
