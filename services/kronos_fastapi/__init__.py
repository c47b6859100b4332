"""The Kronos FastAPI service: ``create_app(settings)`` and the ``kronos-serve`` entry point."""

from .app import create_app
from .settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "create_app", "load_settings"]
