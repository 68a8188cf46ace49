"""PostgreSQL mode itself (TEST_BACKEND=postgres): start-up failures in one line without the
password, the recorded schema version and its migration by servers starting together, the health
report.
The rest of the suite runs on PostgreSQL as well; these are what SQLite has no counterpart for."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading

import pytest

from storage.errors import DatabaseUnavailable, SchemaTooNew
from storage.postgres import PostgresDatabase, redact_url
from storage.postgres.schema import LATEST, MIGRATIONS
from storage.store import Store
from tests import backends
from tests.conftest import CEREBRAS_KEY, GROQ_KEY
from tests.test_process import ROOT, free_port
from tests.test_store import record

pytestmark = pytest.mark.postgres_only

PASSWORD = "pw-" + secrets.token_hex(6)


def with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1)


def test_redacted_urls_keep_everything_but_the_password():
    assert redact_url("postgresql://u:secret@h:5432/db?sslmode=require&password=x") == \
        "postgresql://u@h:5432/db?sslmode=require"
    assert redact_url("postgresql://h/db") == "postgresql://h/db"


@pytest.mark.parametrize("target, words", [
    ("127.0.0.1:1/postgres", "cannot connect"),                                    # nothing listens there
    ("127.0.0.1:5432/uklaw_missing_" + secrets.token_hex(3), "does not exist"),    # no such database
])
def test_a_bad_database_url_is_one_line_naming_the_url_without_its_password(target, words):
    url = f"postgresql://postgres:{PASSWORD}@{target}"
    with pytest.raises(DatabaseUnavailable) as caught:
        PostgresDatabase(url)
    message = str(caught.value)
    assert "\n" not in message and words in message
    assert message.startswith(f"postgresql://postgres@{target}:") and PASSWORD not in message


def test_an_unknown_user_is_named_with_what_to_do():
    url = f"postgresql://uklaw_nobody:{PASSWORD}@127.0.0.1:5432/postgres"
    with pytest.raises(DatabaseUnavailable) as caught:
        PostgresDatabase(url)
    message = str(caught.value)
    assert 'role "uklaw_nobody" does not exist' in message and "create the user or fix its name" in message
    assert message.startswith("postgresql://uklaw_nobody@127.0.0.1:5432/postgres:") and PASSWORD not in message


def test_missing_privileges_are_named_at_start_up(postgres_database, databases):
    url = databases("locked")
    role = f"uklaw_nopriv_{secrets.token_hex(3)}"
    admin = postgres_database.connection
    admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            PostgresDatabase(url.replace("postgresql://postgres@", f"postgresql://{role}:{PASSWORD}@", 1))
        message = str(caught.value)
        assert f"user '{role}' lacks a privilege" in message and "grant" in message
        assert "\n" not in message and PASSWORD not in message
    finally:
        admin.execute(f'REVOKE ALL ON DATABASE "{postgres_database.name}" FROM "{role}"')
        admin.execute(f'DROP ROLE "{role}"')


def test_the_server_process_exits_2_with_one_line_and_no_password(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path / "data"), "PORT": str(free_port()),
           "HOST": "127.0.0.1", "GROQ_API_KEY": GROQ_KEY, "CEREBRAS_API_KEY": CEREBRAS_KEY,
           "DATABASE_URL": f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/postgres"}
    result = subprocess.run([sys.executable, "-m", "api_server"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("database error: postgresql://postgres@127.0.0.1:1/postgres:")
    assert PASSWORD not in result.stderr + result.stdout


def test_a_database_migrated_by_a_newer_server_is_refused(databases):
    url = databases("newer")
    Store(PostgresDatabase(url)).close()
    database = PostgresDatabase(url)
    with database.transaction() as session:
        session.execute("INSERT INTO schema_migrations VALUES (?, 'from the future', '2999-01-01')", (LATEST + 1,))
    database.close()
    with pytest.raises(SchemaTooNew) as caught:
        PostgresDatabase(with_password(url))
    message = str(caught.value)
    assert f"version {LATEST + 1}" in message and "DATABASE_URL" in message and PASSWORD not in message


def test_servers_starting_together_migrate_once(databases):
    url = databases("together")
    opened: list[PostgresDatabase] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        opened.append(PostgresDatabase(url))
    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(opened) == 4 and {d.schema_version for d in opened} == {LATEST}
    with opened[0].reading() as session:
        versions = [tuple(r) for r in session.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [(m.version,) for m in MIGRATIONS]
    for database in opened:
        database.close()


def test_health_reports_the_backend_and_the_url_without_password(make_app, databases, tmp_path):
    url = with_password(databases(tmp_path / "data"))
    app = make_app(env_overrides={"DATABASE_URL": url})
    body = app.test_client().get("/api/health").get_json()
    assert body["store"]["backend"] == "postgresql" and body["store"]["writable"] is True
    assert body["store"]["database_url"] == redact_url(url) and PASSWORD not in str(body)


@pytest.mark.parametrize("extra, idle", [("", 10), ("&keepalives_idle=60", 60)])
def test_pooled_connections_find_a_silently_dropped_peer(databases, tmp_path, extra, idle):
    """Every connection's socket has keepalives and a TCP user timeout (a dead network fails a
    query in about 30 s, not the kernel's 15 minutes); a URL's own setting wins."""
    import socket

    url = databases(tmp_path) + extra
    database = PostgresDatabase(url)
    try:
        for pool in (database.pool, database.shared_state_pool()):
            with pool.connection() as connection:
                sock = socket.socket(fileno=os.dup(connection.fileno()))
                try:
                    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == idle
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30000
                finally:
                    sock.close()
    finally:
        database.close()
    assert database.describe()["database_url"] == redact_url(url)   # what is shown stays the URL given


def test_a_long_write_in_another_database_does_not_hold_the_change_feed_back(make_store, postgres_database):
    """Other servers' writes reach this one while a transaction with an xid stays open in another
    database of the same server; one open in this database holds the feed (its rows could still
    commit below the horizon), and they arrive when it ends."""
    import psycopg

    from tests.conftest import wait_for

    writer, reader = make_store("feed"), make_store("feed")
    seen: list[str] = []
    reader.on_change(lambda change: seen.extend(r["id"] for r in change.records))
    other = f"{postgres_database.name}_other"
    with psycopg.connect(backends.ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{other}"')
    try:
        with psycopg.connect(backends.with_database(backends.ADMIN_URL, other)) as elsewhere:
            elsewhere.execute("SELECT pg_current_xact_id()")       # a write transaction, left open
            writer.add(record("while-elsewhere"))
            wait_for(lambda: reader._feed.poll() or "while-elsewhere" in seen, timeout=10)
            with psycopg.connect(postgres_database.url) as here:
                here.execute("SELECT pg_current_xact_id()")         # one in this database
                writer.add(record("while-here"))
                for _ in range(3):
                    reader._feed.poll()
                assert "while-here" not in seen
            wait_for(lambda: reader._feed.poll() or "while-here" in seen, timeout=10)
    finally:
        with psycopg.connect(backends.ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')


def test_the_test_backend_is_postgresql(make_store):
    assert backends.POSTGRES and make_store().describe()["backend"] == "postgresql"


def test_connections_the_server_dropped_are_replaced_before_use(make_store, postgres_database):
    store = make_store("dropped")
    store.add_many([record(f"s{n}") for n in range(3)])
    killed = postgres_database.connection.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid != pg_backend_pid()").fetchone()[0]
    assert killed >= 1                       # the pool's idle connections are gone
    assert store.count() == 3 and store.get("s1")["id"] == "s1"
    store.add(record("after"))
    assert store.count() == 4


def test_another_servers_writes_reach_this_servers_statistics_and_duplicate_index(make_store):
    """Two stores on one database, as two servers: what the first writes (add, edit, delete)
    reaches the second's statistics frame and duplicate index through the change feed."""
    from dataset.stats import StatsFrame
    from quality.service import QualityService
    from tests.conftest import wait_for

    writer, reader = make_store("feed"), make_store("feed")
    frame, quality = StatsFrame(reader), QualityService(reader)
    quality.build()
    assert frame.frame().height == 0
    writer.add_many([record(f"s{n}") for n in range(3)])
    wait_for(lambda: frame.frame().height == 3)
    writer.update("s1", {"difficulty": "expert"})
    writer.delete("s2")
    wait_for(lambda: sorted(frame.frame()["id"].to_list()) == ["s0", "s1"]
             and frame.frame().filter(frame.frame()["id"] == "s1")["difficulty"].to_list() == ["expert"])
    assessed, report = quality.assess(record("mine", question="question S0"))
    assert "exact_duplicate" in report.codes and assessed["duplicate_of"] == "s0"
    reader.add(record("own"))                 # its own writes are not delivered back to it
    assert reader._feed.poll() == 0


def _answer_lost(store, *, committed: bool):
    """A `transaction` for `store.database` whose write fails with the connection: after its commit
    (the answer is lost, the row stored) or before it (nothing stored)."""
    from contextlib import contextmanager

    from storage.errors import WriteFailed

    real = store.database.transaction

    @contextmanager
    def transaction():
        if committed:
            with real() as db:
                yield db
        raise WriteFailed(store.path, "server closed the connection unexpectedly", "retried")
    return transaction


def test_a_write_whose_answer_was_lost_reaches_this_servers_statistics_and_duplicate_index(make_store, monkeypatch,
                                                                                          caplog):
    """The change feed skips this server's own writes, which its listeners hear of as they are
    made; a write that reported a failure but was committed reaches them after the feed's polls,
    and one that was never made does not."""
    from dataset.stats import StatsFrame
    from quality.service import QualityService
    from storage.errors import WriteFailed
    from tests.conftest import wait_for

    store = make_store("doubt")
    frame, quality = StatsFrame(store), QualityService(store)
    quality.build()
    assert frame.frame().height == 0
    real = store.database.transaction
    for sample_id, committed in (("made", True), ("never", False)):
        monkeypatch.setattr(store.database, "transaction", _answer_lost(store, committed=committed))
        with pytest.raises(WriteFailed):
            store.add(record(sample_id))
        monkeypatch.setattr(store.database, "transaction", real)
    assert store.exists(["made", "never"]) == {"made"} and frame.frame().height == 0
    wait_for(lambda: store._feed.poll() is not None and frame.frame()["id"].to_list() == ["made"], timeout=10)
    wait_for(lambda: not store._in_doubt, timeout=10)
    assert frame.frame()["id"].to_list() == ["made"]
    _, report = quality.assess(record("again", question=record("made")["question"]))
    assert "exact_duplicate" in report.codes
    assert "1 sample(s) whose write reported a failure were stored after all" in caplog.text

    def difficulties():
        return dict(zip(frame.frame()["id"].to_list(), frame.frame()["difficulty"].to_list()))

    monkeypatch.setattr(store.database, "transaction", _answer_lost(store, committed=True))
    with pytest.raises(WriteFailed):   # an edit made, its answer lost
        store.update("made", {"difficulty": "expert"})
    monkeypatch.setattr(store.database, "transaction", real)
    assert difficulties() == {"made": "basic"}
    wait_for(lambda: store._feed.poll() is not None and difficulties() == {"made": "expert"}, timeout=10)
    monkeypatch.setattr(store.database, "transaction", _answer_lost(store, committed=True))
    with pytest.raises(WriteFailed):   # a delete made, its answer lost
        store.delete("made")
    monkeypatch.setattr(store.database, "transaction", real)
    wait_for(lambda: store._feed.poll() is not None and frame.frame().height == 0, timeout=10)
    assert "exact_duplicate" not in quality.assess(record("again", question=record("made")["question"]))[1].codes


def test_a_write_in_doubt_is_settled_only_once_its_transaction_has_ended(make_store):
    """A commit still on its way when the write failed (the server had not finished it) is not
    taken for a write never made: the row is read once every transaction begun before the failure
    has ended."""
    from tests.conftest import wait_for

    store = make_store("fence")
    seen: list[str] = []
    store.on_change(lambda change: seen.extend(r["id"] for r in change.records))
    store.add(record("s0"))
    copied = "question_key, " + ", ".join(c for c in ("answer", "reasoning", "case_citation", "topic", "difficulty",
                                                       "created_at", "updated_at"))
    with store.database.pool.connection() as connection, connection.transaction():
        # this server's write (its origin), its commit not made yet
        connection.execute(f"INSERT INTO samples (id, question, {copied}) SELECT 'late', 'Question late?', "
                           f"decode(md5('late'), 'hex'), {copied.split(', ', 1)[1]} FROM samples WHERE id = 's0'")
        store._doubt(["late"], "add")
        for _ in range(3):
            store._feed.poll()
        assert "late" not in seen and "late" in store._in_doubt
    wait_for(lambda: store._feed.poll() is not None and "late" in seen, timeout=10)


def test_a_write_that_fails_again_while_in_doubt_waits_for_a_later_fence(make_store):
    """An id already in doubt whose write fails again: the later write's commit may still be on
    its way after the first fence has passed, so it is read only once a later fence has."""
    from tests.conftest import wait_for

    store = make_store("refence")
    seen: list[str] = []
    store.on_change(lambda change: seen.extend(r["id"] for r in change.records))
    store.add(record("s0"))
    copied = "answer, reasoning, case_citation, topic, difficulty, created_at, updated_at"
    with store.database.pool.connection() as blocker:
        blocker.execute("BEGIN")
        blocker.execute("SELECT pg_current_xact_id()")   # holds the horizon: nothing is settled meanwhile
        store._doubt(["late"], "add")
        store._feed.poll()
        assert store._in_doubt["late"][1] is not None   # fenced
        with store.database.pool.connection() as connection, connection.transaction():
            connection.execute(f"INSERT INTO samples (id, question, question_key, {copied}) SELECT 'late', "
                               f"'Question late?', decode(md5('late'), 'hex'), {copied} FROM samples WHERE id = 's0'")
            store._doubt(["late"], "add")   # its write failed again: this commit is on its way
            blocker.execute("COMMIT")       # the horizon moves past the first fence
            for _ in range(3):
                store._feed.poll()
            assert "late" not in seen and "late" in store._in_doubt
    wait_for(lambda: store._feed.poll() is not None and "late" in seen, timeout=10)


def test_writes_put_in_doubt_by_many_threads_while_the_feed_settles_them(make_store):
    """Writer threads put ids in doubt while the change feed fences and settles them: the store's
    lock keeps the map whole for each side (without it, settling iterates a map that writers are
    growing, and raises), and every id is settled in the end."""
    from tests.conftest import wait_for

    store = make_store("doubt_race")
    store._doubt([f"old{number}" for number in range(20_000)], "add")   # a long map to iterate
    failures: list[BaseException] = []
    written = {"a": 0, "b": 0}
    writing, done = threading.Barrier(3), threading.Event()

    def writer(name: str) -> None:
        try:
            writing.wait()
            while not done.is_set():
                store._doubt([f"{name}{written[name]}"], "add")
                written[name] += 1
        except BaseException as exc:   # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    writers = [threading.Thread(target=writer, args=(name,)) for name in written]
    interval = sys.getswitchinterval()
    with store._feed._polling:   # the feed's thread waits meanwhile: this test settles in its place
        sys.setswitchinterval(1e-6)   # threads take turns often: a settle is interrupted mid-iteration
        try:
            for thread in writers:
                thread.start()
            writing.wait()
            for _ in range(30):
                try:
                    store._settle_doubts(0)   # fences what is unfenced; nothing is ready below horizon 0
                except BaseException as exc:   # noqa: BLE001
                    failures.append(exc)
                    break
        finally:
            done.set()
            for thread in writers:
                thread.join()
            sys.setswitchinterval(interval)
        assert failures == []
        assert len(store._in_doubt) == 20_000 + sum(written.values())
    wait_for(lambda: store._feed.poll() is not None and not store._in_doubt, timeout=30)
