"""The schema: numbered migrations applied once, pre-versioning files adopted with their rows,
newer files refused, and no SQL anywhere outside storage/."""
from __future__ import annotations

import ast
import json
import sqlite3
import threading
from pathlib import Path

import pytest

from state import BatchState
from storage import schema
from storage.batches import BatchRepository
from storage.errors import DuplicateQuestion, SchemaError, SchemaTooNew
from storage.schema import LATEST, MIGRATIONS, Migration
from storage.store import Store

pytestmark = pytest.mark.sqlite_only   # the SQLite file itself; PostgreSQL's own tests: test_postgres.py

PROJECT = Path(__file__).resolve().parents[1]

# The layout the last release before versioning created, as it then was on a file made before
# `duplicate_of` existed (so it still lacks that column).
OLD_DDL = """
CREATE TABLE samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    reasoning TEXT NOT NULL,
    case_citation TEXT NOT NULL,
    topic TEXT NOT NULL,
    difficulty TEXT NOT NULL,
    sample_type TEXT,
    provider TEXT,
    model TEXT,
    batch_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency REAL,
    attempts INTEGER,
    simulated INTEGER NOT NULL DEFAULT 0,
    quality_score REAL,
    quality_flags TEXT,
    extra TEXT
);
CREATE INDEX samples_batch ON samples(batch_id);
CREATE INDEX samples_topic ON samples(topic);
CREATE INDEX samples_difficulty ON samples(difficulty);
"""
OLD_BATCH_DDL = """
CREATE TABLE batches (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    completed_at TEXT,
    updated_at TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX batches_status ON batches(status);
CREATE TABLE batch_attempts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL,
    slot INTEGER NOT NULL,
    provider TEXT,
    model TEXT,
    outcome TEXT NOT NULL,
    category TEXT,
    latency REAL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    message TEXT,
    sample_id TEXT,
    at TEXT NOT NULL
);
CREATE INDEX batch_attempts_batch ON batch_attempts(batch_id);
"""
OLD_SAMPLE = ("INSERT INTO samples (id, question, answer, reasoning, case_citation, topic, difficulty, sample_type, "
              "provider, model, batch_id, created_at, updated_at, prompt_tokens, simulated, quality_score, "
              "quality_flags, extra) VALUES (?, ?, 'Answer.', 'Step 1: x', 'Donoghue v Stevenson [1932] AC 562', "
              "'Tort Law - Nuisance', 'basic', 'qa', 'groq', 'g-large', 'batch_old', "
              "'2024-01-01T00:00:00+00:00', '2024-01-01T00:00:00+00:00', 12, 0, 0.9, '[\"short_answer\"]', ?)")


def make_old_database(path: Path, *, with_batches: bool = True, samples: int = 3) -> None:
    db = sqlite3.connect(path)
    db.executescript(OLD_DDL + (OLD_BATCH_DDL if with_batches else ""))
    for i in range(samples):
        db.execute(OLD_SAMPLE, (f"old{i}", f"Old question {i}?", '{"note": "kept"}' if i == 0 else None))
    if with_batches:
        state = BatchState(batch_id="batch_old", target_count=3, start_count=0, total=3, status="completed")
        db.execute("INSERT INTO batches VALUES ('batch_old', 'completed', '2024-01-01', '2024-01-02', '2024-01-02', ?)",
                   (json.dumps(state.to_dict()),))
        db.execute("INSERT INTO batch_attempts (batch_id, slot, provider, model, outcome, message, at) "
                   "VALUES ('batch_old', 0, 'groq', 'g-large', 'rejected', 'quality:short_answer', '2024-01-01')")
    db.commit()
    db.close()


def recorded(path: Path) -> list[tuple[int, str]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
    finally:
        db.close()


def columns(path: Path, table: str) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
    finally:
        db.close()


def sample(sample_id: str) -> dict:
    return {"id": sample_id, "question": f"Question {sample_id}?", "answer": "Answer.", "reasoning": "Step 1: x",
            "case_citation": "Donoghue v Stevenson [1932] AC 562", "topic": "Tort Law - Nuisance",
            "difficulty": "basic"}


# -- versions --------------------------------------------------------------------------------

def test_a_new_database_gets_the_latest_version_and_every_table(tmp_path):
    path = tmp_path / "new.sqlite3"
    store = Store(path)
    assert store.database.schema_version == LATEST
    assert [v for v, _ in recorded(path)] == [m.version for m in MIGRATIONS]
    assert "duplicate_of" in columns(path, "samples")
    assert columns(path, "batches") and columns(path, "batch_attempts")
    store.add(sample("s1"))
    repo = BatchRepository(store)
    repo.save(BatchState(batch_id="b1", target_count=1, start_count=0, total=1))
    assert repo.get("b1").batch_id == "b1" and store.get("s1")["duplicate_of"] is None
    store.close()


def test_a_pre_versioning_database_is_adopted_with_its_rows(tmp_path):
    path = tmp_path / "old.sqlite3"
    make_old_database(path)
    assert "duplicate_of" not in columns(path, "samples")

    store = Store(path)
    repo = BatchRepository(store)
    assert store.database.schema_version == LATEST
    versions = recorded(path)
    assert [v for v, _ in versions] == [m.version for m in MIGRATIONS] and "adopted" in versions[0][1]
    assert "duplicate_of" in columns(path, "samples")
    assert store.count() == 3
    old = store.get("old0")
    assert old["question"] == "Old question 0?" and old["quality_flags"] == ["short_answer"]
    assert old["note"] == "kept" and old["duplicate_of"] is None and old["prompt_tokens"] == 12
    fresh = Store(tmp_path / "fresh.sqlite3")
    assert list(old) == list(fresh.add(sample("x")) | {"note": "kept"})   # same fields, same order
    fresh.close()
    assert store.update("old1", {"duplicate_of": "old0"})["duplicate_of"] == "old0"
    assert store.get("old1")["duplicate_of"] == "old0"
    assert repo.get("batch_old").status == "completed" and repo.rejection_counts() == {"short_answer": 1}
    store.add(sample("new"))
    assert [r["id"] for r in store.list()] == ["old0", "old1", "old2", "new"]
    store.close()


def test_a_pre_versioning_database_without_batch_tables_gets_them(tmp_path):
    path = tmp_path / "older.sqlite3"
    make_old_database(path, with_batches=False)
    store = Store(path)
    repo = BatchRepository(store)
    repo.save(BatchState(batch_id="b1", target_count=4, start_count=3, total=1))
    assert repo.get("b1").target_count == 4 and store.count() == 3
    assert set(columns(path, "samples")) == set(columns(_fresh(tmp_path), "samples"))
    store.close()


def _fresh(tmp_path: Path) -> Path:
    path = tmp_path / "reference.sqlite3"
    Store(path).close()
    return path


def test_a_foreign_layout_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "foreign.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE samples (seq INTEGER PRIMARY KEY, id TEXT, body TEXT)")
    db.execute("INSERT INTO samples (id, body) VALUES ('a', 'b')")
    db.commit()
    db.close()
    with pytest.raises(SchemaError, match="samples lacks column"):
        Store(path)
    assert columns(path, "samples") == ["seq", "id", "body"]
    db = sqlite3.connect(path)
    assert {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} == {"samples"}
    db.close()


def test_migrations_are_applied_once_across_restarts(tmp_path, monkeypatch):
    path = tmp_path / "restart.sqlite3"
    make_old_database(path)
    for _ in range(3):
        store = Store(path)
        store.close()
    assert [v for v, _ in recorded(path)] == [m.version for m in MIGRATIONS]

    calls: list[int] = []

    def add_column(db: sqlite3.Connection) -> None:
        calls.append(1)
        db.execute("ALTER TABLE samples ADD COLUMN reviewer TEXT")

    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS + (Migration(LATEST + 1, "samples.reviewer", add_column),))
    monkeypatch.setattr(schema, "LATEST", LATEST + 1)
    for _ in range(3):
        store = Store(path)
        assert store.database.schema_version == LATEST + 1 and store.count() == 3
        store.close()
    assert calls == [1] and "reviewer" in columns(path, "samples")
    assert [v for v, _ in recorded(path)] == [*(m.version for m in MIGRATIONS), LATEST + 1]


def test_a_failing_migration_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "atomic.sqlite3"
    store = Store(path)
    store.add(sample("kept"))
    store.close()

    def broken(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE samples ADD COLUMN half_done TEXT")
        raise RuntimeError("migration failed half-way")

    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS + (Migration(LATEST + 1, "broken", broken),))
    monkeypatch.setattr(schema, "LATEST", LATEST + 1)
    with pytest.raises(RuntimeError, match="half-way"):
        Store(path)
    assert "half_done" not in columns(path, "samples")
    assert [v for v, _ in recorded(path)] == [m.version for m in MIGRATIONS]


def test_concurrent_openers_migrate_once(tmp_path):
    path = tmp_path / "race.sqlite3"
    make_old_database(path)
    errors: list[BaseException] = []
    stores: list[Store] = []

    def open_store() -> None:
        try:
            stores.append(Store(path))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(stores) == 6
    assert [v for v, _ in recorded(path)] == [m.version for m in MIGRATIONS]
    assert stores[0].count() == 3
    for store in stores:
        store.close()


def test_a_database_from_a_newer_server_is_refused(tmp_path):
    path = tmp_path / "future.sqlite3"
    store = Store(path)
    store.add(sample("s1"))
    store.close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_migrations VALUES (?, 'from the future', '2999-01-01')", (LATEST + 1,))
    db.commit()
    db.close()

    with pytest.raises(SchemaTooNew) as caught:
        Store(path)
    error = caught.value
    assert (error.path, error.found, error.supported) == (path, LATEST + 1, LATEST)
    message = str(error)
    assert str(path) in message and f"version {LATEST + 1}" in message and f"({LATEST})" in message
    assert "\n" not in message
    assert [v for v, _ in recorded(path)] == [*(m.version for m in MIGRATIONS), LATEST + 1]


def test_the_server_refuses_a_newer_database_with_one_line(tmp_path, monkeypatch, capsys):
    import api_server

    store = Store(tmp_path / "dataset.sqlite3")
    store.close()
    db = sqlite3.connect(tmp_path / "dataset.sqlite3")
    db.execute("INSERT INTO schema_migrations VALUES (?, 'from the future', '2999-01-01')", (LATEST + 1,))
    db.commit()
    db.close()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    assert api_server.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("database error: ") and "dataset.sqlite3" in err and "\n" not in err


# -- no SQL outside storage/ -----------------------------------------------------------------

SQL_METHODS = {"execute", "executemany", "executescript"}
DRIVERS = {"sqlite3", "psycopg", "psycopg2", "sqlalchemy"}
EXEMPT = {"storage", "tests", "bench"}


def sql_outside_storage(root: Path) -> list[str]:
    """`file:line what` for every SQL call (`.execute(`, `.executemany(`, `.executescript(`) and
    database-driver import in the project's Python files outside storage/, tests/ and bench/."""
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if parts[0] in EXEMPT or any(p.startswith(".") or p.endswith(".egg-info") for p in parts):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            what = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_METHODS:
                what = f".{node.func.attr}("
            elif isinstance(node, ast.Import):
                what = next((f"import {a.name}" for a in node.names if a.name.split(".")[0] in DRIVERS), None)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in DRIVERS:
                what = f"from {node.module} import"
            if what:
                found.append(f"{path.relative_to(root)}:{node.lineno} {what}")
    return found


def test_no_sql_runs_outside_storage():
    assert sql_outside_storage(PROJECT) == []


def test_the_sql_check_catches_a_planted_violation(tmp_path):
    for folder in ("storage", "web", "tests", "bench", ".venv"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "mod.py").write_text(
            "import sqlite3\n\ndef f(store):\n    return store.database.connection().execute('SELECT 1')\n")
    (tmp_path / "dataset.py").write_text(
        "from sqlite3 import connect\n\ndef g(db):\n    db.executemany('INSERT INTO t VALUES (?)', [(1,)])\n"
        "    db.executescript('DELETE FROM t')\n")
    assert sql_outside_storage(tmp_path) == [
        "dataset.py:1 from sqlite3 import", "dataset.py:4 .executemany(", "dataset.py:5 .executescript(",
        "web/mod.py:1 import sqlite3", "web/mod.py:4 .execute(",
    ]


def test_version_8_keys_the_stored_questions_and_keeps_exact_duplicates_an_older_version_let_in(tmp_path, caplog):
    path = tmp_path / "v6.sqlite3"
    store = Store(path)
    store.add_many([sample("a"), sample("b")])
    store.close()
    db = sqlite3.connect(path)   # back to version 7, with an exact duplicate as an older server could store
    db.executescript("DROP INDEX samples_question_key; ALTER TABLE samples DROP COLUMN question_key; "
                     "DELETE FROM schema_migrations WHERE version >= 8;")
    db.execute("INSERT INTO samples (id, question, answer, reasoning, case_citation, topic, difficulty, created_at, "
               "updated_at) VALUES ('a2', 'question A', 'x', 'y', '', 'Tort Law - Nuisance', 'basic', '2024-01-01', "
               "'2024-01-01')")
    db.commit()
    db.close()
    with caplog.at_level("WARNING", logger="storage"):
        reopened = Store(path)
    assert reopened.database.schema_version == LATEST and "1 stored sample(s) repeat" in caplog.text
    assert sorted(r["id"] for r in reopened.list()) == ["a", "a2", "b"]          # every row kept
    with pytest.raises(DuplicateQuestion):
        reopened.add(sample("b") | {"id": "b2"})                                  # keyed: refused
    reopened.update("a2", {"answer": "edited"})                                   # the kept duplicate still edits
    reopened.close()
