"""Checkpoints named by hub id: fetched through huggingface_hub from a loopback stand-in of the hub,
cached under HF_HOME, used offline, pinned by revision; every failure names the id and what to do."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from conftest import BASE, MINI, SMALL, TOKENIZER_2K, TOKENIZER_BASE, closed_port_url, run_cli

from model import CheckpointError, Kronos, KronosPredictor, KronosTokenizer
from model.checkpoints.hub import OFFICIAL_MODELS, resolve_checkpoint, resolve_pair


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    from backtesting.test import GOOG

    frame = GOOG.tail(120).reset_index()
    frame.columns = [str(c).lower() for c in frame.columns]
    return frame.rename(columns={frame.columns[0]: "timestamps"})


def _forecast(model: Kronos, tokenizer: KronosTokenizer, candles: pd.DataFrame) -> pd.DataFrame:
    predictor = KronosPredictor(model, tokenizer, device="cpu", max_context=512)
    x_ts = candles["timestamps"]
    y_ts = pd.Series(pd.bdate_range(x_ts.iloc[-1] + pd.Timedelta(days=1), periods=8))
    frame = candles[["open", "high", "low", "close", "volume"]]
    return predictor.predict(frame, x_ts, y_ts, pred_len=8, sample_count=2, seed=11)


def _write_folder(files: dict[str, dict[str, bytes]], model_id: str, tokenizer_id: str, folder):
    for repo_id, target in ((model_id, folder), (tokenizer_id, folder / "tokenizer")):
        target.mkdir(parents=True)
        for name, content in files[repo_id].items():
            (target / name).write_bytes(content)
    return folder


def test_the_same_seeded_forecast_from_a_folder_a_hub_id_and_the_offline_cache(
    hub, hub_env, official_files, candles, tmp_path
):
    folder = _write_folder(official_files, SMALL, TOKENIZER_BASE, tmp_path / "small")
    from_folder = _forecast(
        Kronos.from_pretrained(folder), KronosTokenizer.from_pretrained(folder / "tokenizer"), candles
    )

    model = Kronos.from_pretrained(SMALL)
    tokenizer = KronosTokenizer.from_pretrained(TOKENIZER_BASE)
    assert model.checkpoint.revision == hub.repos[SMALL].refs["main"]
    assert model.checkpoint.folder.is_relative_to(hub_env.home / "hub")  # huggingface_hub's cache under HF_HOME
    from_hub = _forecast(model, tokenizer, candles)
    # Only the two files, each asked for by HEAD then GET: nothing else of the repository.
    fetched = {path.rsplit("/", 1)[-1] for method, path in hub.requests if "/resolve/" in path}
    assert fetched == {"config.json", "model.safetensors"}

    hub.close()  # no hub at all from here on
    hub_env.set(offline=True)
    pair = resolve_pair(SMALL)  # the tokenizer comes from the official pairing
    offline = _forecast(
        Kronos.from_pretrained(pair.model.folder), KronosTokenizer.from_pretrained(pair.tokenizer.folder), candles
    )

    pd.testing.assert_frame_equal(from_folder, from_hub)
    pd.testing.assert_frame_equal(from_folder, offline)
    # And the random checkpoints really differ: another model gives another forecast.
    assert not from_folder.equals(
        _forecast(
            Kronos.from_pretrained(_write_folder(official_files, MINI, TOKENIZER_2K, tmp_path / "mini")),
            tokenizer,
            candles,
        )
    )


def test_a_revision_pins_a_commit(hub, hub_env, official_files):
    first = hub.repos[SMALL].refs["main"]
    second = hub.publish(SMALL, official_files[BASE])  # main moves on
    latest = Kronos.from_pretrained(SMALL)
    pinned = Kronos.from_pretrained(SMALL, revision=first)
    assert (latest.checkpoint.revision, pinned.checkpoint.revision) == (second, first)
    base = Kronos.from_pretrained(BASE)
    assert all(torch.equal(a, b) for a, b in zip(latest.state_dict().values(), base.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(pinned.state_dict().values(), base.state_dict().values()))
    # A pinned commit is served from the cache offline, as is the branch last resolved.
    hub_env.set(offline=True)
    assert resolve_checkpoint(SMALL, first).revision == first
    assert resolve_checkpoint(SMALL).revision == second


def test_official_pairing_and_its_override(hub, hub_env):
    mini = resolve_pair(MINI)
    assert (mini.tokenizer.source, mini.max_context) == (TOKENIZER_2K, 2048)
    small = resolve_pair(SMALL)
    assert (small.tokenizer.source, small.max_context) == (TOKENIZER_BASE, 512)
    overridden = resolve_pair(MINI, tokenizer=TOKENIZER_BASE, max_context=1024)
    assert (overridden.tokenizer.source, overridden.max_context) == (TOKENIZER_BASE, 1024)
    assert set(OFFICIAL_MODELS) == {SMALL, MINI, BASE}


# --- every failure names the id and what to do --------------------------------------------------


def test_no_network_with_a_cold_cache(hub_env):
    hub_env.set(endpoint=closed_port_url())
    with pytest.raises(CheckpointError, match=f"{SMALL}: cannot reach .* not in the model cache .*kronos-fetch"):
        Kronos.from_pretrained(SMALL)


def test_a_repository_that_does_not_exist(hub_env):
    with pytest.raises(CheckpointError, match="NeoQuasar/Kronos-huge: no such model repository .*HF_TOKEN"):
        Kronos.from_pretrained("NeoQuasar/Kronos-huge")


def test_a_revision_that_does_not_exist(hub_env):
    with pytest.raises(CheckpointError, match=f"{SMALL}: revision 'v9' does not exist .*commit hash, branch or tag"):
        Kronos.from_pretrained(SMALL, revision="v9")


def test_a_repository_without_safetensors_weights_is_refused_unread(hub, hub_env, official_files):
    pickled = {"config.json": official_files[SMALL]["config.json"], "pytorch_model.bin": b"\x80\x04pickle"}
    hub.publish("someone/Kronos-pickled", pickled)
    with pytest.raises(CheckpointError, match="someone/Kronos-pickled: the repository has no model.safetensors"):
        Kronos.from_pretrained("someone/Kronos-pickled")
    assert not any("pytorch_model.bin" in path for _, path in hub.requests)


def test_offline_with_a_cold_cache(hub, hub_env):
    hub_env.set(offline=True)
    with pytest.raises(CheckpointError, match=f"{MINI}: config.json is not in the model cache .*HF_HUB_OFFLINE=1"):
        Kronos.from_pretrained(MINI)
    assert not any("/resolve/" in path for _, path in hub.requests)


def test_a_private_repository_needs_hf_token(hub, hub_env, official_files, monkeypatch):
    hub.publish("acme/Kronos-private", official_files[SMALL], token="hf_secret")
    with pytest.raises(CheckpointError, match="acme/Kronos-private: no such model repository .*HF_TOKEN"):
        Kronos.from_pretrained("acme/Kronos-private")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert (
        Kronos.from_pretrained("acme/Kronos-private").checkpoint.revision
        == hub.repos["acme/Kronos-private"].refs["main"]
    )


def test_an_unofficial_id_without_a_tokenizer(hub, hub_env, official_files):
    hub.publish("acme/my-kronos", official_files[SMALL])
    with pytest.raises(CheckpointError, match="acme/my-kronos: no tokenizer given .*KRONOS_TOKENIZER_PATH"):
        resolve_pair("acme/my-kronos")
    assert resolve_pair("acme/my-kronos", tokenizer=TOKENIZER_BASE).tokenizer.source == TOKENIZER_BASE


def test_a_missing_folder_that_is_no_hub_id(tmp_path):
    with pytest.raises(CheckpointError, match=f"checkpoint folder {tmp_path / 'nope'} does not exist"):
        Kronos.from_pretrained(tmp_path / "nope")


# --- the command-line tools, as users run them ---------------------------------------------------


def test_kronos_fetch_then_forecast_from_the_folder_the_hub_id_and_offline(hub, hub_env, candles, tmp_path):
    csv = tmp_path / "goog.csv"
    candles.to_csv(csv, index=False)
    fetched = run_cli("-m", "model.checkpoints.fetch", SMALL, "--out", str(tmp_path / "small"))
    assert fetched.returncode == 0, fetched.stderr
    summary = json.loads(fetched.stdout)
    assert summary["tokenizer"] == TOKENIZER_BASE and summary["revision"] == hub.repos[SMALL].refs["main"]
    for folder in (tmp_path / "small", tmp_path / "small" / "tokenizer"):
        assert sorted(p.name for p in folder.iterdir() if p.is_file()) == ["config.json", "model.safetensors"]

    args = ("-m", "model.cli", str(csv), "--pred-len", "5", "--seed", "3", "--sample-count", "2")
    by_folder = run_cli(*args, "--model", str(tmp_path / "small"))
    by_id = run_cli(*args, "--model", SMALL)
    hub.close()
    hub_env.set(offline=True)
    offline = run_cli(*args, "--model", SMALL)
    assert by_folder.returncode == by_id.returncode == offline.returncode == 0, by_id.stderr + offline.stderr
    assert by_folder.stdout == by_id.stdout == offline.stdout
    assert len(by_id.stdout.splitlines()) == 6  # header + 5 candles


def test_kronos_fetch_several_ids_and_its_errors(hub, hub_env, tmp_path):
    both = run_cli("-m", "model.checkpoints.fetch", SMALL, MINI, "--out", str(tmp_path / "models"))
    assert both.returncode == 0, both.stderr
    assert [entry["tokenizer"] for entry in json.loads(both.stdout)] == [TOKENIZER_BASE, TOKENIZER_2K]
    assert (tmp_path / "models" / "Kronos-mini" / "tokenizer" / "model.safetensors").is_file()
    missing = run_cli("-m", "model.checkpoints.fetch", "NeoQuasar/Kronos-huge", "--out", str(tmp_path / "x"))
    assert missing.returncode == 2
    assert "kronos-fetch: error: NeoQuasar/Kronos-huge: no such model repository" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_kronos_forecast_names_the_id_when_offline_and_cold(hub_env, candles, tmp_path):
    csv = tmp_path / "goog.csv"
    candles.to_csv(csv, index=False)
    hub_env.set(offline=True)
    result = run_cli("-m", "model.cli", str(csv), "--model", MINI)
    assert result.returncode == 2
    assert f"kronos-forecast: error: {MINI}: config.json is not in the model cache" in result.stderr
    assert "Traceback" not in result.stderr


def test_kronos_train_fine_tunes_from_a_hub_id(hub, hub_env, candles, tmp_path):
    csv = tmp_path / "goog.csv"
    candles.to_csv(csv, index=False)
    steps = ("--size", "tiny", "--tokenizer-steps", "2", "--predictor-steps", "2", "--batch-size", "2")
    result = run_cli(
        "-m", "model.training.cli", str(csv), "--from", SMALL, *steps, "--no-progress", "--out", str(tmp_path / "ft")
    )
    assert result.returncode == 0, result.stderr
    tuned = Kronos.from_pretrained(tmp_path / "ft")
    assert tuned.config == Kronos.from_pretrained(SMALL).config
    assert (tmp_path / "ft" / "tokenizer" / "model.safetensors").is_file()


def test_kronos_fetch_offline_fails_at_once_with_the_right_hint(hub, hub_env, tmp_path):
    """No network (a closed port here; a name that does not resolve took 26 s of retries): at once, and
    the hint is about the network; HF_HUB_OFFLINE set: the hint is to unset it (not to run kronos-fetch).
    A model already in the cache is copied either way."""
    import time

    out = str(tmp_path / "mini")
    hub_env.set(endpoint=closed_port_url())
    started = time.monotonic()
    cold = run_cli("-m", "model.checkpoints.fetch", MINI, "--out", out)
    assert time.monotonic() - started < 15 and cold.returncode == 2, cold.stderr
    assert "kronos-fetch: error: cannot reach http://127.0.0.1:" in cold.stderr
    assert "the network is unreachable from here" in cold.stderr and "Retrying" not in cold.stderr
    hub_env.set(offline=True)
    offline = run_cli("-m", "model.checkpoints.fetch", MINI, "--out", out)
    assert offline.returncode == 2 and "HF_HUB_OFFLINE is set" in offline.stderr
    assert "`kronos-fetch" not in offline.stderr
    hub_env.set(offline=False, endpoint=hub.url)
    assert run_cli("-m", "model.checkpoints.fetch", MINI, "--out", out).returncode == 0  # into the cache too
    hub_env.set(endpoint=closed_port_url())
    cached = run_cli("-m", "model.checkpoints.fetch", MINI, "--out", str(tmp_path / "again"))
    assert cached.returncode == 0, cached.stderr
