"""Import direction: the core knows no web framework, HTTP client or metrics library.

Checked twice: statically (every import statement of every core module and of the modelport
modules they reach, lazy imports included), and for real (import the core in a fresh
interpreter and look at ``sys.modules``).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import modelport

PACKAGE = Path(modelport.__file__).parent
FORBIDDEN = ("fastapi", "starlette", "uvicorn", "httpx", "prometheus_client")
WIRE_MODULES = ("modelport.server.app", "modelport.protocols", "modelport.cli.main", "modelport.cli.client")
CORE = (
    "modelport.types",
    "modelport.errors",
    "modelport.reference",
    "modelport.signature",
    "modelport.settings",
    "modelport.registry.registry",
    "modelport.serving.manager",
    "modelport.serving.versions",
    "modelport.serving.plans",
    "modelport.serving.shadow",
    "modelport.registry.traffic",
    "modelport.serving.watcher",
    "modelport.packaging.ingest",
    "modelport.registry.environment",
    "modelport.serving.loading",
    "modelport.packaging.export",
    "modelport.serving.sagemaker",
    "modelport.auth.authenticator",
    "modelport.auth.keys",
    "modelport.auth.tokens",
    *sorted(f"modelport.runtimes.{p.stem}" for p in (PACKAGE / "runtimes").glob("*.py") if p.stem != "__init__"),
    *sorted(f"modelport.stores.{p.stem}" for p in (PACKAGE / "stores").glob("*.py") if p.stem != "__init__"),
)


def source_of(module: str) -> Path | None:
    if module == "modelport":
        return PACKAGE / "__init__.py"
    if not module.startswith("modelport."):
        return None
    relative = Path(*module.split(".")[1:])
    for candidate in (PACKAGE / relative.with_suffix(".py"), PACKAGE / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(module: str) -> set[str]:
    path = source_of(module)
    assert path is not None, f"{module} has no source file"
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if source_of(f"{base}.{alias.name}"))
    return found


def type_checking_only(module: str) -> set[str]:
    """Imports under ``if TYPE_CHECKING:`` never run; they do not count."""
    path = source_of(module)
    assert path is not None
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for inner in node.body:
                if isinstance(inner, ast.ImportFrom) and inner.module:
                    names.add(inner.module)
                elif isinstance(inner, ast.Import):
                    names.update(alias.name for alias in inner.names)
    return names


def reachable(start: str) -> dict[str, str]:
    """Every import reachable from ``start`` through modelport modules -> the module importing it."""
    seen: dict[str, str] = {}
    todo = [start]
    visited: set[str] = set()
    while todo:
        module = todo.pop()
        if module in visited or source_of(module) is None:
            continue
        visited.add(module)
        for name in imports_of(module) - type_checking_only(module):
            seen.setdefault(name, module)
            if name.startswith("modelport"):
                todo.append(name)
    return seen


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_web_framework(module: str) -> None:
    if source_of(module) is None:
        pytest.skip(f"{module} does not exist yet")
    for name, importer in reachable(module).items():
        top = name.split(".")[0]
        assert top not in FORBIDDEN, f"{module} reaches {name} (imported by {importer})"
        assert not name.startswith(WIRE_MODULES), f"{module} reaches {name} (imported by {importer})"


def test_importing_the_core_loads_no_web_framework() -> None:
    present = [m for m in CORE if source_of(m) is not None]
    code = (
        "import importlib, json, sys\n"
        f"for name in {present!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_the_checker_sees_a_web_import() -> None:
    assert "starlette.responses" in reachable("modelport.protocols.errors")
