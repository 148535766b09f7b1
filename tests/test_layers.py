"""The layers of the repository: the library (rtb) ← the jobs and the training package ← the benchmarks.

Read from the source (every import statement, at module level or inside functions) and from a real import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("rtb", "jobs", "rtb_train", "benchmarks")
# What each layer may import of the others (a module may always import its own package).
ALLOWED = {
    "rtb": set(),
    "jobs": {"rtb"},
    "rtb_train": {"rtb"},
    "benchmarks": {"rtb", "jobs", "rtb_train"},
}
# Third-party packages the library must not import (the job layer's and the CLI's).
NOT_IN_LIBRARY = ("ray", "click")


def modules() -> dict[str, Path]:
    """Dotted module name → file, for every Python file of the four packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports_of(path: Path, name: str) -> set[str]:
    """Every module named by an import statement of ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def project_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports (``from a import b`` counts as ``a.b`` when that is a module)."""
    known = modules()
    graph = {}
    for name, path in known.items():
        targets = set()
        for imported in imports_of(path, name):
            while imported and imported not in known:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def test_no_module_imports_a_layer_above_its_own():
    offences = []
    for name, path in modules().items():
        layer = name.split(".")[0]
        for imported in imports_of(path, name):
            top = imported.split(".")[0]
            if top in PACKAGES and top != layer and top not in ALLOWED[layer]:
                offences.append(f"{name} imports {imported}")
            if layer == "rtb" and top in NOT_IN_LIBRARY:
                offences.append(f"{name} imports {imported} (the library has no Ray and no click)")
    assert not offences, offences


def test_the_import_graph_has_no_circles():
    graph = project_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            # A package's __init__ importing its own submodules is how a package exposes them, not a circle.
            if target.startswith(node + "."):
                continue
            if state.get(target) == 1:
                cycles.append(trail[trail.index(target):] + [target] if target in trail else [node, target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_importing_rtb_imports_no_training_job_or_cli_code():
    code = ("import sys, rtb; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'rtb_train', 'jobs', 'benchmarks', 'ray', 'click'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_job_layer_and_the_trainers_stay_readable():
    """No file in jobs/ over 350 lines; no function in jobs/ or rtb_train/ over 80 lines (the library's numbered-step
    entry points may be longer, as diffusers' are)."""
    long_files = [f"{p.name}: {n}" for p in sorted((REPO / "jobs").glob("*.py"))
                  if (n := len(p.read_text().splitlines())) > 350]
    long_functions = []
    for folder in ("jobs", "rtb_train"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                    long_functions.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert not long_files and not long_functions, long_files + long_functions
