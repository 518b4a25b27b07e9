"""SHA-256 manifests of checkpoint folders: a resume reads back exactly the bytes that were saved.

`manifest.sha256` sits beside `COMPLETE` and is in `sha256sum`'s format (`<hex>  <path>` per
line, paths relative to the checkpoint folder), so `sha256sum -c manifest.sha256` run inside
the folder checks it too. It lists every file of the checkpoint but `COMPLETE` and itself.

Who hashes: each learner rank hashes the shards it wrote, right after writing them (on its own
node, while they are in its page cache: a 7B run's ~100 GB of ZeRO shards are hashed in
parallel across the ranks, not by the driver); the driver hashes the rest (driver.json, the
Hugging Face policy) and checks that the two together cover the folder. A resume re-hashes
every file on the driver before Ray starts, on a thread per core (hashlib releases the GIL):
about 1 GB/s a core here, so the cost is the checkpoint's size over the disk's read speed.

A manifest catches a file changed, truncated, missing or added after the save; it does not make
a checkpoint from someone else safe to load (its author writes the manifest too): resume only
checkpoints you trust.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Mapping

from learner.ckpt_io import sha256_file

MANIFEST = "manifest.sha256"


def checkpoint_files(folder: Path, skip: Iterable[str] = ()) -> list[str]:
    """Every file under `folder` (relative, '/'-separated, sorted), but the manifest and `skip`."""
    out = []
    for dirpath, _, names in os.walk(folder):
        for name in names:
            rel = Path(dirpath, name).relative_to(folder).as_posix()
            if rel != MANIFEST and rel not in skip:
                out.append(rel)
    return sorted(out)


def hash_files(folder: Path, rels: Iterable[str], threads: int | None = None) -> dict[str, str]:
    """{relative path: sha256} of `rels` under `folder`, a thread per core."""
    rels = list(rels)
    with ThreadPoolExecutor(max_workers=threads or min(len(rels), os.cpu_count() or 1) or 1) as pool:
        return dict(zip(rels, pool.map(lambda r: sha256_file(Path(folder) / r), rels)))


def write_manifest(folder: Path, known: Mapping[str, str] | None = None, skip: Iterable[str] = ()) -> dict[str, str]:
    """Write `folder/manifest.sha256` for every file under it but `skip`; `known` holds hashes
    already taken (the learner ranks'), keyed by path relative to `folder`; the rest are hashed
    here. Returns the manifest."""
    files = checkpoint_files(folder, skip)
    present = set(files)
    known = {k: v for k, v in (known or {}).items() if k in present}
    digests = {**hash_files(folder, [f for f in files if f not in known]), **known}
    text = "".join(f"{digests[f]}  {f}\n" for f in files)
    with open(Path(folder) / MANIFEST, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return {f: digests[f] for f in files}


def read_manifest(folder: Path) -> dict[str, str]:
    """The manifest of `folder`; ValueError (one line) when it is absent or malformed."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ValueError(f"no {MANIFEST}")
    out = {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not rel:
            raise ValueError(f"{MANIFEST} line {n} is not '<sha256>  <path>'")
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise ValueError(f"{MANIFEST} line {n} names a path outside the checkpoint: {rel[:80]!r}")
        out[rel] = digest
    return out


def verify_manifest(folder: Path, skip: Iterable[str] = ()) -> list[str]:
    """What differs between `folder` and its manifest (empty: every byte as saved): files
    missing, changed or not in the manifest. ValueError when there is no usable manifest."""
    listed = read_manifest(folder)
    present = checkpoint_files(folder, skip)
    problems = [f"{rel} is missing" for rel in sorted(set(listed) - set(present))]
    problems += [f"{rel} is not in the manifest" for rel in present if rel not in listed]
    now = hash_files(folder, [rel for rel in present if rel in listed])
    problems += [f"{rel} changed (sha256 {now[rel][:12]}, saved {listed[rel][:12]})"
                 for rel in sorted(now) if now[rel] != listed[rel]]
    return problems
