"""A universe in one call (``predict_df``) against a loop of ``predict`` calls, one per series, side by side.

    python benchmarks/universe.py                 # 200 series, lookback 256, pred_len 20 (a few minutes on 2 cores)
    python benchmarks/universe.py --quick         # 24 series, lookback 64, pred_len 5, tiny shapes: seconds
    python benchmarks/universe.py --device cuda   # on a GPU

Weights are random, Kronos-small / Kronos-Tokenizer-base shapes (SPEC); the series are real candles
(``model.training.corpus.universe_frame``: US stocks and indices daily, EURUSD hourly, stretches ending
every 128 rows). Both sides run in this process with the same per-id seeds, and the benchmark checks
that they give the same numbers. Peak memory is the largest resident-set growth during each side.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode import PeakRSS  # noqa: E402

from model import KronosPredictor  # noqa: E402
from model.decoding.table import series_seed  # noqa: E402
from model.nn.config import PredictorConfig, TokenizerConfig  # noqa: E402
from model.nn.synthetic import KRONOS_SMALL, TOKENIZER_BASE, random_pair  # noqa: E402
from model.training.corpus import universe_frame  # noqa: E402

COLUMNS = ["open", "high", "low", "close", "volume"]


def loop_of_predict(predictor: KronosPredictor, table: pd.DataFrame, out: pd.DataFrame, args) -> pd.DataFrame:
    """What a user writes without predict_df: one predict call per series, each with its own seed."""
    frames = []
    for series_id, rows in table.groupby("id", sort=True):
        future = out.loc[out["id"] == series_id, "timestamps"]
        got = predictor.predict(
            rows[COLUMNS].reset_index(drop=True),
            rows["timestamps"],
            future,
            pred_len=args.pred_len,
            sample_count=args.sample_count,
            seed=series_seed(args.seed, series_id),
        )
        frames.append(got[COLUMNS].assign(id=series_id))
    return pd.concat(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--lookback", type=int, default=256)
    parser.add_argument("--pred-len", type=int, default=20)
    parser.add_argument("--sample-count", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64, help="predict_df's batch_size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="24 series, lookback 64, pred_len 5, tiny shapes")
    args = parser.parse_args()
    predictor_config, tokenizer_config = KRONOS_SMALL, TOKENIZER_BASE
    if args.quick:
        args.series, args.lookback, args.pred_len = 24, 64, 5
        predictor_config = PredictorConfig(s1_bits=4, s2_bits=4, n_layers=2, d_model=64, n_heads=4, ff_dim=128)
        tokenizer_config = TokenizerConfig(
            d_in=6, d_model=32, n_heads=2, ff_dim=64, n_enc_layers=1, n_dec_layers=1, s1_bits=4, s2_bits=4
        )
    model, tokenizer = random_pair(predictor_config, tokenizer_config, seed=0)
    predictor = KronosPredictor(model, tokenizer, device=args.device, max_context=512)
    table = universe_frame(args.series, args.lookback, stride=128)
    print(
        f"{args.series} real series x {args.lookback} candles, pred_len {args.pred_len}, "
        f"sample_count {args.sample_count}, device {args.device}, predict_df batch_size {args.batch_size}"
    )
    warm = table[table["id"] == table["id"].iloc[0]]
    predictor.predict_df(warm, pred_len=2, seed=0)  # first-call costs (prepared weights) paid by neither side

    with PeakRSS() as memory_df:
        start = time.perf_counter()
        out = predictor.predict_df(
            table, pred_len=args.pred_len, sample_count=args.sample_count, seed=args.seed, batch_size=args.batch_size
        )
        seconds_df = time.perf_counter() - start
    with PeakRSS() as memory_loop:
        start = time.perf_counter()
        looped = loop_of_predict(predictor, table, out, args)
        seconds_loop = time.perf_counter() - start

    assert not out.attrs["errors"], out.attrs["errors"]
    same = np.array_equal(out[COLUMNS].to_numpy(), looped[COLUMNS].to_numpy())
    rate_df, rate_loop = args.series / seconds_df, args.series / seconds_loop
    print(f"{'':<22}{'seconds':>9}{'series/s':>10}{'peak RSS MiB':>14}")
    print(f"{'predict_df':<22}{seconds_df:>9.1f}{rate_df:>10.2f}{memory_df.mib:>14.0f}")
    print(f"{'loop of predict':<22}{seconds_loop:>9.1f}{rate_loop:>10.2f}{memory_loop.mib:>14.0f}")
    print(f"predict_df / loop: {rate_df / rate_loop:.2f}x the series/s; same numbers: {same}")
    if not same:
        raise SystemExit("predict_df and the loop disagree")


if __name__ == "__main__":
    main()
