"""The REST API server for the UK-law dataset generator: the top of the tree.

`create_app(settings)` builds a fresh application and starts nothing (tests give it a temporary
data directory and call `app.extensions["services"].start()` when they want background work);
`main()` — the `uk-law-server` entry point, `python -m api_server` — configures logging, starts the
services and serves the app with waitress on HOST:PORT (default 127.0.0.1:5001). `--demo` first
starts simulated providers so it runs without any key.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any, Sequence

from flask import Flask

from config.providers import AppConfig, ConfigError
from config.settings import Settings, SettingsError
from storage.errors import StoreError
from storage.lock import DataDirLock, DataDirLocked
from web.app import create_app as create_web_app
from web.logs import configure_logging
from web.services import Services

log = logging.getLogger("api")


def create_app(settings: Settings | None = None, config: AppConfig | None = None, *, demo: Any = None) -> Flask:
    """A new application with its own store, engine and batch manager; nothing started."""
    return create_web_app(Services.build(settings or Settings.from_env(), config, demo=demo))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="UK-law dataset generator API server")
    parser.add_argument("--demo", action="store_true", help="run against built-in simulated providers (no keys)")
    parser.add_argument("--host", help="bind address (default HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default PORT or 5001)")
    args = parser.parse_args(argv)
    try:
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
        settings = Settings.load(**overrides)   # the environment, over `.env` in the working directory
        demo = None
        if args.demo:
            from simulator.demo import start_demo

            settings, demo = start_demo(settings)
        lock = DataDirLock(settings.database_path.parent).acquire(address=f"http://{settings.host}:{settings.port}")
        services = Services.build(settings, demo=demo)
    except (ConfigError, SettingsError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except DataDirLocked as exc:
        print(f"data directory in use: {exc}", file=sys.stderr)
        return 3
    except StoreError as exc:   # schema too new or foreign, file damaged or unwritable: one line
        print(f"database error: {exc}", file=sys.stderr)
        return 2
    configure_logging(services.secrets())
    app = create_web_app(services)
    services.start()

    from waitress import create_server

    # channel_request_lookahead keeps a busy connection readable, so waitress notices at once when a
    # client of a long response (the event stream) goes away and reports it to the app.
    server = create_server(app, host=settings.host, port=settings.port, threads=settings.threads,
                           channel_timeout=300, channel_request_lookahead=1)

    def shutdown(signum: int, frame: Any) -> None:
        log.info("signal %s: shutting down", signum)
        services.batches.shutdown()
        server.close()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    mode = " (demo: simulated providers)" if demo else ""
    log.info("serving on http://%s:%s%s", settings.host, settings.port, mode)
    try:
        server.run()
    except (OSError, ValueError):
        pass  # the listening socket closed on shutdown
    services.close()
    lock.release()
    if demo is not None:
        demo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
