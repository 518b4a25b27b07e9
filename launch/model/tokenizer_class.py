"""Load a local tokenizer as `AutoTokenizer` does, without AutoTokenizer's import on later runs.

`transformers.AutoTokenizer`'s module imports transformers' config machinery and torch: 5 of
the 7.5 CPU-seconds the driver spends on its tokenizer, on the start-up's critical path (2
cores). What it buys is the choice of one class, which depends only on the model folder's
small files, its path and the transformers version. The first load of a folder records the
class it chose, keyed by those; a later load with the same key calls that class's
`from_pretrained` directly, as AutoTokenizer itself ends by doing. Hub names, remote-code
classes and unreadable records take AutoTokenizer every time.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Any

# The files AutoTokenizer reads to choose a class; every other file counts by its name only.
_CHOICE_FILES = ("tokenizer_config.json", "config.json")


def load_tokenizer(model_path: str) -> Any:
    """The tokenizer `AutoTokenizer.from_pretrained(model_path)` returns."""
    record = _record_path(model_path)
    cls = _recorded_class(record) if record is not None else None
    if cls is not None:
        return cls.from_pretrained(model_path)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if record is not None:
        _record(record, type(tokenizer))
    return tokenizer


def _record_path(model_path: str) -> Path | None:
    """Where the choice for this folder is kept; None for a hub name."""
    folder = Path(model_path)
    if not folder.is_dir():
        return None
    from transformers import __version__
    from launch.model.cache import default_cache_root

    key = hashlib.sha256()
    for part in (str(folder.resolve()), __version__, *sorted(p.name for p in folder.iterdir())):
        key.update(part.encode() + b"\0")
    for name in _CHOICE_FILES:
        file = folder / name
        key.update(file.read_bytes() if file.is_file() else b"-")
    return default_cache_root() / "tokenizer-class" / f"{key.hexdigest()[:20]}.json"


def _recorded_class(record: Path) -> type | None:
    try:
        chosen = json.loads(record.read_text())
        return getattr(importlib.import_module(chosen["module"]), chosen["name"])
    except (OSError, ValueError, KeyError, TypeError, ImportError, AttributeError):
        return None  # no record, or one this install cannot follow: AutoTokenizer decides


def _record(record: Path, cls: type) -> None:
    if not cls.__module__.startswith("transformers."):
        return  # remote code: AutoTokenizer fetches and trusts it each time
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_name(f".{record.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"module": cls.__module__, "name": cls.__name__}))
    os.replace(tmp, record)
