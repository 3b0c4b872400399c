"""The layers hold: read every module's imports (ast) and check the rules a newcomer relies on.

- webapp/provider knows no Flask and no database;
- webapp/services import nothing from webapp/web and never touch request, current_user or url_for;
- a blueprint module in webapp/web imports no other blueprint module (shared helpers live in
  web/access.py, web/forms.py, web/security.py and web/charts.py);
- nothing outside webapp/web imports it, except create_app (webapp/__init__.py);
- jobs are enqueued by dotted name, and the import graph has no cycle.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("webapp", "jobs")
WEB_SHARED = {"webapp.web", "webapp.web.access", "webapp.web.forms", "webapp.web.security", "webapp.web.charts"}
REQUEST_NAMES = {"request", "current_user", "url_for", "session", "g"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import statement, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names], node.lineno))
    return found


def _resolve(module: str, names: list[str], known: dict[str, Path]) -> list[str]:
    """The project modules an import statement reaches (`from webapp.web import auth` reaches webapp.web.auth)."""
    reached = [f"{module}.{name}" for name in names if f"{module}.{name}" in known]
    if module in known and len(reached) < len(names or [None]):
        reached.append(module)
    return reached


MODULES = _modules()
GRAPH = {
    name: [(target, line, taken) for module, taken, line in _imports(name, path)
           for target in (_resolve(module, taken, MODULES) or [module])]
    for name, path in MODULES.items()
}


def _where(name: str, line: int) -> str:
    return f"{MODULES[name].relative_to(ROOT)}:{line}"


def test_the_layers_exist():
    """The three layers are packages, so a newcomer sees them in the tree."""
    for layer in ("webapp.web", "webapp.services", "webapp.provider"):
        assert layer in MODULES, f"{layer} is missing"


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("webapp.provider")])
def test_provider_knows_no_flask_and_no_database(name):
    """The wire can be used and tested alone: no flask, no SQLAlchemy, no webapp module outside provider."""
    for target, line, _ in GRAPH[name]:
        top = target.split(".")[0]
        assert top not in {"flask", "flask_sqlalchemy", "sqlalchemy", "flask_login", "werkzeug"}, \
            f"{_where(name, line)} imports {target}"
        if top == "webapp":
            assert target.startswith("webapp.provider"), f"{_where(name, line)} imports {target}"


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("webapp.services")])
def test_services_never_reach_into_http(name):
    """Services take ids and values: nothing from webapp.web, and no request, current_user or url_for."""
    for target, line, taken in GRAPH[name]:
        assert not target.startswith("webapp.web"), f"{_where(name, line)} imports {target}"
        if target in {"flask", "flask_login"}:
            used = REQUEST_NAMES.intersection(taken)
            assert not used, f"{_where(name, line)} takes {', '.join(sorted(used))} from {target}"


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("webapp.web.") and n not in WEB_SHARED])
def test_blueprints_do_not_import_each_other(name):
    """A blueprint module reaches other views only through URLs; shared view helpers live in one place."""
    for target, line, _ in GRAPH[name]:
        if target.startswith("webapp.web"):
            assert target in WEB_SHARED, f"{_where(name, line)} imports blueprint module {target}"


@pytest.mark.parametrize("name", [n for n in MODULES if not n.startswith("webapp.web")])
def test_only_create_app_wires_the_web_layer(name):
    """Jobs, services, the provider and the CLI never depend on views."""
    for target, line, _ in GRAPH[name]:
        if target.startswith("webapp.web"):
            assert name == "webapp" and target == "webapp.web", f"{_where(name, line)} imports {target}"


def test_services_do_not_import_jobs():
    """Jobs are enqueued by dotted name, so the layers never import them (no services <-> jobs cycle);
    only the command line, which starts workers and the scheduler, may name them."""
    for name in (n for n in MODULES if n.startswith(("webapp.web", "webapp.services", "webapp.provider"))):
        for target, line, _ in GRAPH[name]:
            assert not target.startswith("jobs"), f"{_where(name, line)} imports {target}"


def test_no_import_cycles():
    """No module reaches itself through its imports (imports inside functions included)."""
    edges = {name: sorted({t for t, _, _ in GRAPH[name] if t in MODULES and t != name}) for name in MODULES}
    # A package's __init__ is imported with each of its modules; only edges into real modules count.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in edges[name]:
            if name.startswith(target + "."):
                continue  # a module importing its own package's __init__ (e.g. webapp.cli -> webapp)
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if not state.get(target):
                visit(target)
        stack.pop()
        state[name] = 2

    for name in edges:
        if not state.get(name):
            visit(name)


def test_the_checker_names_the_offending_import(tmp_path):
    """The rules above can fail: a services module importing a blueprint is caught and named."""
    bad = tmp_path / "bad.py"
    bad.write_text("from webapp.web import contacts\nfrom flask import request\n")
    found = _imports("webapp.services.bad", bad)
    assert ("webapp.web", ["contacts"], 1) in found
    assert ("flask", ["request"], 2) in found
    assert _resolve("webapp.web", ["contacts"], MODULES) == ["webapp.web.contacts"]
