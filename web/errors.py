"""JSON errors for every failure: `{"success": false, "error": "..."}` with a 4xx/5xx status."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from storage.errors import DatabaseUnreachable, InvalidRecord, WriteFailed

log = logging.getLogger("api")


class ApiError(Exception):
    """An error answered as JSON; `status` is the HTTP status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    response = jsonify({"success": False, "error": message, **extra})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


_HTTP_MESSAGES = {
    404: "no such endpoint",
    405: "method not allowed for this endpoint",
    413: "request body too large",
}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.headers, **exc.extra)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = _HTTP_MESSAGES.get(status) or (exc.description or exc.name)
        headers = {"Allow": ", ".join(exc.valid_methods)} if status == 405 and getattr(exc, "valid_methods", None) else {}
        return error_response(status, message, headers)

    @app.errorhandler(InvalidRecord)
    def _invalid_record(exc: InvalidRecord) -> Response:   # the store's own check (storage.records)
        return error_response(400, f"invalid sample: {exc}")

    @app.errorhandler(WriteFailed)
    def _write_failed(exc: WriteFailed) -> Response:
        if isinstance(exc, DatabaseUnreachable):   # a read or a write: the database logged its outage once
            return error_response(503, f"storage: {exc}", {"Retry-After": "5"})
        log.error("write failed: %s", exc)
        return error_response(503, f"storage: {exc}", {"Retry-After": "30"})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error: %s", type(exc).__name__)
        return error_response(500, "internal error; see the server log")
