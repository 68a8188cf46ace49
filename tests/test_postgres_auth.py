"""A wrong password at start-up: the real server process against a stand-in PostgreSQL that asks
for a password and refuses it (`tests.fake_postgres`), since the project machines' PostgreSQL
trusts every local connection and so accepts any password. Needs no real PostgreSQL: runs on both
test backends."""
from __future__ import annotations

import secrets
import subprocess
import sys

from storage.errors import DatabaseUnavailable
from storage.postgres import PostgresDatabase
from tests.conftest import CEREBRAS_KEY, GROQ_KEY
from tests.fake_postgres import WrongPasswordServer
from tests.test_process import ROOT, free_port

PASSWORD = "pw-" + secrets.token_hex(8)


def test_a_wrong_password_stops_the_server_with_one_line_naming_the_url_without_it(tmp_path):
    with WrongPasswordServer() as fake:
        url = f"postgresql://x:{PASSWORD}@127.0.0.1:{fake.port}/dataset"
        env = {"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path / "data"), "PORT": str(free_port()),
               "HOST": "127.0.0.1", "GROQ_API_KEY": GROQ_KEY, "CEREBRAS_API_KEY": CEREBRAS_KEY,
               "DATABASE_URL": url}
        result = subprocess.run([sys.executable, "-m", "api_server"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=60)
    assert PASSWORD in fake.passwords                   # the server really sent it, and was refused
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(f"database error: postgresql://x@127.0.0.1:{fake.port}/dataset: cannot connect (")
    assert 'password authentication failed for user "x"' in line
    assert line.endswith("check the user name and password in DATABASE_URL")
    assert PASSWORD not in result.stderr + result.stdout


def test_a_wrong_password_is_one_line_from_the_database_itself():
    with WrongPasswordServer() as fake:
        url = f"postgresql://x:{PASSWORD}@127.0.0.1:{fake.port}/dataset?sslmode=prefer"
        try:
            PostgresDatabase(url)
        except DatabaseUnavailable as exc:
            message = str(exc)
        else:
            raise AssertionError("a refused password opened the database")
    assert "\n" not in message and PASSWORD not in message and "28P01" not in message
    assert message.startswith(f"postgresql://x@127.0.0.1:{fake.port}/dataset?sslmode=prefer: cannot connect")
    assert 'password authentication failed for user "x"' in message
