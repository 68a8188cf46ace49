"""The REST API server for the UK-law dataset generator.

`create_app(settings)` builds a fresh application (tests give it a temporary data directory);
`python api_server.py` serves it with waitress on HOST:PORT (default 127.0.0.1:5001), and
`python api_server.py --demo` first starts simulated providers so it runs without any key.
"""
from __future__ import annotations

import argparse
import hmac
import logging
import os
import signal
import sys
import threading
from typing import Any, Sequence

from dotenv import dotenv_values
from flask import Flask, request
from flask_cors import CORS

from generation.engine import GenerationEngine
from errors import redact
from config.providers import AppConfig, ConfigError, load_config
from quality.service import QualityService
from config.settings import Settings, SettingsError
from dataset.stats import StatsFrame
from storage.store import Store
from web.errors import ApiError, register_error_handlers
from web.services import Services

log = logging.getLogger("api")

WRITE_METHODS = {"POST", "PUT", "DELETE", "PATCH"}
# POST endpoints that only read (they take a body because a GET cannot).
READ_ONLY_POSTS = {"data.download_samples"}


class RedactSecrets(logging.Filter):
    """Removes API keys and tokens from every log record, whatever logged it."""

    def __init__(self, secrets: Sequence[str]):
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = redact(f"{record.getMessage()} ({type(exc).__name__}: {exc})", self.secrets)
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def _install_redaction(settings: Settings, config: AppConfig) -> None:
    secrets = [settings.env.get(p.api_key_env or "", "") for p in config.providers.values()]
    secrets += [settings.api_token or "", settings.env.get("HF_TOKEN", "")]
    redactor = RedactSecrets(secrets)
    root = logging.getLogger()
    for handler in root.handlers:
        handler.filters = [f for f in handler.filters if not isinstance(f, RedactSecrets)]
        handler.addFilter(redactor)
    for name in ("api", "batch", "waitress", "werkzeug"):
        logger = logging.getLogger(name)
        logger.filters = [f for f in logger.filters if not isinstance(f, RedactSecrets)]
        logger.addFilter(redactor)


def _check_token(settings: Settings) -> None:
    if not settings.api_token or request.method not in WRITE_METHODS:
        return
    if request.routing_exception is not None or request.endpoint in READ_ONLY_POSTS:
        return
    supplied = request.headers.get("Authorization", "")
    if not hmac.compare_digest(supplied.encode(), f"Bearer {settings.api_token}".encode()):
        raise ApiError(401, "this request changes data: send Authorization: Bearer <API_TOKEN>",
                       {"WWW-Authenticate": "Bearer"})


def create_app(settings: Settings | None = None, config: AppConfig | None = None, *,
               demo: Any = None, start_batches: bool = True) -> Flask:
    """A new application with its own store, engine and batch worker."""
    settings = settings or Settings.from_env()
    config = config or load_config(settings.provider_config_file, settings.env)
    store = Store(settings.database_path)
    engine = GenerationEngine(config, settings.env)
    services = Services(settings=settings, config=config, engine=engine, store=store, stats=StatsFrame(store),
                        quality=QualityService(store), demo=demo)

    app = Flask(__name__)
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["services"] = services
    CORS(app, resources={r"/api/*": {"origins": list(settings.cors_origins)}},
         methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"], allow_headers=["Content-Type", "Authorization"],
         expose_headers=["X-Total-Count", "Retry-After", "Content-Disposition"])
    register_error_handlers(app)
    app.before_request(lambda: _check_token(settings))

    from web import openapi, routes_batch, routes_data, routes_export, routes_generate, routes_meta, routes_quality

    for module in (routes_meta, routes_data, routes_export, routes_generate, routes_quality, openapi):
        app.register_blueprint(module.bp)
    routes_batch.install(app, services, start=start_batches)
    threading.Thread(target=_warm_up, args=(services,), name="warm-up", daemon=True).start()
    _install_redaction(settings, config)
    return app


def _warm_up(services: Services) -> None:
    """In the background: the statistics frame first (the dashboard asks for it at once), then the
    duplicate index (generation waits for it; at 100,000 samples it takes seconds)."""
    services.stats.frame()
    services.quality.build()


def _load_env(path: str = ".env") -> dict[str, str]:
    values = {k: v for k, v in dotenv_values(path).items() if v is not None} if os.path.exists(path) else {}
    return {**values, **os.environ}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="UK-law dataset generator API server")
    parser.add_argument("--demo", action="store_true", help="run against built-in simulated providers (no keys)")
    parser.add_argument("--host", help="bind address (default HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default PORT or 5001)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env = _load_env()
    try:
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
        settings = Settings.from_env(env, **overrides)
        demo = None
        if args.demo:
            from simulator.demo import start_demo

            settings, demo = start_demo(settings)
        app = create_app(settings, demo=demo)
    except (ConfigError, SettingsError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2

    from waitress import create_server

    server = create_server(app, host=settings.host, port=settings.port, threads=settings.threads,
                           channel_timeout=300)

    def shutdown(signum: int, frame: Any) -> None:
        log.info("signal %s: shutting down", signum)
        batches = app.extensions["services"].batches
        if batches is not None:
            batches.shutdown()
        server.close()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    mode = " (demo: simulated providers)" if demo else ""
    log.info("serving on http://%s:%s%s", settings.host, settings.port, mode)
    try:
        server.run()
    except (OSError, ValueError):
        pass  # the listening socket closed on shutdown
    if demo is not None:
        demo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
