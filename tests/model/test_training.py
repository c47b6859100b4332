"""kronos-train: tiny real training runs (seconds) on real candles and on the public conformance checkpoint."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from model import Kronos, KronosPredictor, KronosTokenizer
from model.checkpoints.checkpoint import read_tensors
from model.training import StageSettings, new_pair, series_from_frame, train
from model.training.cli import main
from model.training.losses import bsq_quantize, teacher_forced_logits
from model.training.presets import preset
from model.training.state import ResumeError

TINY = preset("tiny")


@pytest.fixture(scope="module")
def series(goog, eurusd):
    # Enough rows for tiny windows; few held-out chunks keep each stage's validation cheap.
    return [
        series_from_frame(goog.iloc[-800:].reset_index(names="date"), "GOOG"),
        series_from_frame(eurusd.iloc[-800:].reset_index(names="time"), "EURUSD"),
    ]


@pytest.fixture(scope="module")
def tiny_run(series, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "kronos-tiny"
    model, tokenizer = new_pair(TINY.predictor, TINY.tokenizer, seed=0)
    result = train(series, out, TINY.settings, model=model, tokenizer=tokenizer)
    return out, result


def _tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_run_lowers_both_losses_and_writes_loadable_checkpoint(tiny_run):
    out, result = tiny_run
    tokenizer_stage, predictor_stage = result.stages
    assert tokenizer_stage.last_loss["total"] < 0.8 * tokenizer_stage.first_loss["total"]
    assert tokenizer_stage.last_loss["recon_full"] < tokenizer_stage.first_loss["recon_full"]
    assert predictor_stage.last_loss["total"] < 0.8 * predictor_stage.first_loss["total"]
    assert predictor_stage.last_loss["ce_s1"] < predictor_stage.first_loss["ce_s1"]
    assert predictor_stage.last_loss["ce_s2"] < predictor_stage.first_loss["ce_s2"]
    assert all(np.isfinite(v) for s in result.stages for v in s.validation[-1].values())
    # The official layout, loadable by our strict loader: every key present, nothing extra.
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer"]
    model = Kronos.from_pretrained(out)
    tokenizer = KronosTokenizer.from_pretrained(out / "tokenizer")
    assert model.config == TINY.predictor and tokenizer.config == TINY.tokenizer
    assert json.loads((out / "config.json").read_text())["d_model"] == TINY.predictor.d_model
    assert not (out.parent / f"{out.name}.train-state").exists()
    # Readable by others (a container's non-root user reads it from a mounted folder): 0644, not 0600.
    for weights in (out / "model.safetensors", out / "tokenizer" / "model.safetensors"):
        assert weights.stat().st_mode & 0o777 == 0o644, oct(weights.stat().st_mode)


def test_trained_checkpoint_gives_finite_forecasts(tiny_run, goog):
    out, _ = tiny_run
    predictor = KronosPredictor(
        Kronos.from_pretrained(out), KronosTokenizer.from_pretrained(out / "tokenizer"), device="cpu", max_context=64
    )
    frame = goog.iloc[-80:].reset_index(names="date")
    future = pd.Series(pd.bdate_range(frame["date"].iloc[-1] + pd.Timedelta(days=1), periods=10))
    forecast = predictor.predict(frame, frame["date"], future, pred_len=10, sample_count=3, seed=1)
    values = forecast.to_numpy()
    assert values.shape == (10, 6) and np.isfinite(values).all()
    # Trained on real prices, the forecast stays in the price range of the input's neighbourhood.
    close = frame["close"]
    assert close.min() * 0.5 < values[:, 3].mean() < close.max() * 1.5


def test_same_seed_same_weights_and_resume_matches(series, tmp_path):
    settings = dataclasses.replace(
        TINY.settings,
        tokenizer=StageSettings(steps=8, batch_size=4, lr=5e-3),
        predictor=StageSettings(steps=8, batch_size=4, lr=5e-3),
        save_every=3,
    )

    def run(out, resume=False, steps=None):
        s = (
            settings
            if steps is None
            else dataclasses.replace(settings, tokenizer=dataclasses.replace(settings.tokenizer, steps=steps))
        )
        model, tokenizer = new_pair(TINY.predictor, TINY.tokenizer, seed=0)
        return train(
            series,
            out,
            s,
            model=model,
            tokenizer=tokenizer,
            state_dir=tmp_path / "state",
            resume=resume,
            keep_state=True,
        )

    run(tmp_path / "a")
    run(tmp_path / "b")
    for sub in ("", "tokenizer"):
        assert _tensors_equal(read_tensors(tmp_path / "a" / sub), read_tensors(tmp_path / "b" / sub))
    # Interrupt after step 6 of 8 (state saved at step 6), then resume: the same weights as uninterrupted.
    shutil.rmtree(tmp_path / "state")
    state = tmp_path / "state" / "tokenizer"
    model, tokenizer = new_pair(TINY.predictor, TINY.tokenizer, seed=0)
    with pytest.raises(KeyboardInterrupt):
        _interrupt_after(6, series, tmp_path / "c", settings, model, tokenizer, tmp_path / "state")
    assert json.loads((state / "progress.json").read_text())["step"] == 6
    run(tmp_path / "c", resume=True)
    for sub in ("", "tokenizer"):
        assert _tensors_equal(read_tensors(tmp_path / "a" / sub), read_tensors(tmp_path / "c" / sub))
    # Resuming with different settings is refused rather than silently mixing two runs.
    with pytest.raises(ResumeError, match="settings differ"):
        run(tmp_path / "d", resume=True, steps=9)


def _interrupt_after(steps, series, out, settings, model, tokenizer, state_dir):
    """Run training until the optimizer has taken ``steps`` tokenizer steps, then stop it like Ctrl-C."""
    taken = 0
    original = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        nonlocal taken
        if taken == steps:
            raise KeyboardInterrupt
        taken += 1
        return original(self, *args, **kwargs)

    torch.optim.AdamW.step = step
    try:
        train(series, out, settings, model=model, tokenizer=tokenizer, state_dir=state_dir, keep_state=True)
    finally:
        torch.optim.AdamW.step = original


def test_finetune_from_public_conformance_checkpoint(conformance_dir, tmp_path, goog, capsys):
    csv = tmp_path / "goog.csv"
    goog.iloc[-600:].reset_index(names="date").to_csv(csv, index=False)
    before = {name: read_tensors(conformance_dir / name) for name in ("predictor", "tokenizer")}
    out = tmp_path / "finetuned"
    code = main(
        [
            str(csv),
            "--from",
            str(conformance_dir / "predictor"),
            "--from-tokenizer",
            str(conformance_dir / "tokenizer"),
            "--out",
            str(out),
            "--size",
            "tiny",
            "--tokenizer-steps",
            "15",
            "--predictor-steps",
            "25",
            "--no-progress",
            # Far above the fine-tuning defaults (2e-4, 4e-5), so that 25 steps visibly move the loss.
            "--tokenizer-lr",
            "5e-3",
            "--predictor-lr",
            "5e-3",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    tokenizer_stage, predictor_stage = summary["stages"]
    assert tokenizer_stage["last_loss"]["total"] < tokenizer_stage["first_loss"]["total"]
    assert predictor_stage["last_loss"]["total"] < predictor_stage["first_loss"]["total"]
    # Same shapes and config as the public checkpoint, new weights.
    for name, folder in (("predictor", out), ("tokenizer", out / "tokenizer")):
        assert json.loads((folder / "config.json").read_text()) == json.loads(
            (conformance_dir / name / "config.json").read_text()
        )
        after = read_tensors(folder)
        assert after.keys() == before[name].keys()
        assert not _tensors_equal(after, before[name])
    model, tokenizer = Kronos.from_pretrained(out), KronosTokenizer.from_pretrained(out / "tokenizer")
    frame = goog.iloc[-60:].reset_index(names="date")
    future = pd.Series(pd.bdate_range(frame["date"].iloc[-1] + pd.Timedelta(days=1), periods=5))
    forecast = KronosPredictor(model, tokenizer, device="cpu").predict(frame, frame["date"], future, 5, seed=0)
    assert np.isfinite(forecast.to_numpy()).all()


def test_predictor_stage_alone_keeps_the_given_tokenizer(conformance_dir, series, tmp_path):
    model = Kronos.from_pretrained(conformance_dir / "predictor")
    tokenizer = KronosTokenizer.from_pretrained(conformance_dir / "tokenizer")
    settings = dataclasses.replace(TINY.settings, predictor=StageSettings(steps=3, batch_size=4))
    train(series, tmp_path / "out", settings, model=model, tokenizer=tokenizer, stages=("predictor",))
    assert _tensors_equal(read_tensors(tmp_path / "out" / "tokenizer"), read_tensors(conformance_dir / "tokenizer"))


def test_quantizer_code_has_the_encoders_ids_and_passes_gradients(tokenizer):
    x = torch.randn(2, 12, 6)
    z = tokenizer.encode_latent(x).detach().requires_grad_(True)
    code, losses = bsq_quantize(z, tokenizer)
    bits = code > 0
    n = tokenizer.config.s1_bits
    weights = 2 ** torch.arange(n)
    s1, s2 = tokenizer.encode(x)
    assert torch.equal((bits[..., :n].long() * weights).sum(-1), s1)
    assert torch.equal((bits[..., n:].long() * weights).sum(-1), s2)
    # Straight-through: the code's gradient reaches z although sign() has none.
    (code.sum() + losses.total).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    dim = tokenizer.config.codebook_dim
    assert torch.allclose(code.abs(), torch.full_like(code, dim**-0.5))


def test_teacher_forced_s2_never_sees_later_positions(predictor_model):
    torch.manual_seed(0)
    vocab = 2**predictor_model.config.s1_bits
    s1, s2 = torch.randint(0, vocab, (1, 10)), torch.randint(0, vocab, (1, 10))
    stamps, s1_next = torch.randint(0, 7, (1, 10, 5)), torch.randint(0, vocab, (1, 10))
    with torch.no_grad():
        a1, a2 = teacher_forced_logits(predictor_model, s1, s2, stamps, s1_next)
        s1b, s2b, nextb = s1.clone(), s2.clone(), s1_next.clone()
        for tokens in (s1b, s2b, nextb):
            tokens[:, 6:] = (tokens[:, 6:] + 1) % vocab
        b1, b2 = teacher_forced_logits(predictor_model, s1b, s2b, stamps, nextb)
    torch.testing.assert_close(a1[:, :6], b1[:, :6])
    torch.testing.assert_close(a2[:, :6], b2[:, :6])
    assert not torch.allclose(a2[:, 6:], b2[:, 6:])


def test_bundled_demo_is_what_the_demo_preset_trains():
    from model.checkpoints.bundled import BUNDLED_NAME, bundled_model_path, bundled_tokenizer_path

    demo = preset("demo")
    assert BUNDLED_NAME == "kronos-demo"
    assert Kronos.from_pretrained(bundled_model_path()).config == demo.predictor
    assert KronosTokenizer.from_pretrained(bundled_tokenizer_path()).config == demo.tokenizer
    assert (bundled_model_path() / "README.md").read_text().count("kronos-train --demo") >= 1


def test_new_predictor_on_an_existing_tokenizer(conformance_dir, tmp_path, goog, capsys):
    csv = tmp_path / "goog.csv"
    goog.iloc[-300:].reset_index(names="date").to_csv(csv, index=False)
    common = [str(csv), "--out", str(tmp_path / "out"), "--size", "tiny", "--stage", "predictor", "--no-progress"]
    assert main(common) == 2
    assert "--stage predictor trains on a tokenizer's tokens" in capsys.readouterr().err
    assert main([*common, "--from-tokenizer", str(conformance_dir / "tokenizer"), "--predictor-steps", "3"]) == 0
    # The new predictor takes the tokenizer's token bits; the tokenizer is copied unchanged.
    assert Kronos.from_pretrained(tmp_path / "out").config.s1_bits == 6
    assert _tensors_equal(read_tensors(tmp_path / "out" / "tokenizer"), read_tensors(conformance_dir / "tokenizer"))
