"""Imports run one way: cli → stages → domain (data, models, devices, nn, train, neurosim, report, …)
→ artifacts. Every module under cimtool/ is parsed (no import is run), and every import statement
counts, at any level: inside functions, ``if TYPE_CHECKING:`` blocks and ``try`` blocks alike."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import cimtool

PACKAGE_DIR = Path(cimtool.__file__).parent
STAGES = "cimtool.stages"
# the stages' shared helper module, which stages may import (their params live in cimtool/params.py)
STAGES_SHARED = ("cimtool.stages.common",)
ABOVE_DOMAIN = ("cimtool.cli", "cimtool.__main__", STAGES)  # nothing below may import these
# what artifacts.py may import of cimtool: the error type, and the root package (its __version__)
ARTIFACTS_MAY_IMPORT = {"cimtool", "cimtool.errors"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _imported(module: str, path: Path) -> set[str]:
    """The cimtool modules that ``module`` imports; ``from a import b`` counts as ``a.b`` where that
    is a module (``from cimtool.stages import sweep``), else as ``a``."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".")
                if not is_package:
                    package = package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in _modules() else base)
    return {name for name in found if _within(name, "cimtool")}


@cache
def _edges() -> list[tuple[str, str]]:
    return sorted((module, target) for module, path in _modules().items()
                  for target in _imported(module, path) if target != module)


def _report(bad: list[tuple[str, str]]) -> str:
    return "imports that run the wrong way:\n" + "\n".join(f"  {a} → {b}" for a, b in bad)


def test_the_scan_sees_every_kind_of_import():
    """Guards the guard: a scan that found nothing would pass every check below."""
    modules = _modules()
    assert {"cimtool.cli", "cimtool.artifacts", *STAGES_SHARED, "cimtool.stages.sweep"} <= set(modules)
    edges = set(_edges())
    assert ("cimtool.cli", "cimtool.stages.inspect") in edges  # `from cimtool.stages import inspect as stage`
    assert ("cimtool.artifacts", "cimtool.errors") in edges  # top-level `from … import …`
    # a lazy import inside a function body
    assert ("cimtool.stages.inspect", "cimtool.devices.cmap") in edges


def test_stages_never_import_stages():
    """A stage may use the stages' shared helper (stages/common.py), never another stage; the helper
    imports no stage. What several stages share belongs in a domain module (their parameters live in
    cimtool/params.py, below the stages)."""
    bad = [(a, b) for a, b in _edges()
           if _within(a, STAGES) and _within(b, STAGES) and b not in STAGES_SHARED]
    assert not bad, _report(bad)


def test_the_domain_never_imports_stages_or_the_cli():
    bad = [(a, b) for a, b in _edges()
           if not any(_within(a, top) for top in ABOVE_DOMAIN)
           and any(_within(b, top) for top in ABOVE_DOMAIN)]
    assert not bad, _report(bad)


def test_nn_never_imports_train():
    bad = [(a, b) for a, b in _edges() if _within(a, "cimtool.nn") and _within(b, "cimtool.train")]
    assert not bad, _report(bad)


def test_artifacts_imports_only_errors():
    """The artifact store is the bottom layer: it knows no model, stage or device."""
    bad = [(a, b) for a, b in _edges() if a == "cimtool.artifacts" and b not in ARTIFACTS_MAY_IMPORT]
    assert not bad, _report(bad)
