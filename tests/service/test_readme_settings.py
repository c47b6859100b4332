"""The README's settings table lists every setting with its default, and the guide's calls."""

from __future__ import annotations

import re

from conftest import ROOT

from services.kronos_fastapi.settings import Settings, env_name

# Defaults that depend on the machine or another setting are described in words.
DESCRIBED = {
    "model_path": "the bundled model",
    "tokenizer_path": "`MODEL_PATH/tokenizer`",
    "instance_name": "the host name",
    "max_pred_len": "`0` (= `MAX_CONTEXT`)",
    "model_revision": "`main`",
    "tokenizer_revision": "`main`",
    "default_model": "the first model",
    "jobs_database_url": "unset",
}


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("<!-- section:service -->", 1)[1].split("<!-- /section:service -->", 1)[0]


def _table() -> dict[str, str]:
    rows = re.findall(r"^\| `(KRONOS_[A-Z_]+)` \| (.+?) \| .+ \|$", _section(), flags=re.MULTILINE)
    return dict(rows)


def _shown(value) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return "empty"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def test_every_setting_is_in_the_table_with_its_default():
    table = _table()
    for name, field in Settings.model_fields.items():
        variable = env_name(name)
        assert variable in table, f"{variable} is missing from the README settings table"
        expected = DESCRIBED.get(name) or _shown(field.get_default(call_default_factory=True))
        assert table[variable] == expected, f"{variable}: README says {table[variable]}, code says {expected}"
    assert set(table) == {env_name(name) for name in Settings.model_fields}, "the table lists unknown settings"


def test_the_guide_calls_are_shown():
    section = _section()
    for call in ("/v1/healthz", "/v1/readyz | jq '.device'", "/v1/predict/single", "/v1/predict/batch", "/v1/metrics"):
        assert call in section
    assert "pip install -c constraints.txt torch==2.13.0 -e . && kronos-serve" in section
