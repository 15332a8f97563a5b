"""Read an offline wandb run back: the metric history a run logged, by step, from its ``run-<id>.wandb`` file.

    history = read_wandb_history(next(Path(wandb_dir).glob("wandb/offline-run-*/run-*.wandb")))
    history[2]["mempo/reward_T/mean"]        # what `wandb.log({...}, step=2)` logged

wandb 0.31 has no reader of its own for offline runs (the Python ``datastore`` went with the move to wandb-core, and
``wandb sync`` only uploads). The file is wandb's transaction log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0)
then LevelDB-log framing (32 KiB blocks; each chunk a 7-byte header: masked CRC-32C, uint16 length, type FULL /
FIRST / MIDDLE / LAST) around serialised ``wandb_internal_pb2.Record`` messages. Records are parsed with wandb's
own protobuf schema; the framing is all this module adds. Checksums are not verified: a test reads what a run wrote.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> Iterator[Any]:
    """Every ``wandb_internal_pb2.Record`` of an offline run's ``.wandb`` file, in order; a record cut off by a
    crash (a FIRST chunk with no LAST, or a short final chunk) ends the iteration, as wandb's own replay does."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if not data.startswith(HEADER):
        raise ValueError(f"{path}: not a wandb transaction log (header {data[:7]!r}, expected {HEADER!r})")
    offset, pending = len(HEADER), b""
    while offset + CHUNK_HEADER <= len(data):
        room = BLOCK_SIZE - offset % BLOCK_SIZE
        if room < CHUNK_HEADER:  # a block's tail too short for a chunk header is zero padding
            offset += room
            continue
        length, kind = struct.unpack_from("<HB", data, offset + 4)
        body = data[offset + CHUNK_HEADER : offset + CHUNK_HEADER + length]
        if kind == 0 and length == 0:  # zero fill: nothing written past here
            return
        if len(body) < length:
            return
        offset += CHUNK_HEADER + length
        if kind in (FULL, FIRST):
            pending = body
        elif kind in (MIDDLE, LAST):
            pending += body
        else:
            raise ValueError(f"{path}: unknown chunk type {kind} at byte {offset - CHUNK_HEADER - length}")
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def read_wandb_history(path: Path) -> dict[int, dict[str, Any]]:
    """The run's logged history: step -> {metric name: value}, merged over the step's history records (a name
    logged with ``nested_key`` is joined with "/")."""
    history: dict[int, dict[str, Any]] = {}
    for record in wandb_records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        row = history.setdefault(int(record.history.step.num), {})
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            if key.startswith("_"):  # wandb's own bookkeeping (_step, _timestamp, _runtime)
                continue
            row[key] = json.loads(item.value_json)
    return history
