"""Loading checkpoint folders: the official format in, clear errors for anything else."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from model import CheckpointError, ConfigError, Kronos, KronosTokenizer
from model.nn.config import PredictorConfig, TokenizerConfig


@pytest.fixture
def predictor_copy(tmp_path, conformance_dir):
    folder = tmp_path / "predictor"
    shutil.copytree(conformance_dir / "predictor", folder)
    folder.chmod(0o755)
    for f in folder.iterdir():
        f.chmod(0o644)
    return folder


def _edit_tensors(folder, edit):
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path / "nope")):
        Kronos.from_pretrained(tmp_path / "nope")


def test_missing_weights_file_names_the_path(predictor_copy):
    (predictor_copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing"):
        Kronos.from_pretrained(predictor_copy)


def test_corrupt_weights_file_names_the_path(predictor_copy):
    (predictor_copy / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match=str(predictor_copy / "model.safetensors")):
        Kronos.from_pretrained(predictor_copy)


def test_corrupt_config_names_the_path(predictor_copy):
    (predictor_copy / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON"):
        Kronos.from_pretrained(predictor_copy)


def test_missing_unexpected_and_misshaped_tensors_are_named(predictor_copy):
    def edit(t):
        del t["norm.weight"]
        t["extra.bias"] = torch.zeros(3)
        t["head.proj_s1.bias"] = torch.zeros(5)

    _edit_tensors(predictor_copy, edit)
    with pytest.raises(CheckpointError) as info:
        Kronos.from_pretrained(predictor_copy)
    message = str(info.value)
    assert "missing tensors: norm.weight" in message
    assert "unexpected tensors: extra.bias" in message
    assert "mis-shaped tensors: head.proj_s1.bias (5,) (config wants (64,))" in message


def test_unknown_config_keys_are_tolerated(predictor_copy):
    config = json.loads((predictor_copy / "config.json").read_text())
    config["some_future_field"] = 1
    (predictor_copy / "config.json").write_text(json.dumps(config))
    assert Kronos.from_pretrained(predictor_copy).config.d_model == 32


@pytest.mark.parametrize(
    "change,message",
    [
        ({"s2_bits": 5}, "s1_bits (6) and s2_bits (5) must be equal"),
        ({"n_heads": 5}, "d_model (32) must be divisible by n_heads (5)"),
        ({"d_model": 36, "n_heads": 4}, "must be even for rotary"),
        ({"n_layers": 0}, "n_layers must be a positive integer"),
        ({"d_model": "32"}, "d_model must be a positive integer"),
        ({"attn_dropout_p": 2}, "attn_dropout_p must be in [0, 1)"),
        ({"learn_te": "yes"}, "learn_te must be true or false"),
    ],
)
def test_impossible_predictor_config_is_rejected(predictor_copy, change, message):
    config = json.loads((predictor_copy / "config.json").read_text())
    config.update(change)
    (predictor_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError) as info:
        Kronos.from_pretrained(predictor_copy)
    assert message in str(info.value)
    assert str(predictor_copy / "config.json") in str(info.value)


def test_missing_config_field_is_named():
    with pytest.raises(ConfigError, match="missing field.*n_layers"):
        PredictorConfig.from_dict({"s1_bits": 4, "s2_bits": 4, "d_model": 8, "n_heads": 2, "ff_dim": 8})


def test_tokenizer_config_rejects_wrong_input_width():
    with pytest.raises(ConfigError, match="d_in must be 6"):
        TokenizerConfig(
            d_in=5, d_model=8, n_heads=2, ff_dim=8, n_enc_layers=2, n_dec_layers=2, s1_bits=4, s2_bits=4
        ).validate()


def test_save_and_reload_round_trip(tmp_path, predictor_model, tokenizer):
    predictor_model.save_pretrained(tmp_path / "p")
    tokenizer.save_pretrained(tmp_path / "t")
    again = Kronos.from_pretrained(tmp_path / "p")
    assert again.config == predictor_model.config
    for key, value in predictor_model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0)
    assert KronosTokenizer.from_pretrained(tmp_path / "t").config == tokenizer.config
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["config.json", "model.safetensors"]


def test_fixed_time_embedding_checkpoint_loads(tmp_path):
    # learn_te false stores the sinusoid tables as time_emb.<field>.emb.weight.
    config = PredictorConfig(s1_bits=4, s2_bits=4, n_layers=1, d_model=8, n_heads=2, ff_dim=16, learn_te=False)
    Kronos(config).save_pretrained(tmp_path / "fixed")
    keys = load_file(str(tmp_path / "fixed" / "model.safetensors")).keys()
    assert "time_emb.minute_embed.emb.weight" in keys
    assert Kronos.from_pretrained(tmp_path / "fixed").config.learn_te is False
