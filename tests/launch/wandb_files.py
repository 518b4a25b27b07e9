"""Read an offline W&B run back from its `run-<id>.wandb` file (tests only).

The file is a LevelDB-style log of `wandb_internal_pb2.Record` protobufs: a 7-byte header
(":W&B", magic, version), then 32 KiB blocks of chunks, each with a 7-byte header
(crc32, length, type: 1 full, 2 first, 3 middle, 4 last); a block's tail shorter than a
header is padding.
"""
from __future__ import annotations

import struct
import time
from pathlib import Path

_BLOCK = 32768
_HEADER = 7


def wandb_records(path: str | Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    pos, chunk, out = _HEADER, b"", []
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if kind == 0 and n == 0:  # zero padding to the block's end
            pos += left
            continue
        if pos + _HEADER + n > len(data):  # still being written
            break
        chunk += data[pos + _HEADER:pos + _HEADER + n]
        pos += _HEADER + n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunk)
            out.append(record)
            chunk = b""
    return out


def run_info(run_dir: str | Path, timeout: float = 30.0) -> dict:
    """What an offline run folder's .wandb file says: id, name, group, job type, the step
    metric of `*`, and each history row as {key: value_json}."""
    import json

    (path,) = Path(run_dir).glob("run-*.wandb")
    records = wandb_records(path)
    deadline = time.monotonic() + timeout
    # wandb-core may still be writing the file after `finish()` returned: wait for its exit record
    while not any(r.WhichOneof("record_type") == "exit" for r in records) and time.monotonic() < deadline:
        time.sleep(0.2)
        records = wandb_records(path)
    info: dict = {"history": [], "step_metric": {}}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "run":
            info.update(id=r.run.run_id, name=r.run.display_name, group=r.run.run_group, job_type=r.run.job_type)
        elif kind == "metric" and r.metric.step_metric:
            info["step_metric"][r.metric.glob_name or r.metric.name] = r.metric.step_metric
        elif kind == "history":
            info["history"].append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item})
    return info
