"""The layers contract, derived from the folders: every subpackage and top-level module of
``modelport`` has its place in LAYERS, and every import goes to its own layer or a lower one.

A new folder or module that is not placed fails (it does not skip); so does an import upward or
sideways between two components of one layer. Imports under ``if TYPE_CHECKING:`` do not count
(they never run); lazy imports inside functions do. The core (DESIGN.md: types, errors, serving,
batching, runtimes, registry, stores) also reaches no web framework, HTTP client or metrics
library, checked statically and in a fresh interpreter. Every third-party import is a declared
dependency (base or extra), and every base dependency is imported. No module imports itself
through others (a loop broken only by an import inside a function counts as a loop).

``importlib.import_module(...)`` (and ``__import__``) with a constant name counts as an import of
that module; with an f-string, as an import of every module whose name starts with its constant
head (``f"modelport.ingest.{name}"``: every module of ``modelport.ingest``).
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import subprocess
import sys
import tomllib
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import modelport

PACKAGE = Path(modelport.__file__).parent
GENERATED = PACKAGE / "protocols" / "grpc" / "proto"  # protoc's output imports only its own package

# Top to bottom. A component imports only itself and the components of lower layers.
LAYERS: list[set[str]] = [
    {"__init__", "__main__", "app", "serverless", "testing"},  # entry points: package, -m, ASGI, Lambda, conformance
    {"cli"},
    {"api", "bench"},
    {"shipping"},  # ship time: images, Kubernetes/KServe/VM files, CI, monitoring files, AWS callers
    {"server"},
    {"observability"},  # metrics, capture, drift: hooks on serving, never inside it
    {"protocols"},
    {"serving"},
    {"ingest", "auth"},  # registration time: conversion and verification; keys and tokens
    {"registry"},  # metadata, migrations, and the export format (written at ship time, read at serve time)
    {"runtimes", "stores"},
    {"signature", "settings", "reference"},
    {"types", "errors", "version"},
]
CORE = ("types", "errors", "serving", "runtimes", "registry", "stores", "signature", "reference", "settings")
FORBIDDEN = ("fastapi", "starlette", "uvicorn", "httpx", "grpc", "prometheus_client")
LEVEL = {component: level for level, layer in enumerate(LAYERS) for component in layer}


def components_on_disk() -> set[str]:
    found = {p.stem for p in PACKAGE.glob("*.py")}
    found |= {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    return found


def modules() -> Iterator[tuple[str, Path]]:
    """Every module of the package (dotted name, file), generated code left out."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if GENERATED in path.parents or "migrations" in path.parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def component(dotted: str) -> str:
    parts = dotted.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def runtime_imports(path: Path) -> Iterator[tuple[str, int]]:
    """(imported module, line) of every import in the module at ``path`` that can run."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    return imports_in(path.read_text(encoding="utf-8"), package)


def imports_in(source: str, package: str) -> Iterator[tuple[str, int]]:
    """(imported module, line) of every import in ``source``, a module of ``package``, that can run:
    TYPE_CHECKING blocks left out; ``importlib.import_module`` calls in (:func:`dynamic_import`)."""
    tree = ast.parse(source)
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skipped.update(id(inner) for inner in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base == "modelport":  # from modelport import x: the component is x
                for alias in node.names:
                    yield f"modelport.{alias.name}", node.lineno
            else:
                yield base, node.lineno
        elif isinstance(node, ast.Call):
            named = dynamic_import(node)
            if named:
                yield named, node.lineno


def dynamic_import(call: ast.Call) -> str | None:
    """The module ``importlib.import_module(name)`` / ``import_module(name)`` / ``__import__(name)``
    imports, where the source says: a constant name; for an f-string its constant head and ``*``
    (``"modelport.ingest.*"``: any module under it). None for other calls and for names it cannot
    tell (a variable, a relative name)."""
    func = call.func
    calls_importlib = (
        isinstance(func, ast.Attribute)
        and func.attr == "import_module"
        and isinstance(func.value, ast.Name)
        and func.value.id == "importlib"
    )
    if not (calls_importlib or (isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))):
        return None
    if not call.args:
        return None
    name = call.args[0]
    if isinstance(name, ast.Constant) and isinstance(name.value, str):
        return name.value if name.value and not name.value.startswith(".") else None
    if isinstance(name, ast.JoinedStr):
        head = ""
        for part in name.values:
            if not (isinstance(part, ast.Constant) and isinstance(part.value, str)):
                return f"{head}*" if head and not head.startswith(".") else None
            head += part.value
        return head or None
    return None


def imported_modules(imported: str, files: Collection[str]) -> set[str]:
    """The modules of ``files`` that an import of ``imported`` loads by name: the module itself; for
    ``from package import name`` (a function or class), the package; for a pattern ``head*`` (an
    f-string), every module whose name starts with ``head``."""
    if imported.endswith("*"):
        return {name for name in files if name.startswith(imported[:-1])}
    if imported in files:
        return {imported}
    parent = imported.rpartition(".")[0]
    return {parent} if parent in files else set()


def test_every_folder_and_module_has_its_layer() -> None:
    on_disk = components_on_disk()
    assert on_disk - LEVEL.keys() == set(), "place these in LAYERS (tests/project/test_architecture.py)"
    assert LEVEL.keys() - on_disk == set(), "LAYERS names components that do not exist"


def test_imports_go_down_the_layers_only() -> None:
    wrong = []
    for name, path in modules():
        mine = component(name)
        for imported, line in runtime_imports(path):
            if not imported.startswith("modelport"):
                continue
            theirs = component(imported)
            if theirs == mine:
                continue
            if theirs not in LEVEL:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} ({mine}) imports {imported}, which no layer holds")
            elif LEVEL[theirs] <= LEVEL[mine]:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} ({mine}) imports {imported} ({theirs})")
    assert wrong == []


def reachable(start: str) -> dict[str, str]:
    """Every import reachable from ``start`` through modelport modules -> the module importing it."""
    files = dict(modules())
    seen: dict[str, str] = {}
    todo, visited = [start], set()
    while todo:
        name = todo.pop()
        path = files.get(name)
        if name in visited or path is None:
            continue
        visited.add(name)
        for imported, _ in runtime_imports(path):
            seen.setdefault(imported, name)
            if imported.startswith("modelport"):
                named = imported_modules(imported, files)
                todo.extend(m for m in files if m in named or imported.startswith(m + "."))
    return seen


@pytest.mark.parametrize("name", [name for name, _ in modules() if component(name) in CORE])
def test_core_module_reaches_no_web_framework(name: str) -> None:
    for imported, importer in reachable(name).items():
        assert imported.split(".")[0] not in FORBIDDEN, f"{name} reaches {imported} (imported by {importer})"


def test_importing_the_core_loads_no_web_framework() -> None:
    core = [name for name, _ in modules() if component(name) in CORE]
    code = (
        "import importlib, json, sys\n"
        f"for name in {core!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_the_checker_sees_an_upward_import_and_a_web_import() -> None:
    imports = {imported for imported, _ in runtime_imports(PACKAGE / "server" / "admission.py")}
    assert "starlette.types" in imports
    assert "starlette.types" in reachable("modelport.server.admission")
    assert LEVEL[component("modelport.server.app")] < LEVEL[component("modelport.serving.manager")]


def declared_distributions() -> tuple[set[str], set[str]]:
    """(the base dependencies, every dependency of any extra), by canonical distribution name."""
    project = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    base: set[str] = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    extras: set[str] = {
        canonicalize_name(Requirement(r).name) for rs in project["optional-dependencies"].values() for r in rs
    }
    return base, extras


def third_party_imports() -> Iterator[tuple[str, str]]:
    """(top-level module, where) of every import of something outside the standard library."""
    for _, path in modules():
        for imported, line in runtime_imports(path):
            top = imported.split(".")[0]
            if top and top != "modelport" and top not in sys.stdlib_module_names:
                yield top, f"{path.relative_to(PACKAGE)}:{line}"


def test_every_third_party_import_is_a_declared_dependency() -> None:
    base, extras = declared_distributions()
    providers = importlib.metadata.packages_distributions()
    undeclared = [
        f"{where} imports {top} (from {providers.get(top)})"
        for top, where in third_party_imports()
        if not {canonicalize_name(d) for d in providers.get(top, [])} & (base | extras)
    ]
    assert undeclared == [], "declare these in pyproject.toml"


def test_every_base_dependency_is_used() -> None:
    base, _ = declared_distributions()
    providers = importlib.metadata.packages_distributions()
    imported = {canonicalize_name(d) for top, _ in third_party_imports() for d in providers.get(top, [])}
    # uvloop is the event loop uvicorn is told to use by name (server/http.py: loop="uvloop")
    assert base - imported - {"uvloop"} == set(), "pyproject.toml declares dependencies nothing imports"


def import_graph(imports: Mapping[str, Iterable[str]] | None = None) -> dict[str, set[str]]:
    """Module -> the modelport modules it imports at run time (lazy imports in functions and
    ``importlib.import_module`` included); ``imports``: module -> what it imports (default: the package's)."""
    if imports is None:
        imports = {name: [imported for imported, _ in runtime_imports(path)] for name, path in modules()}
    graph: dict[str, set[str]] = {name: set() for name in imports}
    for name, imported_names in imports.items():
        for imported in imported_names:
            graph[name] |= imported_modules(imported, graph.keys()) - {name}  # a pattern may name its own module
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once (as found by a depth-first walk), packages importing their own
    modules left out (``package/__init__`` re-exporting is not a loop)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the walk's path, 2: done
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if target.startswith(node + ".") or node.startswith(target + "."):
                continue
            if state.get(target) == 1:
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                walk(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return found


def test_no_module_imports_itself_round_about() -> None:
    assert cycles(import_graph()) == [], "break the loop: move what both need into a module both import"


def test_the_cycle_finder_sees_a_loop() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "p": {"p.x"}, "p.x": {"p"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]


def test_the_cycle_finder_sees_a_loop_through_import_module() -> None:
    """The loop issue 20 found: package.py loaded the framework modules with import_module, and
    they imported its private helpers back."""
    sources = {
        "modelport.ingest.package": (
            "import importlib\n"
            "def framework_for(model):\n"
            "    for name in ('boosting', 'pytorch'):\n"
            "        module = importlib.import_module(f'modelport.ingest.{name}')\n"
        ),
        "modelport.ingest.boosting": "from modelport.ingest.package import _reason\n",
        "modelport.ingest.pytorch": "",
        "modelport.ingest.onnxgraph": "",
        "modelport.registry.db": "from importlib import import_module\nimport_module('modelport.ingest.onnxgraph')\n",
        "modelport.registry.spec": "import importlib\nimportlib.import_module(name)\n",  # a name it cannot tell
    }
    imports = {name: [i for i, _ in imports_in(source, name.rpartition(".")[0])] for name, source in sources.items()}
    assert imports["modelport.ingest.package"] == ["importlib", "modelport.ingest.*"]
    assert imports["modelport.registry.db"] == ["importlib", "modelport.ingest.onnxgraph"]
    assert imports["modelport.registry.spec"] == ["importlib"]
    graph = import_graph(imports)
    assert graph["modelport.ingest.package"] == {
        "modelport.ingest.boosting",
        "modelport.ingest.onnxgraph",
        "modelport.ingest.pytorch",
    }
    assert cycles(graph) == [["modelport.ingest.boosting", "modelport.ingest.package", "modelport.ingest.boosting"]]
