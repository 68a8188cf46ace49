"""Database URLs as they may be shown: never with a password."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """The URL with its password (if any) removed, and any `password=` query parameter dropped:
    `postgresql://user:secret@host/db` -> `postgresql://user@host/db`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://(unparsable URL)"
    netloc = parts.netloc
    if "@" in netloc:
        credentials, host = netloc.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        netloc = f"{user}@{host}" if user else host
    query = "&".join(p for p in parts.query.split("&") if p and not p.lower().startswith("password="))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def password_of(url: str) -> str | None:
    """The URL's password, for scrubbing it out of driver messages."""
    try:
        parts = urlsplit(url)
        found = parts.password
    except ValueError:
        return None
    for item in parts.query.split("&"):
        if item.lower().startswith("password="):
            found = found or item.split("=", 1)[1]
    return found or None
