"""The package list in pyproject.toml matches the packages on disk, and a non-editable install
of the project imports every one of them (from the installed copy, not from this checkout)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOT_INSTALLED = {"tests", "benchmarks", "feature_repo", "docs", "data"}


def _packages_on_disk() -> set[str]:
    return {
        p.parent.name
        for p in REPO.glob("*/__init__.py")
        if p.parent.name not in NOT_INSTALLED and not p.parent.name.startswith(".")
    }


def _included_patterns() -> set[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return {pattern.removesuffix("*") for pattern in include}


def test_pyproject_lists_exactly_the_packages_on_disk():
    assert _included_patterns() == _packages_on_disk()


def test_non_editable_install_imports_every_package(tmp_path):
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "data", "build", "*.egg-info", "__pycache__", ".coverage*", "htmlcov"
        ),
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["--disable-pip-version-check", "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = wheels.glob("*.whl")
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(target)}))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--disable-pip-version-check"]
        + ["--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    packages = sorted(_packages_on_disk())
    script = (
        "import importlib, pathlib, sys\n"
        f"for name in {packages!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert pathlib.Path(module.__file__).is_relative_to({str(site)!r}), module.__file__\n"
        "print('imported', len(sys.modules))\n"
    )
    # Dependencies come from this environment's site-packages, added as a plain path entry (its
    # .pth files, the editable install of this checkout among them, are not processed).
    dependencies = sysconfig.get_path("purelib")
    result = subprocess.run(
        [str(target / "bin" / "python"), "-c", script],
        env={"PYTHONPATH": dependencies, "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
