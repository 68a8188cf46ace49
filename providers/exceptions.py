"""What a provider call can raise besides the SDKs' own exceptions: a response we cannot use."""
from __future__ import annotations

from typing import Any, Mapping


class UnusableResponse(Exception):
    """A 2xx response that carries no usable completion (an error body, a bare string, no choices)."""

    def __init__(self, message: str, body: Any = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.body = body
        self.headers = dict(headers or {})


class InvalidOutput(Exception):
    """The model answered, but its text is not a valid sample. Keeps the raw text for diagnosis."""

    def __init__(self, message: str, raw_output: str = ""):
        super().__init__(message)
        self.raw_output = raw_output
