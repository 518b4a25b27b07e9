"""Where a results file came from: `"provenance": stamp(invoked("bench.bench_sync"))` in each
writer's JSON, read back by `python -m bench.report` under each table of docs/benchmarks.md."""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from pathlib import Path


def machine() -> str:
    """E.g. '2-core x86_64 CPU, 24 GiB (no GPU)' or '16-core x86_64, 128 GiB, NVIDIA H100 80GB HBM3'."""
    try:
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
        ram = f", {round(kb / 2**20)} GiB"
    except (OSError, StopIteration, ValueError, IndexError):
        ram = ""
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            gpu = f"{n} x {torch.cuda.get_device_name(0)}" if n > 1 else torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - no torch, or a broken driver: say what is known
        pass
    return f"{os.cpu_count()}-core {platform.machine()} CPU{ram} ({gpu})"


def invoked(module: str) -> str:
    """The command line that made this process write `module`'s results: its own `python -m`
    line with its arguments, `make bench` under bench.run_all, else `python -m <module>`."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    main = getattr(spec, "name", None)
    if main == module:
        return shlex.join(["python", "-m", module, *sys.argv[1:]])
    if main == "bench.run_all":
        return "make bench" if not sys.argv[1:] else shlex.join(["python", "-m", "bench.run_all", *sys.argv[1:]])
    return f"python -m {module}"


def stamp(command: str) -> dict[str, str]:
    """{"command", "machine", "date"} (date: today, UTC)."""
    return {"command": command, "machine": machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat()}
