"""The Bento ships exactly the modules the service imports, and builds offline."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("features", "training", "serving")

pytestmark = pytest.mark.slow


def _module_file(module: str) -> Path | None:
    path = REPO.joinpath(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _project_imports(path: Path) -> set[str]:
    """Project modules imported anywhere in ``path`` (top level or in functions), and names imported from them."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in PACKAGES}


def service_closure() -> set[str]:
    """Repository files reachable from ``serving/service.py`` through imports (packages' ``__init__`` included)."""
    seen: dict[str, Path] = {}
    todo = ["serving.service"]
    while todo:
        module = todo.pop()
        path = _module_file(module)
        if path is None or module in seen:
            continue  # a name imported from a module, not a module
        seen[module] = path
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run their __init__
        todo.extend(_project_imports(path))
    return {str(p.relative_to(REPO)) for p in seen.values()}


def test_the_bento_holds_exactly_what_the_service_imports(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    build = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (src,) = (tmp_path / "bentoml" / "bentos" / "clvcast").glob("*/src")
    shipped = {str(p.relative_to(src)) for p in src.rglob("*") if p.is_file() and p.name != "bentofile.yaml"}
    closure = service_closure()
    assert "serving/service.py" in closure and "training/registry.py" in closure
    assert shipped == closure, (
        f"shipped but not imported by the service: {sorted(shipped - closure)}; "
        f"imported but not shipped: {sorted(closure - shipped)}"
    )
