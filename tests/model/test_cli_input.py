"""``kronos-forecast INPUT`` says what is wrong with a file as the page does: by the file's line
(1-based, the header is line 1) and column; an empty file in plain words; ``-`` reads standard input.
In-process (``model.cli.main``): every case here fails before a model is loaded."""

from __future__ import annotations

import io

import pytest

from model.cli import main

HEADER = "date,open,high,low,close\n"
GOOD = "2024-01-01,1,2,0.5,1.5\n2024-01-02,1.5,2.5,1,2\n2024-01-03,2,2.5,1.5,2.2\n"


def _error(capsys, text: str, *args: str, monkeypatch=None, tmp_path=None) -> str:
    if monkeypatch is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(text))
        source = "-"
    else:
        path = tmp_path / "in.csv"
        path.write_text(text)
        source = str(path)
    assert main([source, "--pred-len", "2", *args]) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HEADER + "2024-01-01,1,2,0.5,1.5\n\n2024-01-02,1,abc,0.5,1.5\n", "line 4, column high: 'abc' is not a number"),
        (HEADER + "2024-01-01,1,2,0.5,1.5\n2024-01-02,1,2,0.5,\n", "line 3, column close: the value is missing"),
        (HEADER + "2024-01-02,1,2,0.5,1.5\n2024-01-01,1,2,0.5,1.5\n", "line 3, column date: 2024-01-01 is not after"),
        (HEADER + GOOD + "2024-01-03,2,2.5,1.5,2.2\n", "line 5, column date: 2024-01-03 is not after the row before"),
        (HEADER + "2024-01-01,1,2,0.5,1.5\nsoon,1,2,0.5,1.5\n", "line 3, column date: 'soon' is not a date or time"),
        (HEADER + GOOD + "2024-01-04,1,2,1.2,1.5\n", "line 5, column low: not a valid candle (low 1.2 is above"),
        ("", "the file is empty; it needs a header line"),
        ("\n\n", "the file is empty"),
        (HEADER, "the header (date, open, high, low, close) has no rows below it"),
    ],
    ids=["not-a-number", "missing", "newest-first", "duplicate", "bad-date", "bad-candle", "empty", "blank", "header"],
)
def test_a_bad_file_is_named_by_line_and_column(capsys, tmp_path, text, expected):
    error = _error(capsys, text, tmp_path=tmp_path)
    assert f"kronos-forecast: error: {tmp_path / 'in.csv'}: {expected}" in error, error
    assert "Traceback" not in error and "No columns to parse" not in error


def test_a_dash_reads_standard_input(capsys, monkeypatch):
    error = _error(capsys, HEADER + "2024-01-02,1,2,0.5,1.5\n2024-01-02,1,2,0.5,1.5\n", monkeypatch=monkeypatch)
    assert "kronos-forecast: error: stdin: line 3, column date:" in error
    monkeypatch.setattr("sys.stdin", io.StringIO(HEADER + GOOD * 1))
    assert main(["-", "--pred-len", "2", "--seed", "1"]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[0] == "timestamp,open,high,low,close" and len(out.out.splitlines()) == 3


def test_a_universe_run_needs_a_file(capsys):
    with pytest.raises(SystemExit):
        main(["-", "--id-column", "id", "--out", "x.csv"])
    assert "reads a file, not '-'" in capsys.readouterr().err


def test_kronos_train_help_keeps_its_examples_as_written():
    """The module docstring is kronos-train's --help: a backslash continuation stays two lines (a bare
    one inside the docstring joined them) and no rST markup shows."""
    from model.training import cli

    assert "``" not in cli.__doc__ and "::" not in cli.__doc__
    assert "model/bundled/kronos-demo/tokenizer \\\n        --out runs/kronos-demo" in cli.__doc__
