"""Build-once folders: made in a temporary folder beside the target, then renamed into place."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_cache_root() -> Path:
    """$OREAL_CACHE, else the ignored `.cache/oreal` of the work tree."""
    return Path(os.environ.get("OREAL_CACHE") or REPO_ROOT / ".cache" / "oreal")


def build_once(final: Path, build: Callable[[Path], object]) -> str:
    """`final` if it holds a finished build (its config.json), else `build(tmp)` and rename.

    A reader never sees a half-written folder; two processes building at once both end up
    with one complete folder (the loser of the rename keeps the winner's); a failed build
    leaves nothing behind.
    """
    if (final / "config.json").is_file():
        return str(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "config.json").is_file():  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final)
