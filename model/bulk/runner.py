"""``kronos-forecast INPUT --id-column COL --out OUT``: a universe from a file, forecast chunk by chunk.

The input is read whole (CSV or Parquet), its series forecast ``batch_size`` at a time in sorted id order
(``model.decoding.table.run_table``), and each finished chunk is appended to OUT at once (``files``) and
then recorded in ``OUT.progress`` (``manifest``), so a run killed at any moment, even by ``kill -9``,
loses at most the chunk in flight. ``--resume`` cuts OUT back to the last recorded chunk, forecasts the
ids not yet recorded with the recorded call seed, and appends them: each series' seed depends only on
the call seed and its id, so the finished OUT is the uninterrupted run's, row for row. A resume whose
settings (or input file) differ from the recorded ones is refused.

Exit status: 0 when at least one series was forecast; 1 when none could be; 2 when the input, the
options or the model cannot be used (a message, no traceback); 130 when interrupted.
"""

from __future__ import annotations

import dataclasses
import secrets
import sys
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..decoding.forecast import PRICE_COLUMNS, SEED_BITS, frame_columns
from ..decoding.table import TableSettings, check_table, empty_output, ordered_ids, run_table
from ..errors import InputError, KronosError
from .files import (
    ERRORS_HEADER,
    CsvOut,
    ParquetOut,
    append_bytes,
    date_format,
    errors_bytes,
    file_digest,
    read_table,
    table_format,
    truncate_to,
    write_fresh,
)
from .manifest import Manifest, differences, manifest_path

PROGRAM = "kronos-forecast"
LINE_EVERY_S = 1.0  # plain progress lines (stderr not a terminal): at most one a second, and the last
SHOWN_ERRORS = 3  # failures named on stderr when there is no --errors file

# The options that name each recorded setting in a refusal.
OPTION_NAMES = {
    "pred_len": "--pred-len",
    "id_column": "--id-column",
    "timestamp_column": "--timestamp-column",
    "sample_count": "--sample-count",
    "T": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "repair": "repair (--no-repair)",
    "window": "--window",
    "quantiles": "--quantiles",
    "freq": "--freq",
    "calendar": "--calendar",
    "lookback": "--lookback",
    "seed": "--seed",
    "errors": "--errors",
    "input_sha256": "INPUT (its contents)",
    "model": "--model",
    "revision": "--revision",
    "tokenizer": "--tokenizer",
    "tokenizer_revision": "--tokenizer-revision",
    "max_context": "--max-context",
    "device": "--device",
}


@dataclass
class BulkJob:
    """One bulk run. ``settings.seed`` None: drawn on a fresh run, the recorded one on a resume.
    ``model``: what identifies the weights and the device (recorded; a resume must match)."""

    input: Path
    out: Path
    settings: TableSettings
    model: dict = field(default_factory=dict)
    errors: Path | None = None
    resume: bool = False
    progress: bool = True


def say(text: str) -> None:
    print(f"{PROGRAM}: {text}", file=sys.stderr, flush=True)


class Progress:
    """Series done of total on stderr: a tqdm bar on a terminal, else a plain line per chunk (at most one a
    second); nothing with ``--no-progress``."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.total, self.done, self.start_done = total, done, done
        self.started = self.last_line = time.monotonic()
        self.bar = None
        self.lines = enabled and not sys.stderr.isatty()
        if enabled and not self.lines:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="series", desc=PROGRAM, file=sys.stderr, smoothing=0.1)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0

    def advance(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
        elif self.lines and (time.monotonic() - self.last_line >= LINE_EVERY_S or self.done >= self.total):
            self.last_line = time.monotonic()
            rate = self.rate
            left = (
                f", about {(self.total - self.done) / rate:.0f} s left" if rate > 0 and self.done < self.total else ""
            )
            say(f"{self.done}/{self.total} series, {rate:.1f} series/s{left}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class Plan:
    """What the run will do, once the input is read and the manifest settled."""

    table: pd.DataFrame  # normalised: columns id and timestamps; only the ids still to forecast
    total: int
    manifest: Manifest
    out: CsvOut | ParquetOut
    settings: TableSettings  # for run_table: id/timestamps columns, the call seed
    rename: dict[str, str]


def run(job: BulkJob, load_forecast: Callable[[], Callable]) -> int:
    """The whole run (see the module docstring); ``load_forecast()`` loads the model only when a series is left."""
    started = time.monotonic()
    try:
        plan = prepare(job)
    except (KronosError, OSError) as exc:
        say(f"error: {exc}")
        return 2
    manifest, before = plan.manifest, (plan.manifest.forecast, plan.manifest.failed)
    failures: list[tuple[Hashable, str]] = []
    progress = Progress(plan.total, len(manifest.done_ids), job.progress and not manifest.complete)
    try:
        if not plan.table.empty:
            loaded: list[Callable] = []

            def forecast(series: list) -> list:  # the model is loaded for the first chunk with a good series
                if not loaded:
                    loaded.append(load_forecast())
                    progress.started = time.monotonic()
                return loaded[0](series)

            def on_chunk(rows: pd.DataFrame, errors: list[tuple[Hashable, str]]) -> None:
                record_chunk(job, plan, rows, errors)
                failures.extend(errors)
                progress.advance(len(manifest.chunks[-1]["ids"]))

            run_table(forecast, plan.table, plan.settings, on_chunk=on_chunk)
        if not manifest.complete:
            plan.out.finish(manifest.chunks)
            manifest.mark_complete()
        plan.out.clean()
    except KeyboardInterrupt:
        progress.close()
        say(f"interrupted: {len(manifest.done_ids)} of {plan.total} series written; --resume continues")
        return 130
    except (KronosError, OSError, ValueError) as exc:
        progress.close()
        say(f"error: {exc} ({len(manifest.done_ids)} of {plan.total} series written; --resume continues)")
        return 2
    progress.close()
    return summary(job, plan, failures, before, time.monotonic() - started)


def summary(job: BulkJob, plan: Plan, failures: list, before: tuple[int, int], elapsed: float) -> int:
    manifest = plan.manifest
    if job.errors is None:
        for series_id, message in failures[:SHOWN_ERRORS]:
            say(f"series {series_id!r} not forecast: {message}")
        if len(failures) > SHOWN_ERRORS:
            say(f"... and {len(failures) - SHOWN_ERRORS} more (--errors FILE lists every one)")
    this_run = manifest.forecast + manifest.failed - sum(before)
    earlier = f" ({this_run} this run, {sum(before)} before)" if job.resume and sum(before) else ""
    if job.resume and this_run == 0 and sum(before):
        earlier = " (all before: OUT was complete already)"
    rate = this_run / elapsed if elapsed > 0 else 0.0
    seed = manifest.header["seed"]
    say(
        f"{manifest.forecast} series forecast, {manifest.failed} failed{earlier}, {elapsed:.1f} s, "
        f"{rate:.1f} series/s; seed {seed} (--seed {seed} reproduces it); wrote {job.out}"
    )
    if manifest.forecast == 0:
        say("error: no series could be forecast" + (f" (see {job.errors})" if job.errors else ""))
        return 1
    return 0


def prepare(job: BulkJob) -> Plan:
    settings = job.settings
    settings.check()
    kind = table_format(job.out, "--out")
    if job.out.resolve() == job.input.resolve():
        raise InputError("--out must not be INPUT")
    frame = frame_columns(read_table(job.input), f"INPUT {str(job.input)!r}")
    id_column, time_column = settings.id_column.strip().lower(), settings.timestamp_column.strip().lower()
    missing = [c for c in (id_column, time_column, *PRICE_COLUMNS) if c not in frame.columns]
    if missing:
        raise InputError(
            f"INPUT {str(job.input)!r} has no column(s) {', '.join(missing)} (--id-column {settings.id_column!r}, "
            f"--timestamp-column {settings.timestamp_column!r}); the columns are {', '.join(map(str, frame.columns))}"
        )
    clashes = [c for c in ("id", "timestamps") if c in frame.columns and c not in (id_column, time_column)]
    table = check_table(
        frame.drop(columns=clashes), dataclasses.replace(settings, id_column=id_column, timestamp_column=time_column)
    )
    ids = ordered_ids(table["id"])
    if not ids:
        raise InputError(f"INPUT {str(job.input)!r}: the {id_column} column holds no ids")
    recorded = {
        "pred_len": int(settings.pred_len),
        "id_column": id_column,
        "timestamp_column": time_column,
        "sample_count": int(settings.sample_count),
        "T": float(settings.T),
        "top_k": int(settings.top_k),
        "top_p": float(settings.top_p),
        "repair": bool(settings.clean),
        "window": settings.window,
        "quantiles": [float(q) for q in settings.quantiles],
        "freq": settings.freq,
        "calendar": settings.calendar,
        "lookback": None if settings.lookback is None else int(settings.lookback),
        "errors": None if job.errors is None else str(job.errors.resolve()),
        "input_sha256": file_digest(job.input),
        **job.model,
    }
    manifest, resumed = settled_manifest(job, kind, table, recorded)
    rename = {"id": id_column, "timestamps": time_column}
    columns = manifest.header["columns"]
    out = CsvOut(job.out, columns, manifest.header["date_format"]) if kind == "csv" else ParquetOut(job.out, columns)
    if resumed and not manifest.complete:
        out.reopen(manifest.last, bool(manifest.chunks), {c["part"] for c in manifest.chunks if c.get("part")})
        if job.errors is not None:
            if manifest.chunks:
                truncate_to(job.errors, manifest.last["errors_offset"])
            else:
                write_fresh(job.errors, ERRORS_HEADER)
    elif not resumed:  # a fresh run: the manifest is written, now the empty files it describes
        out.start()
        if job.errors is not None:
            write_fresh(job.errors, ERRORS_HEADER)
    elif not job.out.exists():
        raise InputError(f"{manifest.path} says OUT is complete, but {str(job.out)!r} is missing: run without --resume")
    done = manifest.done_ids
    left = table[~table["id"].astype(str).isin(done)] if done else table
    seed = manifest.header["seed"]
    return Plan(
        left,
        len(ids),
        manifest,
        out,
        dataclasses.replace(settings, id_column="id", timestamp_column="timestamps", seed=seed),
        rename,
    )


def settled_manifest(job: BulkJob, kind: str, table: pd.DataFrame, recorded: dict) -> tuple[Manifest, bool]:
    """The recorded manifest (checked against the settings) and True on a resume, else a fresh one and False."""
    path = manifest_path(job.out)
    parts = job.out.with_name(job.out.name + ".parts")
    if job.resume:
        manifest = Manifest.load(path)
        if manifest is not None:
            header = manifest.header
            changed = differences(header["settings"], recorded, OPTION_NAMES)
            if job.settings.seed is not None and job.settings.seed != header["seed"]:
                changed.append(f"--seed: {header['seed']} then, {job.settings.seed} now")
            if changed:
                raise InputError(
                    f"--resume refused: the settings differ from those recorded in {str(path)!r} "
                    f"({'; '.join(changed)}). Rerun with the recorded settings, or without --resume to start over"
                )
            return manifest, True
        if path.exists():
            say(f"--resume: {path.name} was torn before its first line was written, starting from the beginning")
        elif job.out.exists() or parts.exists():
            raise InputError(
                f"--resume: {str(job.out)!r} exists but {str(path)!r} does not, so what it holds is unknown; "
                "run without --resume to overwrite it"
            )
        else:
            say(f"--resume: no {path.name} yet, starting from the beginning")
    for stale in (job.out, path):
        stale.unlink(missing_ok=True)
    seed = job.settings.seed if job.settings.seed is not None else secrets.randbits(SEED_BITS)
    columns = list(empty_output(table, job.settings).columns)
    columns = [{"id": recorded["id_column"], "timestamps": recorded["timestamp_column"]}.get(c, c) for c in columns]
    header = {
        "kind": kind,
        "seed": int(seed),
        "settings": recorded,
        "columns": columns,
        "date_format": date_format(table["timestamps"], job.settings.freq),
    }
    if job.errors is not None:
        header["errors_offset"] = len(ERRORS_HEADER)
    if kind == "csv":
        header["offset"] = len(CsvOut(job.out, columns, "").header())
    return Manifest.create(path, header), False


def record_chunk(job: BulkJob, plan: Plan, rows: pd.DataFrame, errors: list[tuple[Hashable, str]]) -> None:
    """Append one finished chunk: its rows to OUT, its failures to --errors, then its line to the manifest."""
    manifest = plan.manifest
    frame = rows.rename(columns=plan.rename).reindex(columns=manifest.header["columns"])
    index = manifest.chunks[-1]["chunk"] + 1 if manifest.chunks else 0
    record = {"chunk": index, **plan.out.append(frame, index)}
    if job.errors is not None:
        record["errors_offset"] = (
            append_bytes(job.errors, errors_bytes(errors)) if errors else manifest.last["errors_offset"]
        )
    ok = [str(i) for i in pd.unique(rows["id"])] if len(rows) else []
    record["ids"] = ok + [str(i) for i, _ in errors]
    record["failed"] = [str(i) for i, _ in errors]
    manifest.add_chunk(record)
