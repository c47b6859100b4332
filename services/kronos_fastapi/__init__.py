"""The Kronos FastAPI service: ``create_app(settings)`` and the ``kronos-serve`` entry point.

``create_app`` is imported on first use: ``kronos-serve --help`` and settings errors answer before
the model code (and torch) loads.
"""

from __future__ import annotations

from typing import Any

from .settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "create_app", "load_settings"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
