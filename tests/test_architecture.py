"""The package's shape, kept by tests: imports run one way (a lower layer never imports a higher one, and
no import cycle), the library never imports the CLI or a web framework, only the store package speaks
SQL, every subpackage says what it owns, and no module grows past ~400 lines.

Imports are read with ``ast`` from the source, at module level and inside functions (and under
``if TYPE_CHECKING``) alike, so a lazy import cannot hide a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mmsearch"

CORE = ("config", "errors", "records", "progress", "atomic")
"""Top-level modules of the shared ground."""
TIERS = (
    {"core"},
    {"decoding", "encoders"},
    {"bridge", "index"},
    {"store"},
    {"ingest", "search", "media"},
    {"engine"},
    {"evaluation", "bench"},
    {"package"},
)
"""The layers, lowest first. A module may import its own component's modules and anything in a lower
tier; never a higher tier, nor another component of its own tier."""
PROGRAM = "mmsearch.__main__"
"""``python -m mmsearch`` runs the CLI: a program, not part of the library (nothing imports it)."""
FORBIDDEN = ("typer", "click", "fastapi", "starlette", "uvicorn", "mmsearch_cli")
MAX_LINES = 400


# -- reading the import graph --------------------------------------------------------------------------
def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package at ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imported(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(module imported, line) for every import statement in ``path`` that names a module of the package."""
    is_package = path.name == "__init__.py"
    here = module if is_package else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known and "." in target:
                target = target.rsplit(".", 1)[0]  # `import a.b.c` where c is not a module of its own
            found.append((target, node.lineno))
    return found


def import_graph(root: Path, package: str) -> dict[str, list[tuple[str, int]]]:
    """Module -> the package's modules it imports (with the line), package-internal edges only."""
    known = module_names(root, package)
    return {module: [(target, line) for target, line in imported(module, path, known)
                     if target in known and target != module]
            for module, path in known.items()}


def external_imports(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the top-level names of what it imports from outside the package."""
    known = module_names(root, package)
    return {module: {target.split(".")[0] for target, _ in imported(module, path, known)
                     if target.split(".")[0] != package}
            for module, path in known.items()}


def find_cycle(graph: dict[str, list[tuple[str, int]]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target, _ in graph.get(module, ()):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def component(module: str, package: str = "mmsearch") -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    if len(parts) == 2 and parts[1] in CORE:
        return "core"
    return parts[1]


def tier(name: str) -> int:
    for number, members in enumerate(TIERS):
        if name in members:
            return number
    raise AssertionError(f"{name} is in no tier: add it to TIERS in {Path(__file__).name}")


def layer_violations(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        if module == PROGRAM:
            continue
        for target, line in targets:
            mine, theirs = component(module), component(target)
            if mine != theirs and tier(theirs) >= tier(mine):
                found.append(f"{module} (line {line}, layer {mine}) imports {target} (layer {theirs}), "
                             f"which is not below it")
    return found


# -- the package as it is ------------------------------------------------------------------------------
def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph(PACKAGE, "mmsearch"))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_run_down_the_layers():
    assert layer_violations(import_graph(PACKAGE, "mmsearch")) == []


def test_every_module_is_in_a_layer():
    for module in module_names(PACKAGE, "mmsearch"):
        if module != PROGRAM:
            tier(component(module))


def test_the_library_never_imports_the_cli_or_a_web_framework():
    for module, names in external_imports(PACKAGE, "mmsearch").items():
        if module != PROGRAM:
            assert not names & set(FORBIDDEN), f"{module} imports {sorted(names & set(FORBIDDEN))}"


def test_only_the_store_package_speaks_sql():
    """The catalog owns its SQL: no SQL engine, table or raw SQLite connection outside mmsearch/store."""
    for module, names in external_imports(PACKAGE, "mmsearch").items():
        if component(module) != "store":
            assert not names & {"sqlalchemy", "sqlite3"}, f"{module} imports {sorted(names & {'sqlalchemy', 'sqlite3'})}"
    graph = import_graph(PACKAGE, "mmsearch")
    for module, targets in graph.items():
        if component(module) != "store":
            assert "mmsearch.store.schema" not in {t for t, _ in targets}, f"{module} imports the catalog's tables"
    for folder in (PACKAGE, ROOT / "cli", ROOT / "benchmarks"):
        for path in folder.rglob("*.py"):
            if PACKAGE / "store" in path.parents:
                continue
            text = path.read_text(encoding="utf-8")
            assert "catalog._database" not in text and "catalog.engine" not in text, path


def test_every_subpackage_says_what_it_owns():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        if init.parent.name == "configs":
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.split()) >= 25, f"{init}: say what the package owns and what it may import"


@pytest.mark.parametrize("folder", ["mmsearch", "cli"])
def test_no_module_grows_past_400_lines(folder):
    long = {str(path.relative_to(ROOT)): count for path in sorted((ROOT / folder).rglob("*.py"))
            if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules: {long}"


# -- the checks themselves catch what they are for -------------------------------------------------------
def write_package(root: Path, modules: dict[str, str]) -> Path:
    for name, source in modules.items():
        path = root / "pkg" / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
        for parent in path.relative_to(root / "pkg").parents:
            (root / "pkg" / parent / "__init__.py").touch()
    return root / "pkg"


def test_a_cycle_is_found_even_through_a_function_level_import(tmp_path):
    root = write_package(tmp_path, {
        "a": "from .b import thing\n",
        "b": "from . import c\nthing = 1\n",
        "c": "def later():\n    from .a import nothing\n",
        "d": "import pkg.a\n",
    })
    assert find_cycle(import_graph(root, "pkg")) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    fixed = write_package(tmp_path, {"c": "def later():\n    return 1\n"})
    assert find_cycle(import_graph(fixed, "pkg")) is None


def test_a_lower_layer_importing_a_higher_one_is_named(tmp_path):
    root = write_package(tmp_path, {
        "errors": "",
        "store.folder": "from ..ingest.indexer import Indexer\nfrom ..errors import UsageError\n",
        "ingest.indexer": "from ..store.folder import Store\n",
        "search.searcher": "from ..ingest.plan import Plan\n",
        "ingest.plan": "",
    })
    graph = {module.replace("pkg", "mmsearch", 1): [(t.replace("pkg", "mmsearch", 1), line) for t, line in targets]
             for module, targets in import_graph(root, "pkg").items()}
    assert layer_violations(graph) == [
        "mmsearch.search.searcher (line 1, layer search) imports mmsearch.ingest.plan (layer ingest), "
        "which is not below it",
        "mmsearch.store.folder (line 1, layer store) imports mmsearch.ingest.indexer (layer ingest), "
        "which is not below it",
    ]
