"""The layout is the map: these tests keep it true. Imports point down the layers (ARCHITECTURE.md),
there are no import cycles, the domain knows no HTTP, and no module grows past a reader's
patience."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "handlers", "miniprogram_api", "jobs", "config")
COMPOSITION_ROOTS = {"server.app", "server.__main__"}
MAX_LINES = 500
LONGER_ALLOWED = {"server/wechat/emulator/wechat_api.py"}  # WeChat's API, one handler per call


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """What a module imports (module names, and `from package import module` resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_lower_layers_never_import_the_layers_above():
    above = ("handlers", "miniprogram_api", "jobs", "console")
    for name, path in _modules().items():
        if not name.startswith("server") or name in COMPOSITION_ROOTS:
            continue
        for imported in _imports(path, top_level_only=False):
            assert not imported.startswith(above), f"{name} imports {imported}"


def test_the_domain_knows_no_http():
    for name, path in _modules().items():
        if name.startswith("server.domain"):
            for imported in _imports(path, top_level_only=False):
                assert not imported.startswith(("tornado", "server.web")), f"{name}: {imported}"


def test_the_mini_program_api_does_not_reach_into_the_staff_api():
    for name, path in _modules().items():
        if name.startswith("miniprogram_api"):
            for imported in _imports(path, top_level_only=False):
                assert not imported.startswith("handlers"), f"{name} imports {imported}"


def test_no_import_cycles():
    modules = _modules()
    graph = {
        name: {i for i in _imports(path, top_level_only=True) if i in modules and i != name}
        for name, path in modules.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for following in sorted(graph[name]):
            if state.get(following) == 1:
                cycle = [*path[path.index(following) :], following]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if following not in state:
                visit(following, [*path, following])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_module_in_server_is_too_long():
    for path in (ROOT / "server").rglob("*.py"):
        relative = str(path.relative_to(ROOT))
        if relative in LONGER_ALLOWED:
            continue
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{relative} has {lines} lines"
