"""The lock files agree with pyproject.toml: every declared dependency is pinned, at its version, with hashes."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pins(lock: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) for each package in a uv/pip-tools lock."""
    found: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock.read_text()):
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^\s;\\]+)", block)
        if match:
            found[match.group(1).lower().replace("_", "-")] = (match.group(2), block.count("--hash=sha256:"))
    return found


def declared(extra: str | None = None) -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    entries = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    return {re.sub(r"\[.*\]", "", name).lower().replace("_", "-"): version   # psycopg[binary] -> psycopg
            for name, version in (e.split("==") for e in entries)}


def test_every_declared_dependency_is_locked_at_its_version_with_hashes():
    for lock, extra in (("requirements.txt", None), ("requirements-dev.txt", "dev")):
        locked = pins(ROOT / lock)
        for name, version in declared(extra).items():
            assert name in locked, f"{lock} lacks {name}: run `make lock`"
            assert locked[name][0] == version, f"{lock} pins {name}=={locked[name][0]}, pyproject says {version}"
        assert all(count > 0 for _, count in locked.values()), f"{lock} has a package without hashes"


def test_runtime_and_dev_locks_agree():
    runtime, dev = pins(ROOT / "requirements.txt"), pins(ROOT / "requirements-dev.txt")
    assert {n: v for n, (v, _) in runtime.items()} == {n: dev[n][0] for n in runtime if n in dev}
    assert set(runtime) <= set(dev)
