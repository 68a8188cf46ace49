"""A local HTTP server that speaks the providers' chat-completions wire formats.

`POST /openai/v1/chat/completions` answers like Groq (rate-limit headers per day for requests and
per minute for tokens, resets as durations), `POST /v1/chat/completions` like Cerebras (suffixed
headers, resets in float seconds, errors with the body at the top level). Faults are scripted per
model (`script`) or set for good (`always`): any status, headers and body, a delay, a hang past
the client's timeout, an answer held until a test opens its gate, a dropped connection, non-JSON
output. Optional per-model limits make it answer 429 like the real services. Every request is
recorded so tests can count them, and `held` says how many are held unanswered right now.
"""
from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from simulator.content import make_sample

GROQ_PATH = "/openai/v1/chat/completions"
CEREBRAS_PATH = "/v1/chat/completions"
MODELS_PATHS = ("/openai/v1/models", "/v1/models")


@dataclass
class Reply:
    """One scripted response. Defaults give a valid sample."""

    status: int = 200
    body: Any = None                 # dict/list -> JSON, str -> sent as is; None -> a completion
    content: str | None = None       # for a generated completion: the message content to send
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0               # seconds before answering
    hang: bool = False               # never answer (until the server stops)
    gate: threading.Event | None = None   # answer only once this is set (never, if the server stops first)
    drop: bool = False               # close the connection without answering
    content_type: str = "application/json"


def groq_error(status: int, message: str, code: str | None = None, type_: str = "invalid_request_error",
               headers: dict[str, str] | None = None, **extra: Any) -> Reply:
    error = {"message": message, "type": type_, **({"code": code} if code else {}), **extra}
    return Reply(status=status, body={"error": error}, headers=headers or {})


def cerebras_error(status: int, message: str, code: str | None = None, type_: str = "invalid_request_error",
                   headers: dict[str, str] | None = None, body_status: int | None = None) -> Reply:
    body: dict[str, Any] = {"message": message, "type": type_, "param": "", "code": code}
    if body_status is not None:
        body["status_code"] = body_status
    return Reply(status=status, body=body, headers=headers or {})


@dataclass
class Recorded:
    path: str
    model: str | None
    body: dict[str, Any]
    at: float


class _Limits:
    """Sliding-window limits for one model (requests/min, requests/day, tokens/min)."""

    def __init__(self, rpm: int | None = None, rpd: int | None = None, tpm: int | None = None):
        self.rpm, self.rpd, self.tpm = rpm, rpd, tpm
        self.requests: deque[float] = deque()
        self.day: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()

    def _prune(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - 60:
            self.requests.popleft()
        while self.day and self.day[0] <= now - 86400:
            self.day.popleft()
        while self.tokens and self.tokens[0][0] <= now - 60:
            self.tokens.popleft()

    def admit(self, tokens: int, now: float) -> float:
        """0 when admitted (and counted), else seconds until it would be."""
        self._prune(now)
        waits = [0.0]
        if self.rpm is not None and len(self.requests) >= self.rpm:
            waits.append(self.requests[0] + 60 - now)
        if self.rpd is not None and len(self.day) >= self.rpd:
            waits.append(self.day[0] + 86400 - now)
        used = sum(t for _, t in self.tokens)
        if self.tpm is not None and used + tokens > self.tpm and self.tokens:
            waits.append(self.tokens[0][0] + 60 - now)
        wait = max(waits)
        if wait > 0:
            return wait
        self.requests.append(now)
        self.day.append(now)
        self.tokens.append((now, tokens))
        return 0.0

    def headers(self, style: str, now: float) -> dict[str, str]:
        self._prune(now)
        used = sum(t for _, t in self.tokens)
        day_left = (self.rpd - len(self.day)) if self.rpd is not None else 14400 - len(self.day)
        tok_limit = self.tpm if self.tpm is not None else 1_000_000
        # Resets say when the window is whole again, as the providers document them.
        tok_reset = (self.tokens[-1][0] + 60 - now) if self.tokens else 0.0
        day_reset = (self.day[-1] + 86400 - now) if self.day else 0.0
        if style == "groq":
            return {"x-ratelimit-limit-requests": str(self.rpd or 14400),
                    "x-ratelimit-remaining-requests": str(max(0, day_left)),
                    "x-ratelimit-reset-requests": _duration(day_reset),
                    "x-ratelimit-limit-tokens": str(tok_limit),
                    "x-ratelimit-remaining-tokens": str(max(0, tok_limit - used)),
                    "x-ratelimit-reset-tokens": _duration(tok_reset)}
        return {"x-ratelimit-limit-requests-day": str(self.rpd or 14400),
                "x-ratelimit-remaining-requests-day": str(max(0, day_left)),
                "x-ratelimit-reset-requests-day": f"{day_reset:.6f}",
                "x-ratelimit-limit-tokens-minute": str(tok_limit),
                "x-ratelimit-remaining-tokens-minute": str(max(0, tok_limit - used)),
                "x-ratelimit-reset-tokens-minute": f"{tok_reset:.6f}"}


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{int(hours)}h" if hours else "") + (f"{int(minutes)}m" if minutes or hours else "")
    return text + f"{secs:.2f}s"


class _Server(ThreadingHTTPServer):
    request_queue_size = 256   # many clients at once, as under a batch
    daemon_threads = True


class FakeProviderServer:
    """Start with `with FakeProviderServer() as server:`; point base URLs at `server.url`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, latency: float | Callable[[], float] = 0.0,
                 seed: int | None = None, fault_rate: float = 0.0, simulated: bool = False):
        self.latency = latency
        self.fault_rate = fault_rate
        self.simulated = simulated
        self.rng = random.Random(seed)
        self.requests: list[Recorded] = []
        self.statuses: Counter[int] = Counter()     # HTTP statuses answered
        self._scripts: dict[str, deque[Reply]] = {}
        self._always: dict[str, Reply] = {}
        self._limits: dict[str, _Limits] = {}
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._held = 0                              # requests a hang or a closed gate holds right now
        self._httpd = _Server((host, port), self._handler_class())
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeProviderServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-provider", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "FakeProviderServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, model: str, *replies: Reply) -> None:
        """Answer the next requests for `model` with these replies, in order."""
        with self._lock:
            self._scripts.setdefault(model, deque()).extend(replies)

    def always(self, model: str, reply: Reply | None) -> None:
        """Answer every request for `model` with this reply (None: back to normal)."""
        with self._lock:
            if reply is None:
                self._always.pop(model, None)
            else:
                self._always[model] = reply

    def limit(self, model: str, *, rpm: int | None = None, rpd: int | None = None, tpm: int | None = None) -> None:
        with self._lock:
            self._limits[model] = _Limits(rpm, rpd, tpm)

    def count(self, model: str | None = None, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests
                       if (model is None or r.model == model) and (path is None or r.path == path))

    @property
    def held(self) -> int:
        """How many requests a `hang` reply or a closed `gate` holds unanswered right now (whether
        or not their clients are still there)."""
        with self._lock:
            return self._held

    def _hold(self, reply: Reply) -> bool:
        """Wait while `reply` holds its request; True if it may then be answered."""
        with self._lock:
            self._held += 1
        try:
            if reply.hang or reply.gate is None:
                self._release.wait(300)
                return False
            while not self._release.is_set():
                if reply.gate.wait(0.05):
                    return True
            return False
        finally:
            with self._lock:
                self._held -= 1

    def models_called(self) -> list[str | None]:
        with self._lock:
            return [r.model for r in self.requests]

    # -- answering -------------------------------------------------------------------------

    def _next_reply(self, model: str | None) -> Reply | None:
        with self._lock:
            queue = self._scripts.get(model or "")
            if queue:
                return queue.popleft()
            return self._always.get(model or "")

    def _random_fault(self, style: str) -> Reply | None:
        if self.fault_rate <= 0 or self.rng.random() >= self.fault_rate:
            return None
        pick = self.rng.random()
        if pick < 0.4:
            return Reply(status=503, body={"error": {"message": "Service Unavailable", "type": "server_error"}},
                         headers={"retry-after": "1"})
        if pick < 0.7:
            return Reply(status=500, body={"error": {"message": "Internal Server Error", "type": "server_error"}})
        if pick < 0.9:
            return Reply(content="I'm sorry, here is some prose instead of the JSON object you asked for.")
        return Reply(status=498 if style == "groq" else 503,
                     body={"error": {"message": "capacity exceeded", "type": "server_error", "code": "over_capacity"}})

    def respond(self, path: str, payload: dict[str, Any]) -> tuple[Reply, dict[str, str], dict[str, Any] | None]:
        """The reply for one request: (reply, extra headers, completion body or None)."""
        style = "groq" if path.startswith("/openai/") else "cerebras"
        model = payload.get("model") if isinstance(payload.get("model"), str) else None
        with self._lock:
            self.requests.append(Recorded(path, model, payload, time.monotonic()))
        reply = self._next_reply(model)
        prompt = "\n".join(str(m.get("content", "")) for m in payload.get("messages", []) if isinstance(m, dict))
        prompt_tokens = max(1, len(prompt) // 4)
        budget = int(payload.get("max_completion_tokens") or payload.get("max_tokens") or 1024)
        extra: dict[str, str] = {}
        limits = self._limits.get(model or "")
        if limits is not None:
            now = time.monotonic()
            with self._lock:
                wait = limits.admit(prompt_tokens + budget if style == "cerebras" else prompt_tokens + min(budget, 600), now)
                extra = limits.headers(style, now)
            if wait > 0 and reply is None:
                extra["retry-after"] = str(max(1, int(wait + 0.999)))
                message = "Requests per minute limit exceeded - too many requests sent."
                reply = (groq_error(429, f"Rate limit reached for model `{model}` on requests per minute (RPM). "
                                         f"Please try again in {wait:.3f}s.", "rate_limit_exceeded", "requests")
                         if style == "groq" else
                         cerebras_error(429, message, "request_quota_exceeded", "too_many_requests_error"))
        if reply is None:
            reply = self._random_fault(style) or Reply()
        with self._lock:
            self.statuses[reply.status] += 1
        if reply.status != 200 or reply.body is not None or reply.hang or reply.drop:
            return reply, extra, None
        content = reply.content
        if content is None:
            content = json.dumps(make_sample(prompt, self.rng))
        completion_tokens = max(1, len(content) // 4)
        body = {
            "id": f"chatcmpl-{self.rng.getrandbits(48):012x}", "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
        if self.simulated:
            body["system_fingerprint"] = "simulated"
        return reply, extra, body

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in separate writes: without this, Nagle's algorithm and
                # the client's delayed ACK add ~40 ms to every response on loopback.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _send(self, status: int, body: bytes, headers: dict[str, str], content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path in MODELS_PATHS:
                    models = sorted({r.model for r in server.requests if r.model})
                    body = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in models]})
                    self._send(200, body.encode(), {}, "application/json")
                else:
                    self._send(404, b'{"error": {"message": "not found"}}', {}, "application/json")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.path not in (GROQ_PATH, CEREBRAS_PATH):
                    self._send(404, b'{"error": {"message": "Unknown request URL"}}', {}, "application/json")
                    return
                try:
                    payload = json.loads(raw or b"{}")
                except ValueError:
                    payload = {}
                reply, extra, completion = server.respond(self.path, payload if isinstance(payload, dict) else {})
                delay = reply.delay + (server.latency() if callable(server.latency) else server.latency)
                if (reply.hang or reply.gate is not None) and not server._hold(reply):
                    return
                if delay > 0:
                    time.sleep(delay)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if completion is not None:
                    body = json.dumps(completion).encode()
                elif isinstance(reply.body, (dict, list)):
                    body = json.dumps(reply.body).encode()
                else:
                    body = str(reply.body if reply.body is not None else "").encode()
                try:
                    self._send(reply.status, body, {**extra, **reply.headers}, reply.content_type)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


def refused_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
