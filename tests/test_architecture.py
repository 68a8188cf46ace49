"""The tree shows the architecture: packages import only downward, and no module imports itself
back through others. Read from the source (every import, function-level ones included)."""
from __future__ import annotations

import ast
import threading
import logging
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {"tests", "bench", ".venv", "data", "docs"}

# Higher layers may import lower (or equal) ones, never the other way round.
LAYERS: dict[str, int] = {
    "config": 0, "state": 0,
    "storage": 1, "providers": 1,
    "errors": 2,
    "fallback": 3,
    "generation": 4,
    "quality": 5,
    "dataset": 6,
    "batch": 7, "simulator": 7,
    "web": 8,
    "api_server": 9,
    "cli": 9,           # a client of the HTTP API: imports nothing of the server (see below)
}


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[0] in SKIP or any(p.startswith(".") for p in parts):
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules that `name` imports, resolved to the most specific known module."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` depends on the submodule; `from mod import name` on the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = project_modules(root)
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def layer_of(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
                  for m, targets in graph.items() for t in targets if layer_of(t) > layer_of(m))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_top_level_name_has_a_layer():
    tops = {name.split(".")[0] for name in project_modules()}
    assert tops <= set(LAYERS), f"add these to LAYERS: {sorted(tops - set(LAYERS))}"


def test_no_upward_import():
    assert upward_imports(import_graph()) == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_command_line_client_imports_nothing_from_the_project():
    """`cli` reaches the server only over HTTP, so it runs wherever the server can be reached."""
    graph = import_graph()
    assert any(name.startswith("cli.") for name in graph)
    foreign = sorted(f"{m} imports {t}" for m, targets in graph.items() if m.split(".")[0] == "cli"
                     for t in targets if t.split(".")[0] != "cli")
    assert foreign == []
    imported_by_the_server = sorted(f"{m} imports {t}" for m, targets in graph.items() if m.split(".")[0] != "cli"
                                    for t in targets if t.split(".")[0] == "cli")
    assert imported_by_the_server == []


def test_the_checks_catch_a_planted_violation(tmp_path):
    for package in ("storage", "web"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "storage" / "store.py").write_text("def f():\n    from web import app\n")
    (tmp_path / "web" / "app.py").write_text("from storage.store import f\n")
    graph = import_graph(tmp_path)
    assert upward_imports(graph) == ["storage.store (layer 1) imports web.app (layer 8)"]
    assert cycles(graph) == [["storage.store", "web.app"]]


def test_create_app_starts_nothing(tmp_path):
    """Building an app starts no thread, resumes no batch and leaves logging alone."""
    from api_server import create_app
    from config.settings import Settings

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    filters = {name: list(logging.getLogger(name).filters) for name in ("api", "batch", "waitress")}
    threads = set(threading.enumerate())
    app = create_app(Settings.from_env({}, data_dir=tmp_path))
    try:
        assert set(threading.enumerate()) - threads == set()   # no new thread (old ones may end meanwhile)
        assert root.handlers == handlers and root.level == level
        assert {name: list(logging.getLogger(name).filters) for name in filters} == filters
        assert app.extensions["services"].batches.running_ids() == []
    finally:
        app.extensions["services"].close()
