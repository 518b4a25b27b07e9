"""`make bench`: every benchmark; each prints its numbers and writes results/<name>.json."""
from __future__ import annotations

import importlib
import sys

BENCHES = ["bench.bench_verifier", "bench.bench_sync", "bench.bench_memory", "bench.bench_pipeline", "bench.bench_eval",
           "bench.cluster_model", "bench.fuzz"]


def main(argv: list[str]) -> None:
    names = argv or BENCHES
    for name in names:
        print(f"=== {name}", flush=True)
        importlib.import_module(name).main()


if __name__ == "__main__":
    main(sys.argv[1:])
