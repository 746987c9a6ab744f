"""Imports flow one way (docs/design.md, "Layers"): a package imports only those listed for it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: package -> the project packages it may import.
ALLOWED = {
    "services": set(),
    "pipelines": {"services"},
    "demodata": {"pipelines", "services"},
    "featurestore": {"pipelines", "services"},
    "tracking": {"services"},
    "training": {"featurestore", "pipelines", "tracking", "services"},
    "jobs": {"training", "tracking", "featurestore", "pipelines", "services"},
    "dashboard": {"jobs", "training", "tracking", "featurestore", "pipelines", "services"},
    "eegfs": {
        "dashboard",
        "jobs",
        "training",
        "tracking",
        "featurestore",
        "demodata",
        "pipelines",
        "services",
    },
    "feature_repo": set(),
}
OURS = set(ALLOWED)


def _imported_packages(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & OURS


def test_every_package_on_disk_has_a_layer():
    on_disk = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert on_disk <= OURS, f"add {sorted(on_disk - OURS)} to ALLOWED (and to docs/design.md)"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_flow_one_way(package):
    root = REPO / package
    wrong = {
        str(path.relative_to(REPO)): sorted(bad)
        for path in root.rglob("*.py")
        if (bad := _imported_packages(path) - ALLOWED[package] - {package})
    }
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}: {wrong}"
