"""The committed lock (constraints.txt) and pyproject.toml agree, and every install path goes through it.

A fresh clone must install the versions that were tested, not whatever was released since; and a
dependency added to pyproject.toml without re-locking (scripts/update-pins.sh) must fail here, not in a
user's install next month.
"""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
# Left out of the lock on purpose: CPU machines install torch==2.13.0 beside it, GPU machines their
# own CUDA build (README "Set-up").
UNLOCKED = {"torch"}
INSTALL = "pip install -c constraints.txt torch==2.13.0 -e '.[dev]' && python -m pytest"


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        requirements += [Requirement(line) for line in extra]
    return {canonicalize_name(r.name): r for r in requirements}


def parse_lock(text: str) -> tuple[dict[str, Version], set[str]]:
    """(every pin, the names pip-compile says come straight from pyproject.toml)."""
    pins: dict[str, Version] = {}
    direct: set[str] = set()
    current = None
    for line in text.splitlines():
        pin = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line.strip())
        if pin and not line.startswith(" "):
            current = canonicalize_name(pin.group(1))
            pins[current] = Version(pin.group(2))
        elif current and "kronos-service (pyproject.toml)" in line:
            direct.add(current)
        elif not line.startswith(" "):
            current = None
    return pins, direct


def lock_disagreements(requirements: dict[str, Requirement], lock_text: str) -> list[str]:
    pins, direct = parse_lock(lock_text)
    problems = []
    for name, requirement in sorted(requirements.items()):
        if name in UNLOCKED:
            continue
        if name not in pins:
            problems.append(f"{name} is in pyproject.toml but not pinned in constraints.txt")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{name}=={pins[name]} is outside pyproject.toml's range {requirement.specifier}")
    for name in sorted(direct - requirements.keys()):
        problems.append(f"{name} is pinned as a direct dependency but pyproject.toml no longer asks for it")
    return problems


def test_lock_pins_exactly_what_pyproject_declares():
    assert lock_disagreements(declared(), LOCK.read_text()) == []


def test_the_check_catches_a_dependency_added_to_pyproject_only():
    requirements = declared()
    requirements["left-pad"] = Requirement("left-pad>=1.0")
    assert lock_disagreements(requirements, LOCK.read_text()) == [
        "left-pad is in pyproject.toml but not pinned in constraints.txt"
    ]
    requirements = declared()
    dropped = next(name for name in sorted(requirements) if name not in UNLOCKED)
    del requirements[dropped]
    assert lock_disagreements(requirements, LOCK.read_text()) == [
        f"{dropped} is pinned as a direct dependency but pyproject.toml no longer asks for it"
    ]


def test_every_pin_is_exact_and_torch_is_left_to_the_installer():
    text = LOCK.read_text()
    pins, _ = parse_lock(text)
    assert len(pins) > 50  # the whole tree, transitive dependencies included
    requirement_lines = [line for line in text.splitlines() if line and not line.startswith(("#", " "))]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==\S+", line) for line in requirement_lines), requirement_lines
    assert "torch" not in pins
    assert "--unsafe-package=torch" in text  # pip-compile's own record of the command that made it


def test_readme_ci_and_pin_script_install_through_the_lock():
    readme = (ROOT / "README.md").read_text()
    assert f"```bash\n{INSTALL}\n```" in readme
    assert "pip install -c constraints.txt torch==2.13.0 -e . && kronos-serve" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert INSTALL in ci
    script = (ROOT / "scripts" / "update-pins.sh").read_text()
    assert "pip-compile" in script and "--unsafe-package torch" in script and "python -m pytest" in script
