"""Process-wide logging for the server: format, level, and secret redaction on every record."""
from __future__ import annotations

import logging
from typing import Iterable, Sequence

from errors import redact

LOGGERS = ("api", "batch", "waitress", "werkzeug")


class RedactSecrets(logging.Filter):
    """Removes API keys and tokens from every log record, whatever logged it.

    A record's traceback is kept, redacted: it is formatted here into `exc_text` (which every
    `logging.Formatter` prints instead of formatting `exc_info` itself), and `exc_info` is
    cleared so no handler can format the unredacted exception again."""

    _formatter = logging.Formatter()

    def __init__(self, secrets: Sequence[str]):
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self._formatter.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


def configure_logging(secrets: Iterable[str], level: int = logging.INFO) -> None:
    """Root logging for the server process, with one redaction filter on every handler."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction(secrets)


def install_redaction(secrets: Iterable[str]) -> None:
    """One redaction filter on every root handler and on each of `LOGGERS` (replacing any earlier one)."""
    remove_redaction()
    redactor = RedactSecrets(list(secrets))
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
    for name in LOGGERS:
        logging.getLogger(name).addFilter(redactor)


def remove_redaction() -> None:
    """Take every redaction filter off again (tests that installed one clean up with this)."""
    for handler in logging.getLogger().handlers:
        handler.filters = [f for f in handler.filters if not isinstance(f, RedactSecrets)]
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.filters = [f for f in logger.filters if not isinstance(f, RedactSecrets)]
