"""``kronos-forecast``: forecast the candles of a CSV file from the command line.

Writes CSV to stdout: the mean forecast (the columns the input has: open, high, low, close, and
volume/amount only when given), optionally quantiles of close as a band, and every sample path to
a file. Candles are repaired to be valid by default (``--no-repair`` keeps the raw model output);
notes (the seed, repairs) go to stderr.

With ``--id-column COL --out OUT``: a universe (see ``BULK`` below and ``model/bulk/runner.py``).
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from .checkpoints.bundled import bundled_model_path
from .errors import InputError, KronosError

FEATURE_COLUMNS = ("open", "high", "low", "close", "volume", "amount")  # pipeline's, without loading torch

FLOAT_FORMAT = "%.7g"  # float32 holds about 7 significant digits; more would be noise


def _levels(text: str) -> list[float]:
    try:
        levels = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not levels or not all(0 <= q <= 1 for q in levels):
        raise argparse.ArgumentTypeError(f"{text!r}: quantile levels are numbers from 0 to 1, e.g. 0.1,0.5,0.9")
    return levels


BULK = """\
a universe (--id-column COL --out OUT):
  INPUT and OUT are .csv or .parquet, one row per id and timestamp (any order) in, one row per id and
  forecast step out (COL, the timestamp column, step, the mean candle with the columns the input has,
  close_q<level> per --quantiles level, p_up with 2+ paths), sorted by id then step. Each series' seed
  comes from the call's seed and its id, so a series gets the same numbers however the run is cut.
  --batch-size series are decoded at a time; --timestamp-column defaults to "timestamps"; the other
  options are as for one series (candles repaired unless --no-repair, the last --lookback rows).

  Written as it goes: every finished chunk of series is appended to OUT (CSV) or written as a part file
  OUT.parts/part-NNNNN.parquet (Parquet, combined into OUT at the end), flushed to disk, then recorded in
  the sidecar OUT.progress (JSON lines: settings, seed, ids per chunk). A run killed at any moment
  (even kill -9) loses at most the chunk in flight; --resume forecasts only the ids not yet recorded,
  with the recorded seed, and OUT ends as an uninterrupted run's would. --resume is refused when the
  settings, the model or INPUT differ from the recorded ones. OUT.progress stays beside OUT.

  --errors FILE: CSV of id,message for the series that could not be forecast (the others are).
  Progress on stderr: a bar on a terminal, else a line per chunk (at most one a second); a summary
  at the end. Exit status: 0 when at least one series was forecast, 1 when none could be, 2 when
  INPUT cannot be read (no such file, not a table, no rows, missing columns, unknown extension) or
  an option or the model cannot be used, 130 when interrupted.
"""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kronos-forecast",
        description="\n\n".join(__doc__.split("\n\n")[:2]),
        epilog=BULK,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "csv",
        metavar="INPUT",
        help="CSV with open, high, low, close[, volume, amount] and usually a timestamp column ('-': standard "
        "input); with --id-column, a long table of many series (.csv or .parquet)",
    )
    parser.add_argument("--pred-len", type=int, default=20)
    parser.add_argument(
        "--model",
        default=str(bundled_model_path()),
        help="predictor folder or hub id, e.g. NeoQuasar/Kronos-small (default: bundled)",
    )
    parser.add_argument("--revision", default=None, help="commit, branch or tag of a hub --model (default main)")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer folder or hub id (default: MODEL/tokenizer, or the official "
        "pairing of a hub id: model/checkpoints/hub.py OFFICIAL_MODELS)",
    )
    parser.add_argument("--tokenizer-revision", default=None, help="commit, branch or tag of a hub --tokenizer")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "int8"),
        default="fp32",
        help="fp32 (exact, the default), or opt-in bf16 / int8: faster on CPUs with AVX512-BF16 or AMX, not the "
        "reference's numbers",
    )
    parser.add_argument("--lookback", type=int, default=400, help="use at most this many last rows")
    parser.add_argument("--max-context", type=int, default=None, help="default: the official model's, else 512")
    parser.add_argument("--sample-count", type=int, default=1, help="sample paths; the forecast is their mean")
    parser.add_argument(
        "--temperature", "--T", type=float, default=None, help="default: 1.0 with one sample path, 1.1 with several"
    )
    parser.add_argument(
        "--top-p", type=float, default=None, help="default: 0.9 with one sample path, 0.95 with several"
    )
    parser.add_argument(
        "--top-k", type=int, default=None, help="sample from the k likeliest tokens only (default 0: all)"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--window",
        choices=["exact", "rolling"],
        default="exact",
        help="once rows + pred_len outgrow max_context: recompute the window per step (exact, the reference) or "
        "drop the oldest key/value (rolling: many times faster, not the reference's numbers)",
    )
    parser.add_argument(
        "--timestamp-column",
        default=None,
        help="default: the first column whose name mentions time or date; without one, rows are consecutive "
        "periods of --freq from 2024-01-01 and the output is numbered by step",
    )
    parser.add_argument(
        "--freq",
        default=None,
        help="pandas frequency (5min, h, D, B) continued from the last timestamp, instead of the calendar "
        "inferred from the timestamps (trading weekdays, session hours, step)",
    )
    parser.add_argument(
        "--calendar", default=None, help="exchange calendar code (XNYS, XLON, ...) for exact sessions and holidays"
    )
    parser.add_argument(
        "--quantiles",
        type=_levels,
        default=None,
        help="levels such as 0.1,0.5,0.9: adds close_q<level> columns (quantiles of close over the sample "
        "paths; needs --sample-count 2 or more)",
    )
    parser.add_argument("--paths", default=None, help="also write every sample path to this CSV file")
    parser.add_argument(
        "--no-repair", action="store_true", help="keep the model's raw candles (high may fall below open or close)"
    )
    parser.add_argument(
        "--repair-input", action="store_true", help="repair invalid input candles instead of refusing the file"
    )
    bulk = parser.add_argument_group("a universe (see below)")
    bulk.add_argument("--id-column", metavar="COL", default=None, help="INPUT is a long table of series named by COL")
    bulk.add_argument("--out", metavar="OUT", default=None, help="the forecasts (.csv or .parquet); needs --id-column")
    bulk.add_argument(
        "--batch-size",
        metavar="N",
        type=_positive,
        default=64,
        help="series decoded together (default 64; at most 256 sample paths)",
    )
    bulk.add_argument("--resume", action="store_true", help="finish an interrupted run into the same OUT")
    bulk.add_argument("--errors", metavar="FILE", default=None, help="CSV of id,message for series not forecast")
    bulk.add_argument("--no-progress", action="store_true", help="no progress bar or lines (the summary stays)")
    return parser


def _timestamps(frame: pd.DataFrame, column: str | None, source: str) -> pd.DatetimeIndex | None:
    if column is not None:
        name = column.strip().lower()
        if name not in frame.columns:
            raise InputError(
                f"--timestamp-column {column!r}: no such column; the columns are {', '.join(frame.columns)}"
            )
    else:
        name = next((c for c in frame.columns if "time" in c or "date" in c), None)
        first = frame.columns[0]
        if name is None and first not in FEATURE_COLUMNS and not pd.api.types.is_numeric_dtype(frame[first]):
            name = first  # an unnamed index column, as pandas writes one
        if name is None:
            return None
    from .series.csv_file import timestamp_column

    return timestamp_column(frame, name, source)  # InputError: the line and column of a bad or unordered one


def _sampling(args: argparse.Namespace):
    """The effective settings, by the rule the service and the page share (``model/decoding/defaults.py``)."""
    from .decoding.defaults import effective_sampling

    return effective_sampling(
        sample_count=args.sample_count, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed
    )


def _load_predictor(args: argparse.Namespace):
    from .checkpoints.hub import resolve_pair
    from .decoding.pipeline import KronosPredictor
    from .nn.predictor import Kronos
    from .nn.tokenizer import KronosTokenizer

    pair = resolve_pair(args.model, args.revision, args.tokenizer, args.tokenizer_revision, args.max_context)
    model = Kronos.from_pretrained(pair.model.folder)
    tokenizer = KronosTokenizer.from_pretrained(pair.tokenizer.folder)
    return KronosPredictor(model, tokenizer, device=args.device, max_context=pair.max_context, precision=args.precision)


def _bulk(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``--id-column``: the universe run of ``model/bulk/runner.py``."""
    from pathlib import Path

    from .bulk.runner import BulkJob, run
    from .decoding.table import TableSettings

    if args.out is None:
        parser.error("--id-column needs --out OUT (.csv or .parquet)")
    if args.csv == "-":
        parser.error("a universe run (--id-column) reads a file, not '-': it records INPUT's digest to resume")
    for option, given in (("--paths", args.paths), ("--repair-input", args.repair_input)):
        if given:
            parser.error(f"{option} is for one series; a universe run (--id-column) does not take it")
    sampling = _sampling(args)
    settings = TableSettings(
        pred_len=args.pred_len,
        id_column=args.id_column,
        timestamp_column=args.timestamp_column or "timestamps",
        sample_count=sampling.sample_count,
        T=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        seed=args.seed,
        clean=not args.no_repair,
        window=args.window,
        quantiles=tuple(args.quantiles or ()),
        freq=args.freq,
        calendar=args.calendar,
        lookback=args.lookback,
        batch_size=args.batch_size,
    )
    identity = {
        "model": args.model,
        "revision": args.revision,
        "tokenizer": args.tokenizer,
        "tokenizer_revision": args.tokenizer_revision,
        "max_context": args.max_context,
        "device": args.device,
    }
    job = BulkJob(
        input=Path(args.csv),
        out=Path(args.out),
        settings=settings,
        model=identity,
        errors=None if args.errors is None else Path(args.errors),
        resume=args.resume,
        progress=not args.no_progress,
    )
    return run(job, lambda: _load_predictor(args).forecast)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.id_column is not None:
        return _bulk(args, parser)
    given = [o for o, v in (("--out", args.out), ("--resume", args.resume), ("--errors", args.errors)) if v]
    given += ["--no-progress"] if args.no_progress else []
    if given:
        parser.error(f"{', '.join(given)}: for a universe; give --id-column COL (one series goes to stdout)")

    from .decoding.forecast import PRICE_COLUMNS, SeriesInput, frame_columns
    from .series import csv_file
    from .series.calendars import future_timestamps, synthetic_timestamps
    from .series.candles import RULE, invalid_rows, repair_candles

    def note(text: str) -> None:
        print(f"kronos-forecast: {text}", file=sys.stderr)

    try:
        if args.quantiles and args.sample_count < 2:
            raise InputError("--quantiles are taken over sample paths: give --sample-count 2 or more (e.g. 20)")
        name = csv_file.source_name(args.csv)
        frame = frame_columns(csv_file.read_csv(args.csv), name)  # indexed by each row's line in the file
        missing = [c for c in PRICE_COLUMNS if c not in frame.columns]
        if missing:
            raise InputError(f"{name}: no {', '.join(missing)} column(s); the columns are {', '.join(frame.columns)}")
        columns = list(PRICE_COLUMNS) + [c for c in ("volume", "amount") if c in frame.columns]
        if columns[4:5] == ["amount"]:
            columns = columns[:4]  # amount without volume is not a model input
        x_ts = _timestamps(frame, args.timestamp_column, name)  # the whole file is checked, as the page does
        frame = frame.tail(args.lookback)
        x_ts = None if x_ts is None else x_ts[-len(frame) :]
        candles = csv_file.numeric_columns(frame, columns, name)
        bad = invalid_rows(candles)
        if len(bad):
            if not args.repair_input:
                raise csv_file.invalid_candle(frame, candles, bad, name)
            candles, count = repair_candles(candles)
            note(f"{count} input candle(s) repaired (high and low widened to cover open and close)")
        stamped = x_ts is not None
        if x_ts is None:
            note(f"no timestamp column: rows are periods of {args.freq or 'D'} from 2024-01-01; output by step")
            x_ts, y_ts = synthetic_timestamps(len(frame), args.pred_len, args.freq or "D")
        else:
            y_ts = future_timestamps(x_ts, args.pred_len, args.freq, args.calendar)
        predictor = _load_predictor(args)
        if args.window == "exact":
            from .decoding.defaults import sliding_note

            slides = sliding_note(
                len(candles), args.pred_len, predictor.max_context, "--lookback {fit}", "--window rolling"
            )
            if slides:
                note(slides)
        sampling = _sampling(args)
        series = SeriesInput(
            candles=candles,
            timestamps=x_ts,
            future_timestamps=y_ts,
            temperature=sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            sample_count=sampling.sample_count,
            seed=sampling.seed,
            clean=not args.no_repair,
            window=args.window,
        )
        (forecast,) = predictor.forecast([series])
    except (KronosError, OSError, ValueError) as exc:
        print(f"kronos-forecast: error: {exc}", file=sys.stderr)
        return 2
    names = list(FEATURE_COLUMNS[: len(columns)])
    if stamped:
        index = pd.DatetimeIndex(forecast.timestamps, name="timestamp")
    else:
        index = pd.Index(range(1, args.pred_len + 1), name="step")
    out = pd.DataFrame(forecast.mean[:, : len(names)], columns=names, index=index)
    if args.quantiles:
        for level, closes in zip(args.quantiles, forecast.close_quantiles(args.quantiles)):
            out[f"close_q{level:g}"] = closes
    if args.paths:
        paths = pd.concat(
            [
                pd.DataFrame(path[:, : len(names)], columns=names, index=index).assign(path=i)
                for i, path in enumerate(forecast.samples)
            ]
        )
        paths = paths.set_index("path", append=True).reorder_levels(["path", index.name])
        paths.to_csv(args.paths, float_format=FLOAT_FORMAT)
    out.to_csv(sys.stdout, float_format=FLOAT_FORMAT)
    from .decoding.defaults import describe

    used = describe(sampling.with_seed(forecast.seed))
    note(f"{used} (--seed {forecast.seed} with these settings reproduces this forecast, here or over HTTP)")
    if forecast.repaired:
        total = forecast.samples.shape[0] * forecast.samples.shape[1]
        note(f"{forecast.repaired} of {total} sample-path candles repaired so that {RULE} (--no-repair: raw)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
