"""The shape of the codebase: the import graph has no circle, arrows point down, leaf modules import nothing of ours.

Read from the source with ``ast`` (every import, also those inside functions
and under ``TYPE_CHECKING``), so nothing is imported and the test takes
milliseconds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "backbones", "features", "benchmark")
# The data flow, top to bottom: a package may import only packages at or below its own rank.
RANK = {"common": 0, "backbones": 1, "features": 2, "benchmark": 3, "run_benchmark": 4}
# Settings and data types: they import nothing of ours but one another's leaf.
LEAVES = {
    "common.files": set(),
    "backbones.spec": set(),
    "backbones.licences": set(),
    "features.data.records": set(),
    "features.options": set(),
    "features.settings": {"features.options"},
    "benchmark.settings": set(),
    "benchmark.records": {"benchmark.settings"},
    "benchmark.run_folder": {"common.files", "features.settings"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _our_modules() -> dict[str, Path]:
    files = [REPO / "run_benchmark.py", *(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))]
    return {_module_name(path): path for path in files}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The modules of ours that ``path`` imports: ``from a import b`` is ``a.b`` when that is a module, else ``a``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                      for a in node.names}  # fmt: skip
    return {name for name in found if name in known}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _our_modules()
    known = set(modules)
    # A package's __init__ is not an edge of its own: importing a.b runs a/__init__, which is fine.
    return {name: _imports(path, known) - {name} for name, path in modules.items()}


def test_the_graph_was_read(graph):
    assert {"benchmark.training.sweep", "features.extract", "backbones.registry"} <= set(graph)
    assert "benchmark.settings" in graph["benchmark.training.sweep"]


def test_the_import_graph_has_no_circle(graph):
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                pytest.fail("import circle: " + " -> ".join([*trail[trail.index(target):], target]))
            if target not in state:
                visit(target, [*trail, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_arrows_point_down(graph):
    upward = [f"{source} -> {target}" for source, targets in graph.items() for target in targets
              if RANK[target.split(".")[0]] > RANK[source.split(".")[0]]]  # fmt: skip
    assert upward == []


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_leaf_modules_import_nothing_of_ours(graph, leaf):
    assert graph[leaf] <= LEAVES[leaf], f"{leaf} imports {sorted(graph[leaf] - LEAVES[leaf])}"


def test_reporting_does_not_import_the_training_sweep(graph):
    # Reports read the sweep's records (benchmark.records), not the code that trains them.
    importing = sorted(name for name, targets in graph.items()
                       if name.startswith("benchmark.reporting") and "benchmark.training.sweep" in targets)  # fmt: skip
    assert importing == []


def test_settings_and_records_do_not_load_keras():
    for leaf in LEAVES:
        tree = ast.parse((REPO / (leaf.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}  # fmt: skip
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}  # fmt: skip
        assert not imported & {"keras", "tensorflow", "jax", "torch"}, leaf


def _spelled_file_names(path: Path, names: frozenset[str]) -> list[str]:
    """The string constants of ``path`` (f-string parts too, docstrings aside) equal to or ending with one of
    ``names``: a results file spelled by hand rather than taken from ``benchmark.run_folder``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}  # fmt: skip
    return [f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and any(node.value == name or node.value.endswith(("/" + name, " " + name)) for name in names)]  # fmt: skip


def test_only_the_run_folder_spells_a_results_file_name():
    from benchmark.run_folder import FILE_NAMES

    # common.files writes SHA256SUMS for any folder, below the benchmark package: that one name is its own.
    own = {REPO / "common" / "files.py": {"SHA256SUMS"}}
    spelled = [hit for path in _our_modules().values() if path != REPO / "benchmark" / "run_folder.py"
               for hit in _spelled_file_names(path, FILE_NAMES - own.get(path, set()))]  # fmt: skip
    assert spelled == []


def test_the_suite_groups_every_file_with_a_fixture_built_once_per_module():
    """The parallel suite keeps a file's tests on one worker where it has a module- or class-scoped fixture
    (conftest's regular expression); the same found with ``ast``, whatever the decorator's spelling."""
    from conftest import _files_with_shared_fixtures

    def shared(path: Path) -> bool:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("pytest.fixture", "fixture"):
                scopes = [k.value for k in node.keywords if k.arg == "scope" and isinstance(k.value, ast.Constant)]
                if any(scope.value in ("module", "class", "package") for scope in scopes):
                    return True
        return False

    expected = {p.relative_to(REPO).as_posix() for p in (REPO / "tests").glob("test_*.py") if shared(p)}
    assert "tests/test_executors.py" in expected
    assert _files_with_shared_fixtures(REPO) == expected
