"""The REST API server for the UK-law dataset generator: the top of the tree.

`create_app(settings)` builds a fresh application and starts nothing (tests give it a temporary
data directory and call `app.extensions["services"].start()` when they want background work);
`main()` — the `uk-law-server` entry point, `python -m api_server` — configures logging, starts the
services and serves the app with waitress on HOST:PORT (default 127.0.0.1:5001). `--demo` first
starts simulated providers so it runs without any key.

SIGTERM or SIGINT stops it within SHUTDOWN_SECONDS (default 5) and exits with status 0: the server
stops accepting connections and closes the open ones, every batch worker is told to stop, and work
waiting on a provider (a batch worker, a `POST /api/generate`) is abandoned, not waited for; those
threads are daemons and their answers are dropped. Running batches stay `running` and resume under
the same id at the next start.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
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
                           channel_timeout=300, channel_request_lookahead=1, **SERVER_BUFFERS)

    signals: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        signals.append(signum)   # takes no lock: the main thread, polling below, does the work

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serving = threading.Thread(target=_serve, args=(server,), name="http-server", daemon=True)
    mode = " (demo: simulated providers)" if demo else ""
    log.info("serving on http://%s:%s%s", settings.host, settings.port, mode)
    serving.start()
    while not signals and serving.is_alive():
        serving.join(0.2)

    began = time.monotonic()
    deadline = began + settings.shutdown_seconds
    if signals:
        log.info("signal %s: shutting down (within %gs)", signals[0], settings.shutdown_seconds)
    else:
        log.error("the HTTP server stopped by itself; shutting down")
    _stop_serving(server, in_loop=serving.is_alive(), timeout=max(0.0, deadline - time.monotonic()))
    services.close(timeout=max(0.0, deadline - time.monotonic()))
    lock.release()
    if demo is not None:
        demo.stop()
    log.info("stopped in %.1fs", time.monotonic() - began)
    return 0 if signals else 1


# A response is buffered in memory up to 32 MB per connection (waitress spools anything past 1 MB to a
# temporary file by default: every chunk of the `/api/data` array went through the disk); past 16 MB
# the request thread waits for the client, so a slow reader never makes the buffer grow further.
SERVER_BUFFERS = {"outbuf_overflow": 32 * 1024 * 1024, "outbuf_high_watermark": 16 * 1024 * 1024}


def _serve(server: Any) -> None:
    try:
        server.run()
    except Exception:  # noqa: BLE001 - reported; `main` sees the thread end and shuts down
        log.exception("the HTTP server failed")


def _stop_serving(server: Any, *, in_loop: bool, timeout: float) -> None:
    """Close the listening sockets (new connections are refused) and every open connection (a
    request still being answered is cut off; its thread may be waiting on a provider and is not
    waited for). Done in waitress's loop thread, which a trigger wakes, unless that loop is gone.
    The loop's trigger stays open: request threads that finish later still pull it, and a closed
    trigger's descriptor may by then belong to another file."""
    from waitress import wasyncore
    from waitress.server import BaseWSGIServer

    # One listening socket: the server itself; several (a host name with IPv4 and IPv6 addresses):
    # a MultiSocketServer whose map holds one server per socket.
    servers = [server] if isinstance(server, BaseWSGIServer) else \
        [s for s in server.map.values() if isinstance(s, BaseWSGIServer)]
    done = threading.Event()

    def close() -> None:
        try:
            for one in servers:
                wasyncore.dispatcher.close(one)   # the listening socket only, not the trigger
                for channel in list(one.active_channels.values()):
                    channel.handle_close()
        finally:
            done.set()

    if in_loop and servers:
        servers[0].trigger.pull_trigger(close)
        if not done.wait(timeout):
            log.warning("the HTTP server did not close its connections within %.1fs", timeout)
    else:
        close()


if __name__ == "__main__":
    sys.exit(main())
