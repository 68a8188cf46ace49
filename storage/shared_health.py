"""Cooldowns and disabled keys every server on one PostgreSQL database sees (`fallback.health`).

Rows of `engine_cooldowns` (model '' is the whole provider) and `engine_disabled`. A cooldown is
written with one upsert that keeps the later end, so two servers cooling the same model never
shorten each other's cooldown; ends are the database's clock, and `active()` answers seconds left,
so the servers' own clocks never have to agree.
"""
from __future__ import annotations

from dataclasses import dataclass

from storage.coordination import Connect, once_more


@dataclass(frozen=True)
class SharedCooldown:
    provider: str
    model: str | None          # None: the whole provider
    seconds_left: float
    category: str | None
    reason: str | None
    message: str | None
    switched: bool


@dataclass(frozen=True)
class SharedDisabled:
    provider: str
    fingerprint: str
    category: str | None
    message: str | None


class SharedHealthTable:
    def __init__(self, connect: Connect):
        self.connect = connect

    def cool(self, provider: str, model: str | None, seconds: float, category: str | None, reason: str | None,
             message: str | None, switched: bool) -> None:
        with self.connect() as db:
            db.execute(
                "INSERT INTO engine_cooldowns AS c (provider, model, until, category, reason, message, switched) "
                "VALUES (%s, %s, clock_timestamp() + make_interval(secs => %s), %s, %s, %s, %s) "
                "ON CONFLICT (provider, model) DO UPDATE SET until = excluded.until, category = excluded.category, "
                "reason = excluded.reason, message = excluded.message, switched = excluded.switched "
                "WHERE c.until < excluded.until",
                (provider, model or "", max(0.0, seconds), category, reason, (message or "")[:500], switched))

    def disable(self, provider: str, fingerprint: str, category: str | None, message: str | None) -> None:
        with self.connect() as db:
            db.execute(
                "INSERT INTO engine_disabled (provider, fingerprint, category, message, since) "
                "VALUES (%s, %s, %s, %s, clock_timestamp()) ON CONFLICT (provider) DO UPDATE SET "
                "fingerprint = excluded.fingerprint, category = excluded.category, message = excluded.message, "
                "since = excluded.since", (provider, fingerprint, category, (message or "")[:500]))

    def active(self) -> tuple[list[SharedCooldown], list[SharedDisabled]]:
        """Cooldowns not yet over (with seconds left) and every disabled key, in one round trip."""
        return once_more(self._active)

    def _active(self) -> tuple[list[SharedCooldown], list[SharedDisabled]]:
        with self.connect() as db:
            rows = db.execute(
                "SELECT provider, model, extract(epoch FROM until - clock_timestamp()), category, reason, message, "
                "switched, NULL FROM engine_cooldowns WHERE until > clock_timestamp() "
                "UNION ALL SELECT provider, NULL, NULL, category, NULL, message, NULL, fingerprint "
                "FROM engine_disabled").fetchall()
        cooldowns = [SharedCooldown(r[0], r[1] or None, float(r[2]), r[3], r[4], r[5], bool(r[6]))
                     for r in rows if r[7] is None]
        disabled = [SharedDisabled(r[0], r[7], r[3], r[5]) for r in rows if r[7] is not None]
        return cooldowns, disabled

    def clear_expired(self) -> None:
        with self.connect() as db:
            db.execute("DELETE FROM engine_cooldowns WHERE until < clock_timestamp() - interval '1 hour'")
