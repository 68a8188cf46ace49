"""Half-open probes every server on one PostgreSQL database agrees on (`fallback.health`).

While a (provider, model) pair is unproven, one request at a time may go to it, system-wide: the
pair's row in `half_open_probes` names the claim that holds it (`owner`) and when the claim runs
out (`expires_at`, the database's clock). `claim` is ONE conditional upsert: the row is inserted,
or taken over only if its claim has expired; of servers claiming at once exactly one gets it, and
a server that died holding it blocks the pair only until its expiry. `release` deletes the row
only if this claim still holds it.
"""
from __future__ import annotations

import itertools
import uuid

from storage.coordination import Connect, once_more

STATEMENTS = (
    """CREATE TABLE half_open_probes (
        provider text NOT NULL,
        model text NOT NULL,
        owner text NOT NULL,
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (provider, model)
    )""",
)


class SharedProbes:
    def __init__(self, connect: Connect, server: str, *, seconds: float):
        """`server`: this server's id (each claim's owner is it, this instance's own tag and a
        counter); `seconds`: how long a claim lasts unreleased, at least the longest one request
        may take."""
        self.connect = connect
        self.server = f"{server}/{uuid.uuid4().hex[:8]}"
        self.seconds = seconds
        self._counter = itertools.count(1)

    def claim(self, provider: str, model: str) -> str | None:
        """The claim's owner if this server now holds the pair's probe (no one held it, or the claim
        expired), else None. Pass the owner to `release`."""
        owner = f"{self.server}#{next(self._counter)}"
        return owner if once_more(lambda: self._claim(provider, model, owner)) else None

    def _claim(self, provider: str, model: str, owner: str) -> bool:
        with self.connect() as db:
            row = db.execute(
                "INSERT INTO half_open_probes AS p (provider, model, owner, expires_at) "
                "VALUES (%s, %s, %s, clock_timestamp() + make_interval(secs => %s)) "
                "ON CONFLICT (provider, model) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
                "WHERE p.expires_at < clock_timestamp() RETURNING owner",
                (provider, model, owner, self.seconds)).fetchone()
        return row is not None

    def release(self, provider: str, model: str, owner: str) -> None:
        """End the claim `owner` (a no-op if it ran out and another claim holds the pair now)."""
        with self.connect() as db:
            db.execute("DELETE FROM half_open_probes WHERE provider = %s AND model = %s AND owner = %s",
                       (provider, model, owner))

    def holder(self, provider: str, model: str) -> str | None:
        """Who holds the pair's probe now (an expired claim counts as none)."""
        with self.connect() as db:
            row = db.execute("SELECT owner FROM half_open_probes WHERE provider = %s AND model = %s "
                             "AND expires_at >= clock_timestamp()", (provider, model)).fetchone()
        return row[0] if row else None
