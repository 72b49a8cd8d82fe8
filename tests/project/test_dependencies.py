"""Installs are locked: uv.lock is in step with pyproject.toml, what scripts/setup.sh installed is
what the lock names, and the ranges the library asks for keep upper bounds where an API modelport
uses has broken before."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).with_name("uv")  # the uv scripts/setup.sh pins into the virtual environment
# Distributions whose APIs modelport uses beyond what they promise to keep (and that broke it before)
BOUNDED = {"sentry-sdk": "3.0.1", "uvicorn": "0.55.0"}


def _locked() -> dict[str, set[Version]]:
    """Each locked distribution's releases (a universal lock may hold several, one per Python range)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    releases: dict[str, set[Version]] = {}
    for package in lock["package"]:
        releases.setdefault(canonicalize_name(package["name"]), set()).add(Version(package["version"]))
    return releases


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    return [Requirement(line) for line in lines]


def test_the_lock_is_in_step_with_pyproject() -> None:
    result = subprocess.run(
        [str(UV), "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_what_setup_installed_is_what_the_lock_names() -> None:
    locked = _locked()
    differing = []
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name in locked and name != "modelport":
            installed = Version(dist.version)
            # the PyTorch CPU build on disk carries a local label (2.13.0+cpu) for the locked 2.13.0
            if Version(installed.base_version if installed.local else dist.version) not in locked[name]:
                differing.append(f"{name} {dist.version} installed, {sorted(map(str, locked[name]))} locked")
    assert not differing, differing


def test_apis_that_broke_before_have_upper_bounds_the_lock_satisfies() -> None:
    locked = _locked()
    for requirement in _requirements():
        name = canonicalize_name(requirement.name)
        if name not in BOUNDED:
            continue
        uppers = [spec for spec in requirement.specifier if spec.operator in ("<", "<=", "~=", "==")]
        assert uppers, f"{requirement} has no upper bound"
        assert all(release in requirement.specifier for release in locked[name])
        assert Version(BOUNDED[name]) in requirement.specifier, f"{requirement} refuses the release tested here"


def test_setup_installs_through_the_lock_and_waits_for_the_dpkg_lock() -> None:
    script = (ROOT / "scripts" / "setup.sh").read_text()
    assert "export --quiet --frozen" in script
    assert re.search(r'pip install .*-c "\$CONSTRAINTS"', script)
    # every apt-get waits for another apt-get holding the dpkg lock instead of failing at once
    assert not re.findall(r"apt-get (?:-\S+ )*(?:update|install)", script)
    assert len(re.findall(r'apt-get "\$\{wait\[@\]\}" (?:update|install)', script)) == 2
