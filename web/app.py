"""The Flask application factory: routes, CORS, error handling and the write-token check.

`create_app(services)` only wires HTTP to already-built services: it starts no thread, resumes no
batch and leaves logging alone (see `web.services.Services.start` and `api_server.main`).
"""
from __future__ import annotations

import hmac

from flask import Flask, request
from flask_compress import Compress
from flask_cors import CORS

from config.settings import Settings
from web import openapi, routes_batch, routes_data, routes_export, routes_generate, routes_meta, routes_quality
from web.errors import ApiError, register_error_handlers
from web.services import Services
from web.streams import StreamSlots

WRITE_METHODS = {"POST", "PUT", "DELETE", "PATCH"}
# POST endpoints that only read (they take a body because a GET cannot).
READ_ONLY_POSTS = {"data.download_samples"}
BLUEPRINTS = (routes_meta, routes_data, routes_export, routes_generate, routes_batch, routes_quality, openapi)


def create_app(services: Services) -> Flask:
    """A new application serving `services`."""
    settings = services.settings
    app = Flask(__name__)
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["services"] = services
    app.extensions["event_streams"] = StreamSlots(settings.sse_stream_limit)
    CORS(app, resources={r"/api/*": {"origins": list(settings.cors_origins)}},
         methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"], allow_headers=["Content-Type", "Authorization"],
         expose_headers=["X-Total-Count", "Retry-After", "Content-Disposition"])
    # JSON answers are compressed for clients that accept it (browsers do): zstd, brotli or gzip,
    # streamed ones (the `/api/data` array) chunk by chunk. Event streams are never compressed.
    app.config.update(COMPRESS_MIMETYPES=["application/json"], COMPRESS_ALGORITHM=["zstd", "br", "gzip"],
                      COMPRESS_ALGORITHM_STREAMING=["zstd", "br", "gzip"], COMPRESS_BR_LEVEL=1,
                      COMPRESS_ZSTD_LEVEL=1, COMPRESS_LEVEL=1, COMPRESS_MIN_SIZE=1024)
    Compress(app)
    register_error_handlers(app)
    app.before_request(lambda: _check_origin(settings))
    app.before_request(lambda: _check_token(settings))
    for module in BLUEPRINTS:
        app.register_blueprint(module.bp)
    return app


def _check_origin(settings: Settings) -> None:
    """A browser names the page that sent a request in `Origin`. A write from a page that is neither
    this server nor an allowed CORS origin is refused, body or not: a bodiless cross-site POST
    needs no preflight, so CORS alone cannot stop it. Clients that send no `Origin` (curl, scripts)
    are unaffected."""
    origin = request.headers.get("Origin")
    if origin is None or request.method not in WRITE_METHODS:
        return
    own = request.host_url.rstrip("/")
    if origin != own and origin not in settings.cors_origins:
        raise ApiError(403, f"writes from the web page at {origin[:200]!r} are not allowed; "
                            f"add it to CORS_ORIGINS if it is yours")


def _check_token(settings: Settings) -> None:
    if not settings.api_token or request.method not in WRITE_METHODS:
        return
    if request.routing_exception is not None or request.endpoint in READ_ONLY_POSTS:
        return
    supplied = request.headers.get("Authorization", "")
    if not hmac.compare_digest(supplied.encode(), f"Bearer {settings.api_token}".encode()):
        raise ApiError(401, "this request changes data: send Authorization: Bearer <API_TOKEN>",
                       {"WWW-Authenticate": "Bearer"})
