"""Every learner rank must see the run folder: each rank writes its checkpoint shards there and
rank 0 the policy. On a cluster `output_dir` must be on storage every node mounts; a folder that
exists on the driver's node only would otherwise show up hours later, as a checkpoint that
cannot be resumed. So at start-up, before any model loads, the driver writes a sentinel file
holding a random token into the run folder, and every rank reads it back on its own node."""
from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path

# The sentinel's name in the run folder (+ the token's first characters); removed after the check.
SENTINEL_PREFIX = ".oreal-shared-check-"
# How long a rank looks for it: a network filesystem may show a new file a moment late.
SENTINEL_WAIT_S = 5.0


class RunFolderNotShared(RuntimeError):
    """A learner rank cannot read the driver's sentinel in the run folder (one line)."""


def write_sentinel(run_dir: str | os.PathLike) -> tuple[str, str]:
    """(path, token) of a new sentinel in `run_dir` (made if missing), on disk before it returns."""
    token = secrets.token_hex(16)
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{SENTINEL_PREFIX}{token[:12]}"
    with open(path, "w") as f:
        f.write(token)
        f.flush()
        os.fsync(f.fileno())
    return str(path), token


def check_sentinel(path: str, token: str, wait_s: float | None = None) -> str | None:
    """None when `path` holds `token`, as read on this node; else why not, in a few words.
    Retried for up to `wait_s` (SENTINEL_WAIT_S)."""
    deadline = time.monotonic() + (SENTINEL_WAIT_S if wait_s is None else wait_s)
    while True:
        try:
            found = Path(path).read_text()
            problem = None if found == token else "it holds another token: the same path on another filesystem"
        except FileNotFoundError:
            problem = "no such file: the folder is not the driver's"
        except OSError as e:
            problem = f"{type(e).__name__}: {e.strerror or e}"
        if problem is None or time.monotonic() >= deadline:
            return problem
        time.sleep(0.25)


def remove_sentinel(path: str) -> None:
    Path(path).unlink(missing_ok=True)


def node_name() -> str:
    """This node as a person finds it in the cluster: its hostname and Ray node IP."""
    host = socket.gethostname()
    try:
        import ray

        if ray.is_initialized():
            return f"{host} ({ray.util.get_node_ip_address()})"
    except Exception:  # the name alone is still worth reporting
        pass
    return host


def not_shared_error(run_dir: str, sentinel: str, failures: dict[int, tuple[str, str]]) -> RunFolderNotShared:
    """One line naming output_dir, the first failing rank, its node and why; `failures`: rank ->
    (node, problem) of every rank that could not read the sentinel."""
    ranks = sorted(failures)
    node, problem = failures[ranks[0]]
    more = ""
    if len(ranks) > 1:
        nodes = sorted({failures[r][0] for r in ranks})
        more = f"; ranks {', '.join(map(str, ranks))} fail alike (on {', '.join(nodes)})"
    return RunFolderNotShared(
        f"output_dir={run_dir} is not on storage every learner rank sees: rank {ranks[0]} on node {node} cannot "
        f"read the file {Path(sentinel).name} the driver (on {node_name()}) wrote there ({problem}){more}. "
        "Every rank writes its checkpoint shards to the run folder: give output_dir on a filesystem "
        "every node mounts at the same path")
