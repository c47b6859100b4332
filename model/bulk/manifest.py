"""``OUT.progress``: what a bulk run has written, as JSON lines, each ``fsync``-ed after the data it describes.

- the first line, written before anything else: the run's settings (everything that changes a number:
  the model, pred_len, sampling, the input file's SHA-256...), the call seed, the output columns and
  format, and the byte offsets of the empty output and errors files;
- one line per finished chunk: its ids (``ids``: all of them, ``failed``: those that could not be
  forecast), and where the output stands after it (``offset`` for CSV, ``part`` for Parquet,
  ``errors_offset`` for ``--errors``);
- ``{"complete": true}`` once OUT is whole.

A line torn by a kill mid-write (no newline, or not JSON) and anything after it is dropped on reading.
The file stays next to a finished OUT: it records the seed and settings that made it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .files import fsync_dir

VERSION = 1
TAG = "kronos-forecast progress"


def manifest_path(out: Path) -> Path:
    return out.with_name(out.name + ".progress")


@dataclass
class Manifest:
    path: Path
    header: dict
    chunks: list[dict] = field(default_factory=list)
    complete: bool = False

    @property
    def done_ids(self) -> set[str]:
        return {i for chunk in self.chunks for i in chunk["ids"]}

    @property
    def failed(self) -> int:
        return sum(len(chunk["failed"]) for chunk in self.chunks)

    @property
    def forecast(self) -> int:
        return sum(len(chunk["ids"]) - len(chunk["failed"]) for chunk in self.chunks)

    @property
    def last(self) -> dict:
        """Where the output stood after the last chunk (the header's offsets before any)."""
        return self.chunks[-1] if self.chunks else self.header

    @classmethod
    def create(cls, path: Path, header: dict) -> Manifest:
        header = {"format": TAG, "version": VERSION, **header}
        with open(path, "wb") as f:
            f.write(_line(header))
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(path.parent)
        return cls(path, header)

    @classmethod
    def load(cls, path: Path) -> Manifest | None:
        """The manifest at ``path``, its torn tail cut off; None when there is none or its first line is torn."""
        if not path.is_file():
            return None
        data = path.read_bytes()
        records, good = [], 0
        for raw in data.split(b"\n")[:-1]:  # the piece after the last newline is torn or empty
            try:
                record = json.loads(raw)
            except ValueError:
                break
            if not isinstance(record, dict):
                break
            records.append(record)
            good += len(raw) + 1
        if not records:
            return None
        header = records[0]
        if header.get("format") != TAG:
            raise InputError(f"{str(path)!r} is not a kronos-forecast progress file")
        if header.get("version") != VERSION:
            raise InputError(f"{str(path)!r} is from another version of kronos-forecast: run without --resume")
        if good < len(data):
            with open(path, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())
        manifest = cls(path, header)
        for record in records[1:]:
            if record.get("complete"):
                manifest.complete = True
            elif "chunk" in record:
                manifest.chunks.append(record)
        return manifest

    def add_chunk(self, record: dict) -> None:
        self._append(record)
        self.chunks.append(record)

    def mark_complete(self) -> None:
        self._append({"complete": True})
        self.complete = True

    def _append(self, record: dict) -> None:
        with open(self.path, "ab") as f:
            f.write(_line(record))
            f.flush()
            os.fsync(f.fileno())


def _line(record: dict) -> bytes:
    return (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()


def differences(recorded: dict, current: dict, names: dict[str, str]) -> list[str]:
    """What changed between the recorded and the current settings, as ``--option: was → now`` strings."""
    out = []
    for key in sorted(set(recorded) | set(current)):
        was, now = recorded.get(key), current.get(key)
        if was != now:
            out.append(f"{names.get(key, key)}: {_shown(was)} then, {_shown(now)} now")
    return out


def _shown(value) -> str:
    if isinstance(value, str) and len(value) > 24 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "…"  # a digest
    return json.dumps(value)
