"""HTTP access to the server: JSON requests, the export download and the event stream.

Every failure becomes a `CliError` with one line that says what went wrong (the server is
unreachable, it answered an error, it is not the uk-law server), never a traceback.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import click
import httpx

DEFAULT_SERVER = "http://127.0.0.1:5001"
USER_AGENT = "uk-law-cli"


class CliError(click.ClickException):
    """A failure the user can act on: printed as one line on stderr, exit code 1."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))   # one line, whatever the server said

    def show(self, file: Any = None) -> None:
        click.echo(f"uk-law: error: {self.format_message()}", err=True)


class StreamUnavailable(Exception):
    """The event stream could not be opened now, but may be later (503 with Retry-After)."""

    def __init__(self, message: str, retry_after: float | None):
        super().__init__(message)
        self.retry_after = retry_after


def check_server(server: str) -> str:
    """The base URL without a trailing slash, or a CliError naming what is wrong with it."""
    text = server.strip().rstrip("/")
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, TypeError, ValueError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise CliError(f"--server / UK_LAW_SERVER must be an http(s) address such as {DEFAULT_SERVER}, "
                       f"not {server!r}")
    return text


def check_token(token: str | None) -> str | None:
    if token is None or not token.strip():
        return None
    if not (token.isascii() and token.isprintable()):
        raise CliError("API_TOKEN must be printable ASCII")
    return token.strip()


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    return text[:1].lower() + text[1:]


class ApiClient:
    """One server. Reads send no credentials; writes send `Authorization: Bearer <API_TOKEN>`."""

    def __init__(self, server: str, *, token: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None):
        self.base = check_server(server)
        self.token = check_token(token)
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.base, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                                  headers={"User-Agent": USER_AGENT}, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------------------

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        with self._translated():
            response = self._http.get(path, params=_params(params), headers={"Accept": "application/json"})
        return self._json(response)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        with self._translated():
            response = self._http.post(path, json=body, headers=self._write_headers())
        return self._json(response)

    def download(self, path: str, params: dict[str, Any], destination: str) -> tuple[int, str | None]:
        """Stream a response body to `destination` ("-" for stdout); returns (bytes written, X-Total-Count).
        A file is written beside its final name and renamed into place at the end, so an interrupted
        or failed download never leaves a partial file under that name."""
        with self._translated():
            with self._http.stream("GET", path, params=_params(params)) as response:
                if response.status_code >= 400:
                    response.read()
                    self._json(response)    # raises with the server's message
                total = response.headers.get("X-Total-Count")
                if destination == "-":
                    out = click.get_binary_stream("stdout")
                    written = _copy(response, out)
                    out.flush()
                    return written, total
                return _copy_to_file(response, Path(destination)), total

    @contextlib.contextmanager
    def events(self, read_timeout: float) -> Iterator[Iterator[str]]:
        """The batch event stream as lines. StreamUnavailable when the server is busy (503);
        httpx errors (connection refused, dropped, read timeout) are left to the caller, who reconnects."""
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0), read=read_timeout)
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        with self._http.stream("GET", "/api/generate/batch/stream", timeout=timeout, headers=headers) as response:
            if response.status_code == 503:
                response.read()
                raise StreamUnavailable(_error_text(response), _retry_after(response))
            if response.status_code != 200:
                response.read()
                raise CliError(f"the event stream answered {response.status_code}: {_error_text(response)}")
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise CliError(f"{self.base} did not answer with an event stream; is it the uk-law server?")
            yield response.iter_lines()

    # -- helpers -------------------------------------------------------------------------------

    def _write_headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectTimeout:
            raise CliError(f"cannot reach the server at {self.base}: the connection timed out") from None
        except httpx.ConnectError as exc:
            raise CliError(f"cannot reach the server at {self.base} ({_reason(exc)}); is it running? "
                           "Set --server or UK_LAW_SERVER to its address") from None
        except httpx.TimeoutException:
            raise CliError(f"the server at {self.base} did not answer within {self.timeout:g} s "
                           "(--timeout sets the limit)") from None
        except httpx.HTTPError as exc:
            raise CliError(f"the connection to {self.base} failed: {_reason(exc)}") from None
        except BrokenPipeError:   # `uk-law export -o - | head`: the reader left
            raise
        except OSError as exc:   # writing the download
            raise CliError(f"{exc.filename or 'output'}: {exc.strerror or _reason(exc)}") from None

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            message = _error_text(response)
            if response.status_code == 401:
                message += " (set the API_TOKEN environment variable to the server's token)"
            raise CliError(f"the server answered {response.status_code}: {message}")
        try:
            return response.json()
        except ValueError:
            raise CliError(f"{self.base} answered {response.request.url.path} with something that is not JSON; "
                           "is it the uk-law server?") from None


def _params(params: dict[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    text = response.text.strip()
    return text[:200] if text else response.reason_phrase or f"HTTP {response.status_code}"


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


def _copy(response: httpx.Response, out: BinaryIO) -> int:
    written = 0
    for chunk in response.iter_bytes():
        out.write(chunk)
        written += len(chunk)
    return written


def _copy_to_file(response: httpx.Response, destination: Path) -> int:
    directory = destination.parent if str(destination.parent) else Path(".")
    fd, partial = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            written = _copy(response, out)
        os.replace(partial, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    return written


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
