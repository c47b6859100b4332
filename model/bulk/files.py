"""The files of a bulk run: the input table, and the output written so that a kill loses at most a chunk.

**CSV out.** One file, the header written once, each chunk's rows appended and ``fsync``-ed before the
manifest records the byte offset after them; a resume truncates the file back to the last recorded
offset (which drops a line torn by a kill mid-write). Numbers are written as Python's ``repr`` (they read
back exactly); timestamps in one format for the whole run (``date_format``).

**Parquet out.** A Parquet file cannot be appended to, nor trusted after a kill mid-write, so each chunk
is its own part file ``OUT.parts/part-00000.parquet`` (written to a temporary name, ``fsync``-ed and
renamed, so a part is whole or absent); at the end the parts listed in the manifest are streamed, in
order, into ``OUT`` (again a temporary name, then a rename) and ``OUT.parts`` is removed. A resume
deletes every part the manifest does not list.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pandas as pd

from ..errors import InputError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
ERRORS_HEADER = b"id,message\n"
# pandas 3 reads every float exactly as written; pandas 2's default parser can be off in the last digit.
EXACT_FLOATS = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


def table_format(path: Path, what: str) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise InputError(
            f"{what} {str(path)!r}: unknown file type {path.suffix or '(none)'!r}; use .csv or .parquet"
        ) from None


def read_table(path: Path) -> pd.DataFrame:
    """The input table, or an InputError that says why it cannot be read."""
    kind = table_format(path, "INPUT")
    if not path.is_file():
        raise InputError(f"INPUT {str(path)!r}: no such file")
    try:
        if kind == "csv":
            frame = pd.read_csv(path, **EXACT_FLOATS)
        else:
            frame = pd.read_parquet(path)
    except (OSError, ValueError, ImportError, UnicodeDecodeError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"INPUT {str(path)!r} is not a readable {kind} table ({detail})") from None
    if frame.empty:
        raise InputError(f"INPUT {str(path)!r} has no rows")
    return frame


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def date_format(stamps: pd.Series, freq: str | None) -> str:
    """One timestamp format for the whole output (pandas would pick one per chunk): dates only for a daily
    universe (every input timestamp at midnight and no ``--freq``), else seconds, plus fractions and the
    UTC offset where the input has them."""
    try:
        parsed = pd.Series(pd.to_datetime(stamps, errors="coerce")).dropna()
    except (TypeError, ValueError, OverflowError):  # mixed zones, say: the series say what is wrong
        return "%Y-%m-%d %H:%M:%S"
    if not len(parsed) or not pd.api.types.is_datetime64_any_dtype(parsed):
        return "%Y-%m-%d %H:%M:%S"
    zone = "%z" if getattr(parsed.dt, "tz", None) is not None else ""
    if (parsed.dt.microsecond != 0).any() or (parsed.dt.nanosecond != 0).any():
        return "%Y-%m-%d %H:%M:%S.%f" + zone
    if freq is None and not zone and (parsed.dt.normalize() == parsed).all():
        return "%Y-%m-%d"
    return "%Y-%m-%d %H:%M:%S" + zone


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every system opens folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def append_bytes(path: Path, data: bytes) -> int:
    """Append ``data`` to ``path``, flushed to disk; the file's size after."""
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


def write_fresh(path: Path, data: bytes) -> int:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(path.parent)
    return len(data)


def truncate_to(path: Path, size: int) -> None:
    """Cut ``path`` back to ``size`` bytes (what the manifest recorded); refuse a file shorter than that."""
    actual = path.stat().st_size if path.exists() else -1
    if actual < size:
        raise InputError(
            f"{str(path)!r} is shorter than OUT.progress records ({max(actual, 0)} < {size} bytes): it was changed "
            "since; run again without --resume to start over"
        )
    if actual > size:
        with open(path, "r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())


def errors_bytes(errors: list[tuple[object, str]]) -> bytes:
    return (
        pd.DataFrame(errors, columns=["id", "message"]).to_csv(index=False, header=False, lineterminator="\n").encode()
    )


class CsvOut:
    """The CSV output: a header, then each chunk appended (see the module docstring)."""

    def __init__(self, path: Path, columns: list[str], date_format: str):
        self.path, self.columns, self.date_format = path, columns, date_format

    def header(self) -> bytes:
        return pd.DataFrame(columns=self.columns).to_csv(index=False, lineterminator="\n").encode()

    def start(self) -> dict:
        return {"offset": write_fresh(self.path, self.header())}

    def reopen(self, last: dict, chunked: bool, listed: set[str]) -> None:
        if chunked:
            truncate_to(self.path, last["offset"])
        else:  # killed before the first chunk: the header may be missing or torn
            write_fresh(self.path, self.header())

    def append(self, frame: pd.DataFrame, chunk: int) -> dict:
        if frame.empty:
            return {"offset": self.path.stat().st_size}
        text = frame.to_csv(index=False, header=False, lineterminator="\n", date_format=self.date_format)
        return {"offset": append_bytes(self.path, text.encode())}

    def finish(self, records: list[dict]) -> None:
        pass  # every chunk is in place already

    def clean(self) -> None:
        pass


class ParquetOut:
    """The Parquet output: a part file per chunk, combined at the end (see the module docstring)."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        self.parts = path.with_name(path.name + ".parts")

    def start(self) -> dict:
        shutil.rmtree(self.parts, ignore_errors=True)
        self.parts.mkdir(parents=True)
        return {}

    def reopen(self, last: dict, chunked: bool, listed: set[str]) -> None:
        self.parts.mkdir(parents=True, exist_ok=True)
        for part in self.parts.iterdir():
            if part.name not in listed:
                part.unlink()  # a temporary file, or a part written after the last manifest line
        missing = sorted(listed - {p.name for p in self.parts.iterdir()})
        if missing:
            raise InputError(
                f"{str(self.parts)!r} lacks {missing[0]}, which OUT.progress lists: run again without --resume"
            )

    def append(self, frame: pd.DataFrame, chunk: int) -> dict:
        if frame.empty:
            return {"part": None}
        name = f"part-{chunk:05d}.parquet"
        temporary = self.parts / (name + ".tmp")
        frame.to_parquet(temporary, index=False)
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temporary, self.parts / name)
        fsync_dir(self.parts)
        return {"part": name}

    def finish(self, records: list[dict]) -> None:
        import pyarrow.parquet as pq

        names = [r["part"] for r in records if r.get("part")]
        temporary = self.path.with_name(self.path.name + ".tmp")
        if not names:
            pd.DataFrame(columns=self.columns).to_parquet(temporary, index=False)
        else:
            schema = pq.read_schema(self.parts / names[0])
            with pq.ParquetWriter(temporary, schema) as writer:
                for name in names:
                    table = pq.read_table(self.parts / name)
                    writer.write_table(table if table.schema.equals(schema) else table.cast(schema))
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temporary, self.path)
        fsync_dir(self.path.parent)

    def clean(self) -> None:
        shutil.rmtree(self.parts, ignore_errors=True)
