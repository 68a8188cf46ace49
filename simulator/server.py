"""A local HTTP server that speaks the providers' chat-completions wire formats.

`POST /openai/v1/chat/completions` answers like Groq (rate-limit headers per day for requests and
per minute for tokens, resets as durations), `POST /v1/chat/completions` like Cerebras (suffixed
headers, resets in float seconds, errors with the body at the top level). Faults are scripted per
model (`script`) or set for good (`always`): any status, headers and body, a delay, a hang past
the client's timeout, an answer held until a test opens its gate, a dropped connection, non-JSON
output. Optional per-model limits make it answer 429 like the real services. Every request is
recorded so tests can count them, and `held` says how many are held unanswered right now.

Pacing scenarios (issue 8): `shared_limit` caps a whole provider (every model of one wire format)
at N requests per window without declaring it in any header, and may be changed mid-run (halve,
recover); `limit(..., window=)` enforces a model's rpm/tpm over a window of any length, charging
Cerebras prompt + max_completion_tokens up front as the real service does; `completion_tokens`
makes answers report realistic usage (~1,800 tokens), and an answer that needs more than the
request's max_completion_tokens is cut off there (`finish_reason: length`).
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
    """Sliding-window limits for one model (requests/min, requests/day, tokens/min); `window` is
    the length of the "minute" (shortened in tests)."""

    def __init__(self, rpm: int | None = None, rpd: int | None = None, tpm: int | None = None,
                 window: float = 60.0):
        self.rpm, self.rpd, self.tpm = rpm, rpd, tpm
        self.window = window
        self.requests: deque[float] = deque()
        self.day: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()

    def _prune(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - self.window:
            self.requests.popleft()
        while self.day and self.day[0] <= now - 86400:
            self.day.popleft()
        while self.tokens and self.tokens[0][0] <= now - self.window:
            self.tokens.popleft()

    def admit(self, tokens: int, now: float) -> float:
        """0 when admitted (and counted), else seconds until it would be."""
        self._prune(now)
        waits = [0.0]
        if self.rpm is not None and len(self.requests) >= self.rpm:
            waits.append(self.requests[0] + self.window - now)
        if self.rpd is not None and len(self.day) >= self.rpd:
            waits.append(self.day[0] + 86400 - now)
        used = sum(t for _, t in self.tokens)
        if self.tpm is not None and used + tokens > self.tpm and self.tokens:
            waits.append(self.tokens[0][0] + self.window - now)
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
        tok_reset = (self.tokens[-1][0] + self.window - now) if self.tokens else 0.0
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


class _SharedLimit:
    """One provider's undeclared limit: `requests` per `window` seconds across all its models."""

    def __init__(self, requests: int, window: float):
        self.requests, self.window = requests, window
        self.admitted: deque[float] = deque()

    def admit(self, now: float) -> float:
        while self.admitted and self.admitted[0] <= now - self.window:
            self.admitted.popleft()
        if len(self.admitted) >= self.requests:
            return self.admitted[len(self.admitted) - self.requests] + self.window - now
        self.admitted.append(now)
        return 0.0


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
        self._shared: dict[str, _SharedLimit] = {}        # by wire format: "groq", "cerebras"
        # Completion tokens an answer needs (usage reports it); None: the content's length / 4.
        self.completion_tokens: int | Callable[[], int] | None = None
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

    def limit(self, model: str, *, rpm: int | None = None, rpd: int | None = None, tpm: int | None = None,
              window: float = 60.0) -> None:
        with self._lock:
            self._limits[model] = _Limits(rpm, rpd, tpm, window)

    def shared_limit(self, style: str, requests: int | None, window: float = 10.0) -> None:
        """Cap every model of one wire format ("groq" or "cerebras") together at `requests` per
        `window` seconds, declared in no header (None lifts it). Calling it again mid-run changes
        the figures and keeps the requests already counted."""
        with self._lock:
            if requests is None:
                self._shared.pop(style, None)
            elif style in self._shared:
                self._shared[style].requests, self._shared[style].window = requests, window
            else:
                self._shared[style] = _SharedLimit(requests, window)

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
        needed = self.completion_tokens() if callable(self.completion_tokens) else self.completion_tokens
        # Cerebras charges the whole budget up front; Groq what the answer will really use.
        used = min(budget, int(needed)) if needed is not None else min(budget, 600)
        extra: dict[str, str] = {}
        shared = self._shared.get(style)
        if shared is not None and reply is None:
            with self._lock:
                wait = shared.admit(time.monotonic())
            if wait > 0:
                reply = self._too_many(style, model, wait, extra)
        limits = self._limits.get(model or "")
        if limits is not None and not (shared is not None and reply is not None and reply.status == 429):
            now = time.monotonic()
            with self._lock:
                wait = limits.admit(prompt_tokens + (budget if style == "cerebras" else used), now)
                extra = limits.headers(style, now)
            if wait > 0 and reply is None:
                reply = self._too_many(style, model, wait, extra)
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
        finish_reason = "stop"
        if needed is not None:
            completion_tokens = max(1, int(needed))
            if completion_tokens > budget:   # cut off at the budget, mid-answer
                completion_tokens, finish_reason = budget, "length"
                content = content[:len(content) // 2]
        body = {
            "id": f"chatcmpl-{self.rng.getrandbits(48):012x}", "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason, "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
        if self.simulated:
            body["system_fingerprint"] = "simulated"
        return reply, extra, body

    def _too_many(self, style: str, model: str | None, wait: float, extra: dict[str, str]) -> Reply:
        """A 429 as the provider sends it: retry-after (whole seconds) and retry-after-ms."""
        extra["retry-after"] = str(max(1, int(wait + 0.999)))
        extra["retry-after-ms"] = str(max(1, int(wait * 1000 + 0.999)))
        if style == "groq":
            return groq_error(429, f"Rate limit reached for model `{model}` on requests per minute (RPM). "
                                   f"Please try again in {wait:.3f}s.", "rate_limit_exceeded", "requests")
        return cerebras_error(429, "Requests per minute limit exceeded - too many requests sent.",
                              "request_quota_exceeded", "too_many_requests_error")

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
