"""``kronos-forecast INPUT --id-column id --out OUT``: a universe of real candles from a file, as a real
subprocess: CSV and Parquet round trips equal ``predict_df`` number for number, a run killed with SIGKILL
part way and resumed equals an uninterrupted one, bad series are reported while the rest are forecast,
unreadable input and changed settings are refused with a message."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from model import Kronos, KronosPredictor, KronosTokenizer
from model.bulk.files import EXACT_FLOATS
from model.checkpoints.bundled import bundled_model_path, bundled_tokenizer_path
from model.cli import main
from model.training.corpus import universe_frame

ROOT = Path(__file__).resolve().parents[2]
PRED_LEN = 5
SEED = 5
COUNT, ROWS = 30, 60
COMMON = ["--id-column", "id", "--pred-len", str(PRED_LEN)]
CSV_OPTIONS = [*COMMON, "--seed", str(SEED)]
PARQUET_OPTIONS = [*CSV_OPTIONS, "--sample-count", "2", "--quantiles", "0.1,0.9"]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "model", *args]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=180, cwd=ROOT)


def read(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        frame = pd.read_csv(path, parse_dates=["timestamps"], **EXACT_FLOATS)
    else:
        frame = pd.read_parquet(path)
    return frame.astype({"id": str, "timestamps": "datetime64[ns]"})


def progress_lines(out: Path) -> list[dict]:
    path = out.with_name(out.name + ".progress")
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines[1:] if line.endswith("}")]


@pytest.fixture(scope="module")
def universe() -> pd.DataFrame:
    return universe_frame(COUNT, ROWS)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, universe) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("universe")
    universe.to_csv(folder / "universe.csv", index=False)
    universe.to_parquet(folder / "universe.parquet", index=False)
    return {"csv": folder / "universe.csv", "parquet": folder / "universe.parquet"}


@pytest.fixture(scope="module")
def demo() -> KronosPredictor:
    return KronosPredictor(
        Kronos.from_pretrained(bundled_model_path()), KronosTokenizer.from_pretrained(bundled_tokenizer_path())
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, inputs) -> dict[str, Path]:
    """One uninterrupted run per format (the default --batch-size: every series in one chunk)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    outs = {}
    for kind, options in (("csv", CSV_OPTIONS), ("parquet", PARQUET_OPTIONS)):
        out = folder / f"forecast.{kind}"
        done = cli(str(inputs[kind]), *options, "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert f"{COUNT} series forecast, 0 failed" in done.stderr
        outs[kind] = out
    return outs


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_round_trip_equals_predict_df(kind, universe, uninterrupted, demo):
    out = uninterrupted[kind]
    frame = read(out)
    assert sorted(frame["id"].unique()) == sorted(universe["id"].unique())
    for series_id, rows in frame.groupby("id"):
        assert list(rows["step"]) == list(range(1, PRED_LEN + 1))
        assert rows["timestamps"].iloc[0] > universe.loc[universe["id"] == series_id, "timestamps"].max()
    # the CLI samples by the service's rule (model/decoding/defaults.py: 2 paths, T 1.1 / top_p 0.95);
    # predict_df, the Python API, keeps upstream's defaults, so it is given them
    options = {"sample_count": 2, "quantiles": [0.1, 0.9], "T": 1.1, "top_p": 0.95} if kind == "parquet" else {}
    expected = demo.predict_df(universe, pred_len=PRED_LEN, seed=SEED, clean=True, lookback=400, **options)
    expected = expected.astype({"id": str, "timestamps": "datetime64[ns]"})
    pd.testing.assert_frame_equal(frame, expected)  # the same columns (volume: the input has it), the same numbers
    extra = ["close_q0.1", "close_q0.9", "p_up"] if kind == "parquet" else []
    assert list(frame.columns) == ["id", "timestamps", "step", "open", "high", "low", "close", "volume", *extra]
    assert progress_lines(out)[-1] == {"complete": True}
    assert not out.with_name(out.name + ".parts").exists()


def killed_part_way(args: list[str], out: Path, attempts: int = 3) -> list[dict]:
    """Start the run, SIGKILL it once the manifest shows a chunk done but not all; the chunks it recorded."""
    for _ in range(attempts):
        with open(out.with_name("killed.log"), "wb") as log:
            process = subprocess.Popen(command(*args), stdout=log, stderr=log, cwd=ROOT)
        try:
            deadline = time.monotonic() + 90
            for _ in range(200_000):
                lines = progress_lines(out)
                if lines and process.poll() is None:
                    os.kill(process.pid, signal.SIGKILL)
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.002)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
        lines = progress_lines(out)
        if process.returncode == -signal.SIGKILL and lines and {"complete": True} not in lines:
            return lines
    pytest.fail(f"could not kill the run part way: {out.with_name('killed.log').read_text()[-2000:]}")


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_run_killed_part_way_and_resumed_equals_an_uninterrupted_one(kind, inputs, uninterrupted, tmp_path):
    out = tmp_path / f"forecast.{kind}"
    options = CSV_OPTIONS if kind == "csv" else PARQUET_OPTIONS
    args = [str(inputs[kind]), *options, "--out", str(out), "--batch-size", "2"]
    chunks = killed_part_way(args, out)
    seedless = args[: args.index("--seed")] + args[args.index("--seed") + 2 :]
    done = {i for chunk in chunks for i in chunk["ids"]}
    assert 0 < len(done) < COUNT
    manifest = out.with_name(out.name + ".progress")
    # As if the kill had come mid-write: a torn output line, a torn manifest line, a half-written part.
    with open(manifest, "a") as f:
        f.write('{"chunk": 99, "ids": ["GOOG-')
    if kind == "csv":
        written = {line.split(",")[0] for line in out.read_text().splitlines()[1:]}
        assert written >= done  # what the manifest records is in OUT, already on disk
        with open(out, "a") as f:
            f.write("ZZZ-0,2013-03-04 00:00:00,1,56.8")
    else:
        (out.with_name(out.name + ".parts") / "part-00099.parquet.tmp").write_bytes(b"PAR1 torn")
    resumed = cli(*seedless, "--resume", "--batch-size", "5")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{COUNT} series forecast, 0 failed ({COUNT - len(done)} this run, {len(done)} before)" in resumed.stderr
    assert f"seed {SEED}" in resumed.stderr  # the recorded seed, not given again
    assert f"kronos-forecast: {COUNT}/{COUNT} series, " in resumed.stderr  # progress lines: stderr is no terminal
    pd.testing.assert_frame_equal(read(out), read(uninterrupted[kind]))  # row for row, number for number
    assert not out.with_name(out.name + ".parts").exists()


def test_bad_series_are_reported_by_id_while_the_rest_are_forecast(universe, tmp_path):
    names = sorted(universe["id"].unique())[:6]
    small = universe[universe["id"].isin(names)].copy()
    nan_row = small.index[small["id"] == names[1]][10]
    small.loc[nan_row, "close"] = float("nan")
    bad_row = small.index[small["id"] == names[4]][20]
    small.loc[bad_row, "high"] = small.loc[bad_row, "low"] - 1  # high below low
    source, out, errors = tmp_path / "small.csv", tmp_path / "out.csv", tmp_path / "errors.csv"
    small.to_csv(source, index=False)
    done = cli(str(source), *COMMON, "--out", str(out), "--errors", str(errors), "--batch-size", "4")
    assert done.returncode == 0, done.stderr
    assert "4 series forecast, 2 failed" in done.stderr
    failed = pd.read_csv(errors)
    assert list(failed.columns) == ["id", "message"] and list(failed["id"]) == [names[1], names[4]]
    assert "NaN" in failed["message"][0] and "not valid" in failed["message"][1]
    assert sorted(read(out)["id"].unique()) == [n for n in names if n not in (names[1], names[4])]
    recorded = json.loads((tmp_path / "out.csv.progress").read_text().splitlines()[0])["seed"]
    assert f"seed {recorded} " in done.stderr  # no --seed: one is drawn, recorded and said
    again = cli(str(source), *COMMON, "--out", str(out), "--errors", str(errors), "--resume")
    assert again.returncode == 0 and "4 series forecast, 2 failed" in again.stderr  # complete: nothing to do
    # No series can be forecast: exit 1 and a message, the model never loaded.
    small.loc[small.index[::7], "close"] = float("nan")
    small.to_csv(source, index=False)
    none = cli(str(source), *COMMON, "--out", str(out), "--no-progress")
    assert none.returncode == 1 and "error: no series could be forecast" in none.stderr
    assert "not forecast:" in none.stderr and "Traceback" not in none.stderr


def in_process(capsys, *args: str) -> tuple[int, str]:
    """``main`` in this process (for the runs that stop before loading a model): exit status, stderr."""
    try:
        status = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        status = exc.code
    return status, capsys.readouterr().err


def test_unreadable_input_exits_with_a_message(universe, tmp_path, capsys):
    out = str(tmp_path / "out.csv")
    rows = universe[universe["id"] == universe["id"].iloc[0]]
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(os.urandom(256))
    cases = {
        "no such file": tmp_path / "missing.csv",
        "unknown file type '.txt'": tmp_path / "table.txt",
        "has no rows": tmp_path / "empty.csv",
        "is not a readable csv table": tmp_path / "blank.csv",
        "is not a readable parquet table": garbage,
        "has no column(s) id": tmp_path / "no_id.csv",
        "has no column(s) close": tmp_path / "no_close.csv",
    }
    rows.to_csv(cases["unknown file type '.txt'"], index=False)
    rows.iloc[:0].to_csv(cases["has no rows"], index=False)
    cases["is not a readable csv table"].write_text("")
    rows.drop(columns="id").to_csv(cases["has no column(s) id"], index=False)
    rows.drop(columns="close").to_csv(cases["has no column(s) close"], index=False)
    for message, path in cases.items():
        status, said = in_process(capsys, str(path), *COMMON, "--out", out)
        assert status == 2 and message in said, (message, said)
    assert not Path(out).exists()
    status, said = in_process(capsys, str(cases["has no rows"]), "--id-column", "id")
    assert status == 2 and "needs --out" in said
    status, said = in_process(capsys, str(cases["has no rows"]), "--resume")
    assert status == 2 and "give --id-column" in said
    real = cli(str(garbage), *COMMON, "--out", out)  # and as a real command: a message, no traceback
    assert real.returncode == 2 and "kronos-forecast: error: INPUT" in real.stderr and "Traceback" not in real.stderr


def test_resume_with_other_settings_is_refused(inputs, uninterrupted, tmp_path, capsys):
    out = tmp_path / "forecast.csv"
    shutil.copy(uninterrupted["csv"], out)
    shutil.copy(uninterrupted["csv"].with_name("forecast.csv.progress"), tmp_path / "forecast.csv.progress")
    before = out.read_bytes()
    resume = [str(inputs["csv"]), *CSV_OPTIONS, "--out", str(out), "--resume"]
    for change, said in (
        (["--pred-len", "6"], "--pred-len: 5 then, 6 now"),
        (["--seed", "6"], "--seed: 5 then, 6 now"),
        (["--top-p", "0.5"], "--top-p: 0.9 then, 0.5 now"),
        (["--no-repair"], "repair (--no-repair): true then, false now"),
    ):
        status, stderr = in_process(capsys, *resume, *change)
        assert status == 2 and "--resume refused" in stderr and said in stderr, stderr
    other = tmp_path / "other.csv"
    pd.read_csv(inputs["csv"]).iloc[:-1].to_csv(other, index=False)
    status, stderr = in_process(capsys, str(other), *resume[1:])
    assert status == 2 and "INPUT (its contents)" in stderr
    assert out.read_bytes() == before  # a refusal touches nothing
    refused = cli(*resume, "--lookback", "50")  # and as a real command
    assert refused.returncode == 2 and "--lookback: 400 then, 50 now" in refused.stderr
    assert "Traceback" not in refused.stderr
    (tmp_path / "forecast.csv.progress").unlink()
    status, stderr = in_process(capsys, *resume)
    assert status == 2 and "what it holds is unknown" in stderr
