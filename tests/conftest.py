"""Shared fixtures: a local fake provider server per test and engines pointed at it.

Storage runs on the backend `TEST_BACKEND` names (`tests.backends`): SQLite files by default,
PostgreSQL with `TEST_BACKEND=postgres` (a database for the session, fresh schemas per test).
`make_app`, `env` and `make_store` follow it; tests of the SQLite file itself are marked
`sqlite_only` and skipped on PostgreSQL.
"""
from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from config.catalog import find_topic
from generation.engine import GenerationEngine, GenerationRequest
from config.providers import AppConfig, load_config
from simulator.server import FakeProviderServer
from tests import backends
from tests.hub_standin import HubStandIn

GROQ_KEY = "gsk_test-not-a-real-key-0000000000"
CEREBRAS_KEY = "csk-test-not-a-real-key-0000000000"

# Fast settings for tests: short timeouts and cooldowns, small model lists.
FAST_ENGINE: dict[str, Any] = {
    "max_attempts": 8,
    "sample_deadline_seconds": 20,
    "backoff": {"base_seconds": 0.05, "max_seconds": 0.2},
    "cooldowns": {"rate_limit": 5, "quota_exhausted": 60, "model_unavailable": 5, "model_gone": 60,
                  "timeout": 5, "connection_error": 5, "server_error": 5, "bad_request": 5,
                  "invalid_output": 5, "unknown": 5},
}
GROQ_MODELS = [{"id": "g-large", "limits": {}}, {"id": "g-small", "limits": {}}]
CEREBRAS_MODELS = [{"id": "c-large", "limits": {}}, {"id": "c-small", "limits": {}}]


def fast_overrides(**engine: Any) -> dict[str, Any]:
    return {
        "engine": {**FAST_ENGINE, **engine},
        "providers": {
            "groq": {"timeouts": {"connect": 2, "read": 10}, "models": GROQ_MODELS},
            "cerebras": {"timeouts": {"connect": 2, "read": 10}, "models": CEREBRAS_MODELS},
        },
    }


class ManualClock:
    """A monotonic clock tests move by hand."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: tests the SQLite file itself; skipped with TEST_BACKEND=postgres")
    config.addinivalue_line("markers", "postgres_only: tests PostgreSQL mode itself; runs with TEST_BACKEND=postgres")
    config.addinivalue_line("markers", "both_backends: uses no storage fixture but runs on both passes "
                                       "(server processes that read DATABASE_URL from the environment)")


def pytest_report_header(config: pytest.Config) -> str:
    return f"storage backend: {'postgresql' if backends.POSTGRES else 'sqlite'} (TEST_BACKEND)"


# Fixtures that put a test's storage on TEST_BACKEND's backend. A test using none of them (and not
# marked `both_backends`: server processes reading DATABASE_URL from the environment) runs the same
# code on either pass, so the PostgreSQL pass skips it rather than run it twice.
BACKEND_FIXTURES = frozenset({"make_store", "make_app", "client", "env", "databases", "postgres_database",
                              "postgres_url", "shared_pool"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if backends.POSTGRES:
        skip, marker = pytest.mark.skip(reason="a test of the SQLite file itself (TEST_BACKEND=postgres)"), "sqlite_only"
        same = pytest.mark.skip(reason="uses no storage: run by the SQLite pass, the same code on either backend")
    else:
        skip, marker = pytest.mark.skip(reason="PostgreSQL mode: runs with TEST_BACKEND=postgres"), "postgres_only"
    for item in items:
        if marker in item.keywords:
            item.add_marker(skip)
        elif backends.POSTGRES and "postgres_only" not in item.keywords and "both_backends" not in item.keywords \
                and not BACKEND_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(same)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[backends.TestDatabase]:
    """The session's PostgreSQL database (created here, dropped at the end)."""
    reason = backends.unreachable_reason()
    if reason:
        pytest.exit(f"TEST_BACKEND=postgres but {reason}", returncode=3)
    database = backends.TestDatabase()
    yield database
    database.drop()


@pytest.fixture
def databases(request: pytest.FixtureRequest) -> Iterator[Callable[[Any], str | None]]:
    """`databases(key)`: this test's DATABASE_URL for a data directory or store name (a fresh
    PostgreSQL schema per key, dropped after the test); None on SQLite."""
    if not backends.POSTGRES:
        yield lambda key: None
        return
    database: backends.TestDatabase = request.getfixturevalue("postgres_database")
    made: dict[str, tuple[str, str]] = {}

    def url_for(key: Any) -> str:
        if str(key) not in made:
            made[str(key)] = database.new_schema()
        return made[str(key)][1]
    yield url_for
    for schema, _ in made.values():
        database.drop_schema(schema)


@pytest.fixture(autouse=True)
def _database_for_processes(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """With TEST_BACKEND=postgres, server processes a test starts (they read the environment) use
    the schema of the test's default data directory, the one `env` and `make_app` use."""
    if backends.POSTGRES:
        url = request.getfixturevalue("databases")(tmp_path / "data")
        request.getfixturevalue("monkeypatch").setenv("DATABASE_URL", url)


@pytest.fixture
def make_store(tmp_path: Path, databases: Callable[[Any], str | None]) -> Iterator[Callable[..., Any]]:
    """`make_store(name)`: a store on this test's backend (a SQLite file `tmp_path/name`, or a
    fresh PostgreSQL schema per name; the same name opens the same data again). Closed after the test."""
    from storage.store import Store

    stores: list[Store] = []

    def build(name: str | Path = "dataset.sqlite3") -> Store:
        path = name if isinstance(name, Path) else tmp_path / name
        url = databases(f"store:{path}")
        if url is None:
            store = Store(path)
        else:
            from storage.postgres import PostgresDatabase

            store = Store(PostgresDatabase(url))
        stores.append(store)
        return store
    yield build
    for store in stores:
        store.close()


@pytest.fixture
def fake() -> Iterator[FakeProviderServer]:
    with FakeProviderServer(seed=7) as server:
        yield server


@pytest.fixture
def hub() -> Iterator[HubStandIn]:
    with HubStandIn() as standin:
        yield standin


@pytest.fixture
def env(fake: FakeProviderServer, hub: HubStandIn, tmp_path: Path,
        databases: Callable[[Any], str | None]) -> dict[str, str]:
    """Every address a test app could reach is local: the fake providers and the Hub stand-in (and,
    with TEST_BACKEND=postgres, DATABASE_URL: the default data directory's schema)."""
    database = databases(tmp_path / "data")
    return {"GROQ_API_KEY": GROQ_KEY, "CEREBRAS_API_KEY": CEREBRAS_KEY,
            "GROQ_BASE_URL": fake.url, "CEREBRAS_BASE_URL": fake.url, "HF_ENDPOINT": hub.url,
            **({"DATABASE_URL": database} if database else {})}


@pytest.fixture
def make_config() -> Callable[..., AppConfig]:
    def build(overrides: dict[str, Any] | None = None, **engine: Any) -> AppConfig:
        merged = fast_overrides(**engine)
        for key, value in (overrides or {}).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = _deep_merge(merged[key], value)
            else:
                merged[key] = value
        return load_config(overrides=merged)
    return build


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture
def make_engine(env: dict[str, str], make_config: Callable[..., AppConfig]) -> Callable[..., GenerationEngine]:
    def build(overrides: dict[str, Any] | None = None, *, env_overrides: dict[str, str] | None = None,
              clock: Callable[[], float] | None = None, **engine: Any) -> GenerationEngine:
        config = make_config(overrides, **engine)
        kwargs: dict[str, Any] = {"rng": random.Random(3)}
        if clock is not None:
            kwargs["clock"] = clock
        return GenerationEngine(config, {**env, **(env_overrides or {})}, **kwargs)
    return build


def request(provider: str | None = None, model: str | None = None, *, topic: str = "Tort Law - Nuisance",
            difficulty: str = "intermediate", sample_type: str = "case_analysis") -> GenerationRequest:
    found = find_topic(topic)
    assert found is not None
    return GenerationRequest(found, difficulty, sample_type, provider, model)


@pytest.fixture
def make_app(tmp_path, env, make_config, databases):
    """A fresh app on a temporary data directory, its providers pointed at the fake server (and
    its store on the test backend: one PostgreSQL schema per data directory)."""
    from api_server import create_app
    from config.settings import Settings

    apps = []

    def build(overrides: dict[str, Any] | None = None, *, env_overrides: dict[str, str] | None = None,
              start_batches: bool = True, data_dir=None, **settings: Any):
        merged_env = {**env, **(env_overrides or {})}
        database = databases(data_dir or tmp_path / "data")
        if database and "DATABASE_URL" not in (env_overrides or {}):
            merged_env["DATABASE_URL"] = database
        config = make_config(overrides)
        app = create_app(Settings.from_env(merged_env, data_dir=data_dir or tmp_path / "data", **settings), config)
        app.extensions["services"].start(resume_batches=start_batches)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["services"].close(timeout=5)


@pytest.fixture
def client(make_app):
    return make_app().test_client()


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll an observable condition until it holds; fail the test if it never does."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
