"""Start-up on a damaged or unwritable database: the real server process exits at once with one
line naming the file, what is wrong and what to do, and no traceback."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from storage.errors import DatabaseDamaged, DatabaseUnwritable
from storage.store import Store
from tests.conftest import CEREBRAS_KEY, GROQ_KEY
from tests.test_process import ROOT, free_port
from tests.test_storage_failures import fill, small_disk  # noqa: F401  (a fixture)

pytestmark = pytest.mark.sqlite_only   # the SQLite file itself; PostgreSQL's own tests: test_postgres.py

DB_NAME = "dataset.sqlite3"


def record(n: int) -> dict:
    return {"id": f"s{n}", "question": f"Question {n} about the law of nuisance?", "answer": "An answer. " * 40,
            "reasoning": "Step 1: x", "case_citation": "Donoghue v Stevenson [1932] AC 562",
            "topic": "Tort Law - Nuisance", "difficulty": "basic"}


def make_database(data_dir: Path, samples: int = 200) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(data_dir / DB_NAME)
    store.add_many([record(n) for n in range(samples)])
    store.close()   # the last connection checkpoints the write-ahead log into the file
    path = data_dir / DB_NAME
    assert path.stat().st_size > 40_000 and not Path(f"{path}-wal").exists()
    return path


def run_server(data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATA_DIR": str(data_dir), "PORT": str(free_port()), "HOST": "127.0.0.1",
           "GROQ_API_KEY": GROQ_KEY, "CEREBRAS_API_KEY": CEREBRAS_KEY,
           "GROQ_BASE_URL": "http://127.0.0.1:9", "CEREBRAS_BASE_URL": "http://127.0.0.1:9"}
    return subprocess.run([sys.executable, "-m", "api_server"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def last_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, result
    return lines[-1]


# -- damaged files ----------------------------------------------------------------------------

def test_a_truncated_database_stops_the_server_with_one_line(tmp_path):
    path = make_database(tmp_path / "data")
    os.truncate(path, path.stat().st_size // 2)
    result = run_server(tmp_path / "data")
    assert result.returncode == 2
    line = last_line(result)
    assert line.startswith(f"database error: {path}: the database file is damaged")
    assert "restore it from a backup" in line and f"sqlite3 {path} 'PRAGMA integrity_check'" in line


def test_a_garbage_header_stops_the_server_with_one_line(tmp_path):
    path = make_database(tmp_path / "data")
    with open(path, "r+b") as handle:
        handle.write(b"this is no database header!" * 4)
    result = run_server(tmp_path / "data")
    assert result.returncode == 2
    line = last_line(result)
    assert line.startswith(f"database error: {path}: not a SQLite database, or its header is damaged")
    assert "restore it from a backup" in line and f"sqlite3 {path} 'PRAGMA integrity_check'" in line


def test_a_failed_integrity_check_is_refused_before_anything_is_written(tmp_path):
    path = make_database(tmp_path / "data")
    db = sqlite3.connect(path)
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'samples_topic'").fetchone()[0]
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(path, "r+b") as handle:   # an index page whose header claims 65535 cells
        handle.seek((root - 1) * page_size + 3)
        handle.write(b"\xff\xff")
    before = path.read_bytes()
    with pytest.raises(DatabaseDamaged) as caught:
        Store(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: the integrity check (PRAGMA quick_check) failed: Page {root}")
    assert "\n" not in message and "restore it from a backup" in message
    assert path.read_bytes() == before        # refused before any write (no migration, no probe)
    result = run_server(tmp_path / "data")
    assert result.returncode == 2 and last_line(result) == f"database error: {message}"


# -- unwritable -------------------------------------------------------------------------------

@pytest.fixture
def read_only_dir(tmp_path):
    """A data directory holding a database, then made read-only: by permissions for an ordinary
    user, by remounting a tmpfs read-only for root (whom permissions do not stop)."""
    data = tmp_path / "ro"
    if os.geteuid() != 0:
        make_database(data, samples=5)
        data.chmod(0o555)
        yield data
        data.chmod(0o755)
        return
    data.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(data)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        make_database(data, samples=5)
        subprocess.run(["mount", "-o", "remount,ro", str(data)], check=True)
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def test_a_read_only_data_directory_stops_the_server_with_one_line(read_only_dir):
    result = run_server(read_only_dir)
    assert result.returncode == 2
    line = last_line(result)
    assert line.startswith(f"database error: {read_only_dir}: cannot create server.lock")
    assert "fix permissions" in line
    with pytest.raises(DatabaseUnwritable) as caught:   # the database itself says the same
        Store(read_only_dir / DB_NAME)
    message = str(caught.value)
    assert message.startswith(f"{read_only_dir / DB_NAME}: cannot open or write the database (unable to open")
    assert "fix permissions" in message and f"{DB_NAME}-wal" in message and "\n" not in message


@pytest.fixture
def read_only_file(tmp_path):
    """A database file that cannot be written in a directory that can: `chmod 444` for an ordinary
    user, a read-only bind mount of the file for root."""
    data = tmp_path / "data"
    path = make_database(data, samples=5)
    if os.geteuid() != 0:
        path.chmod(0o444)
        yield path
        return
    if subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_read_only_database_file_stops_the_server_with_one_line(read_only_file):
    result = run_server(read_only_file.parent)
    assert result.returncode == 2
    line = last_line(result)
    assert line.startswith(f"database error: {read_only_file}: the database is read-only "
                           "(attempt to write a readonly database)")
    assert "fix permissions" in line


def test_a_full_disk_at_start_up_stops_the_server_with_one_line(small_disk):
    path = make_database(small_disk, samples=20)
    fill(small_disk)
    result = run_server(small_disk)
    assert result.returncode == 2
    line = last_line(result)
    assert line.startswith(f"database error: {path}: cannot open or write the database")
    assert "free space on it" in line or "free space on the disk" in line
