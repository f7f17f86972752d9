"""environment.yml and pyproject.toml must list the same dependencies."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"python-isal": "isal"}


def _name(spec: str) -> str:
    return re.split(r"[<>=!\[ ;]", spec.strip().strip('"'), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(d) for d in meta["dependencies"]}
    wanted |= {_name(d) for d in meta["optional-dependencies"]["test"]}

    listed = set()
    text = (ROOT / "environment.yml").read_text().split("\ndependencies:", 1)[1]
    for line in text.splitlines():
        m = re.match(r"^\s+- +([^#]+?)\s*(#.*)?$", line)
        if not m or m.group(1).startswith("-e") or m.group(1).endswith(":"):
            continue
        name = _name(m.group(1))
        if name in ("python", "pip"):
            continue
        listed.add(CONDA_TO_PYPI.get(name, name))
    assert listed == wanted, (sorted(listed - wanted), sorted(wanted - listed))


def test_constraints_pin_every_direct_dependency():
    pins = {_name(l) for l in (ROOT / "constraints.txt").read_text().splitlines() if "==" in l}
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in meta["dependencies"] + meta["optional-dependencies"]["test"]:
        assert _name(dep) in pins, dep
