"""The forecast page's HTTP side, in-process: its security headers, which of its paths are open without an
API key, unknown files, and KRONOS_ENABLE_UI=false. (The page in a browser: test_page_browser.py.)"""

from __future__ import annotations

import asyncio
import re

import httpx

from services.kronos_fastapi.app import create_app
from services.kronos_fastapi.settings import load_settings

KEY = "page-key"


def _get(paths: list[str], **settings) -> list[httpx.Response]:
    """GET each path from a new app (no lifespan: the page needs no model)."""

    async def run() -> list[httpx.Response]:
        app = create_app(load_settings(env_file=None, rate_limit_per_minute=0, **settings))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://in-process") as http:
            return [await http.get(path) for path in paths]

    return asyncio.run(run())


def test_the_page_and_its_files_are_open_with_a_strict_policy_when_keys_are_required():
    (page,) = _get(["/"], api_keys=KEY)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe" not in policy and "frame-ancestors 'none'" in policy
    linked = re.findall(r'(?:src|href)="(/ui/[^"]+)"', page.text)
    assert len(linked) >= 5
    for src, asset in zip(linked, _get(linked, api_keys=KEY)):
        assert asset.status_code == 200, src
        assert asset.headers["content-security-policy"] == policy
        assert asset.headers["x-content-type-options"] == "nosniff"
    config, predict, stray = _get(["/ui/config.json", "/v1/predict/single", "/ui/not-a-page-file.js"], api_keys=KEY)
    assert config.json()["api_key_required"] is True
    assert predict.status_code in (401, 405), "the API itself still needs the key"
    assert stray.status_code == 401, "only the page's own files are open"


def test_an_unknown_page_file_is_a_404_in_the_error_shape():
    for answer in _get(["/ui/not-a-page-file.js", "/ui/%2e%2e/settings.py", "/ui/vendor"]):
        assert answer.status_code == 404, answer.request.url
        assert answer.json()["error"]["type"] == "not_found"


def test_the_page_can_be_turned_off():
    assert _get(["/"])[0].status_code == 200
    for answer in _get(["/", "/ui/app.js", "/ui/config.json"], enable_ui=False):
        assert answer.status_code == 404 and answer.json()["error"]["type"] == "not_found", answer.request.url
