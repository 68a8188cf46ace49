"""Secret redaction in the server's logs keeps what makes a log useful: the traceback."""
from __future__ import annotations

import io
import logging
import sys
from typing import Iterator

import pytest

from web.logs import RedactSecrets

SECRET = "gsk_live-secret-in-a-traceback-0000000000"
FORMAT = "%(levelname)s %(name)s: %(message)s"


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, io.StringIO]]:
    """A private logger with the redaction filter on the logger and two handlers behind it."""
    logger = logging.getLogger("tests.logs.redaction")
    logger.propagate, logger.level = False, logging.DEBUG
    first, second = io.StringIO(), io.StringIO()
    handlers = [logging.StreamHandler(first), logging.StreamHandler(second)]
    redactor = RedactSecrets([SECRET])
    logger.addFilter(redactor)
    for handler in handlers:
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.addFilter(redactor)
        logger.addHandler(handler)
    yield logger, first, second
    logger.removeFilter(redactor)
    for handler in handlers:
        logger.removeHandler(handler)


def call_the_provider() -> None:
    try:
        raise ConnectionError(f"refused Authorization: Bearer {SECRET}")
    except ConnectionError as exc:
        raise RuntimeError(f"provider call failed with key {SECRET}") from exc


def test_a_logged_exception_keeps_its_traceback_without_the_secret(logged):
    logger, first, second = logged
    try:
        call_the_provider()
    except RuntimeError:
        logger.exception("generation failed for %s", SECRET)
    for out in (first.getvalue(), second.getvalue()):    # every handler gets the same, redacted text
        assert out.startswith("ERROR tests.logs.redaction: generation failed for [redacted]\n")
        assert "Traceback (most recent call last)" in out
        assert 'in call_the_provider\n    raise RuntimeError(f"provider call failed with key {SECRET}")' in out
        assert "The above exception was the direct cause" in out and "ConnectionError: refused" in out
        assert "RuntimeError: provider call failed with key [redacted]" in out
        assert SECRET not in out


def test_a_record_filtered_only_at_the_handler_is_redacted_too():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactSecrets([SECRET]))
    try:
        call_the_provider()
    except RuntimeError:
        record = logging.LogRecord("api", logging.ERROR, __file__, 1, "unhandled error", (), sys.exc_info())
    handler.handle(record)
    text = out.getvalue()
    assert "Traceback (most recent call last)" in text and "in call_the_provider" in text
    assert SECRET not in text and record.exc_info is None and SECRET not in record.exc_text
