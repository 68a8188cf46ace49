"""Cooldowns and disabled keys shared by the servers on one PostgreSQL database."""
from __future__ import annotations

from contextlib import contextmanager

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from errors import Category, Failure, Scope
from fallback.health import HealthBoard
from simulator.server import Reply, groq_error
from storage.coordination import transactions
from storage.shared_health import SharedHealthTable
from tests.conftest import ManualClock, request
from tests.postgres import postgres_url, shared_pool  # noqa: F401 - fixtures

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def table(shared_pool: ConnectionPool) -> SharedHealthTable:
    return SharedHealthTable(transactions(shared_pool))


def failure(category: Category = Category.RATE_LIMIT) -> Failure:
    return Failure(category, Scope.MODEL, None, "slow down")


def board(table: SharedHealthTable, clock=None) -> HealthBoard:
    made = HealthBoard(clock or ManualClock())
    made.share(table, refresh_seconds=0)
    return made


def test_a_cooldown_on_one_server_holds_on_the_others(table):
    a, b = board(table), board(table)
    a.cool("groq", "g-large", 60, failure(), switched=True)
    blocked = b.blocked("groq", "g-large", "fp")
    assert blocked is not None and blocked.category == "rate_limit" and blocked.scope == "model"
    assert 55 < blocked.until - 1000.0 <= 60                 # in b's own clock
    assert b.blocked("groq", "g-small", "fp") is None
    a.cool("groq", None, 30, failure(Category.SERVER_ERROR), switched=True)
    assert b.blocked("groq", "g-small", "fp").scope == "provider"


def test_a_shorter_cooldown_never_shortens_a_longer_one(table):
    a, b, c = board(table), board(table), board(table)
    a.cool("groq", "g-large", 120, failure(), switched=True)
    b.cool("groq", "g-large", 1, failure(Category.TIMEOUT), switched=True)
    blocked = c.blocked("groq", "g-large", "fp")
    assert blocked.category == "rate_limit" and blocked.until - 1000.0 > 100


def test_a_rejected_key_disables_the_provider_for_servers_with_that_key(table):
    a, b = board(table), board(table)
    a.disable("groq", "same-key", Failure(Category.AUTHENTICATION, Scope.PROVIDER, None, "invalid key"))
    assert b.blocked("groq", "g-large", "same-key").permanent
    assert b.blocked("groq", "g-large", "another-key") is None   # a server with another key goes on


def test_without_the_database_the_board_goes_on_alone(caplog):
    @contextmanager
    def down():
        raise psycopg.OperationalError("connection refused")
        yield

    alone = board(SharedHealthTable(down))
    alone.cool("groq", "g-large", 60, failure(), switched=True)
    assert alone.blocked("groq", "g-large", "fp") is not None
    assert alone.blocked("groq", "g-small", "fp") is None
    assert sum("shared engine state" in r.message for r in caplog.records) == 1   # said once


def test_engines_skip_a_model_another_engine_saw_rate_limited(table, make_engine, fake):
    first, second = make_engine(), make_engine()
    for engine in (first, second):
        engine.health.share(table, refresh_seconds=0)
    fake.script("g-large", Reply(429, groq_error(429, "Rate limit reached. Please try again in 30s.",
                                                 "rate_limit_exceeded", "requests")))
    assert first.generate(request("groq", "g-large")).model == "g-small"
    calls = fake.count("g-large")
    assert second.generate(request("groq", "g-large")).model == "g-small"
    assert fake.count("g-large") == calls                    # the second engine never called it
