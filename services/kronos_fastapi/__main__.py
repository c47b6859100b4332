"""``kronos-serve`` / ``python -m services.kronos_fastapi``: run the service with uvicorn.

Flags override ``KRONOS_*`` variables, which override the ``.env`` file.
"""

from __future__ import annotations

import argparse
import sys

from .settings import SettingsError, load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kronos-serve",
        description="Serve Kronos forecasts over HTTP (default: the bundled model on cpu at 127.0.0.1:8000).",
    )
    parser.add_argument("--host", help="address to bind (KRONOS_HOST; use 0.0.0.0 in containers)")
    parser.add_argument("--port", type=int, help="port to bind (KRONOS_PORT, default 8000)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N, mps or auto (KRONOS_DEVICE)")
    parser.add_argument(
        "--device-fallback", choices=["refuse", "cpu"], help="when the device is absent (KRONOS_DEVICE_FALLBACK)"
    )
    parser.add_argument(
        "--model", dest="model_path", help="predictor folder or hub id, e.g. NeoQuasar/Kronos-small (KRONOS_MODEL_PATH)"
    )
    parser.add_argument(
        "--revision", dest="model_revision", help="commit, branch or tag of a hub id (KRONOS_MODEL_REVISION)"
    )
    parser.add_argument("--tokenizer", dest="tokenizer_path", help="tokenizer folder or hub id (KRONOS_TOKENIZER_PATH)")
    parser.add_argument("--log-level", help="CRITICAL, ERROR, WARNING, INFO or DEBUG (KRONOS_LOG_LEVEL)")
    parser.add_argument("--env-file", default=".env", help="settings file read under the environment (default: .env)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "env_file" and v is not None}
    try:
        settings = load_settings(env_file=args.env_file, **overrides)
    except SettingsError as exc:
        print(f"kronos-serve: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    from .app import create_app
    from .drain import DRAIN_MARGIN_S, draining_server
    from .logs import configure_logging

    configure_logging(settings.log_level)
    app = create_app(settings)
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    shown = f"[{shown}]" if ":" in shown else shown
    if not settings.api_keys and settings.host not in ("127.0.0.1", "::1", "localhost"):
        print(
            f"kronos-serve: WARNING: KRONOS_API_KEYS is empty, so anyone who reaches {settings.host}:{settings.port} "
            "may use the API (KRONOS_REQUIRE_API_KEYS=true refuses to start like this)",
            file=sys.stderr,
            flush=True,
        )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # X-Forwarded-For is believed only from KRONOS_TRUSTED_PROXIES
        server_header=False,
        # The drain answers what is left at KRONOS_SHUTDOWN_TIMEOUT_S; uvicorn cancels only after it.
        timeout_graceful_shutdown=settings.shutdown_timeout_s + DRAIN_MARGIN_S,  # type: ignore[arg-type]
    )
    server = draining_server(config, app.state.drain)
    startup = server.startup

    async def started_then_said(sockets=None) -> None:
        """Said once the port is bound: a bind error (port taken) is not preceded by "listening on"."""
        await startup(sockets=sockets)
        if server.started:
            print(
                f"Kronos service listening on http://{shown}:{settings.port} (bound to {settings.host}; "
                f"model {settings.model_path}, device {settings.device}) — try http://{shown}:{settings.port}/v1/readyz",
                flush=True,
            )

    server.startup = started_then_said  # type: ignore[method-assign]
    server.run()
    if not server.started:
        return 3  # uvicorn's start-up failure (e.g. the port is taken), as uvicorn.run exits
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
