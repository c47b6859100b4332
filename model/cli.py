"""``kronos-forecast``: forecast the candles of a CSV file from the command line."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from .bundled import bundled_model_path
from .errors import KronosError
from .hub import resolve_pair
from .predictor import Kronos
from .tokenizer import KronosTokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kronos-forecast", description=__doc__)
    parser.add_argument("csv", help="CSV with a timestamp column and open, high, low, close[, volume, amount]")
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
        "pairing of a hub id: model/hub.py OFFICIAL_MODELS)",
    )
    parser.add_argument("--tokenizer-revision", default=None, help="commit, branch or tag of a hub --tokenizer")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    parser.add_argument("--lookback", type=int, default=400, help="use at most this many last rows")
    parser.add_argument("--max-context", type=int, default=None, help="default: the official model's, else 512")
    parser.add_argument("--sample-count", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--timestamp-column", default=None, help="default: the first column whose name mentions time or date"
    )
    args = parser.parse_args(argv)

    from .pipeline import KronosPredictor

    try:
        frame = pd.read_csv(args.csv)
        frame.columns = [c.strip().lower() for c in frame.columns]
        ts_col = args.timestamp_column or next(
            (c for c in frame.columns if "time" in c or "date" in c), frame.columns[0]
        )
        frame = frame.tail(args.lookback).reset_index(drop=True)
        x_ts = pd.to_datetime(frame[ts_col])
        step = x_ts.diff().median()
        y_ts = pd.Series(pd.date_range(x_ts.iloc[-1] + step, periods=args.pred_len, freq=step))
        pair = resolve_pair(args.model, args.revision, args.tokenizer, args.tokenizer_revision, args.max_context)
        model = Kronos.from_pretrained(pair.model.folder)
        tokenizer = KronosTokenizer.from_pretrained(pair.tokenizer.folder)
        predictor = KronosPredictor(model, tokenizer, device=args.device, max_context=pair.max_context)
        forecast = predictor.predict(
            frame,
            x_ts,
            y_ts,
            args.pred_len,
            T=args.temperature,
            top_p=args.top_p,
            sample_count=args.sample_count,
            seed=args.seed,
        )
    except (KronosError, OSError, KeyError, ValueError) as exc:
        print(f"kronos-forecast: error: {exc}", file=sys.stderr)
        return 2
    forecast.to_csv(sys.stdout, index_label="timestamp")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
