"""Peak resident memory of this process, resettable (Linux): what a sync adds on top of a
process's steady state, measured rather than estimated (`bench.bench_sync`)."""
from __future__ import annotations


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def reset_peak() -> int:
    """Reset the peak (VmHWM) to the current resident set; returns the current RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kb("VmRSS") * 1024


def peak() -> int:
    """Peak resident set (VmHWM) in bytes since the last `reset_peak`."""
    return _status_kb("VmHWM") * 1024
