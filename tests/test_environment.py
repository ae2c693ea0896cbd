"""environment.yml installs what the tests run on: the torch/torchvision that tests/bootstrap.sh pins, inside
pyproject.toml's ranges, with the package extras the README's commands use."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PINNED = ("torch", "torchvision")


def _env() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def _pip_lines(env: dict) -> list[str]:
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1, "environment.yml needs exactly one `pip:` list"
    return [str(x).strip() for x in pips[0]]


def _conda_specs(env: dict) -> dict[str, str]:
    """``{"python": "3.11", "pip": ""}`` from the conda dependency strings."""
    out = {}
    for d in env["dependencies"]:
        if isinstance(d, str):
            m = re.match(r"^([A-Za-z0-9_.-]+)\s*(.*)$", d)
            out[m.group(1).lower()] = m.group(2).lstrip("=").strip()
    return out


def _env_pins() -> dict[str, Version]:
    pins = {}
    for line in _pip_lines(_env()):
        if line.startswith("-"):
            continue
        req = Requirement(line)
        if req.name in PINNED:
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"{line!r} must be an exact == pin"
            pins[req.name] = Version(specs[0].version)
    return pins


def _bootstrap_pins() -> dict[str, Version]:
    text = (ROOT / "tests" / "bootstrap.sh").read_text()
    pins = {}
    for name in PINNED:
        found = set(re.findall(rf'["\s]{name}==([0-9][^"\s]*)', text))
        assert len(found) == 1, f"tests/bootstrap.sh should pin {name} exactly once, found {sorted(found)}"
        pins[name] = Version(found.pop())
    return pins


def _editable_extras(line: str) -> set[str]:
    m = re.fullmatch(r"-e\s+\.(?:\[([^\]]*)\])?", line.strip())
    assert m, f"not an editable install of the project: {line!r}"
    return {x.strip() for x in (m.group(1) or "").split(",") if x.strip()}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_torch_pins_equal_bootstrap() -> None:
    env, boot = _env_pins(), _bootstrap_pins()
    assert set(env) == set(PINNED), f"environment.yml pins {sorted(env)}, expected {PINNED}"
    assert env == boot, f"environment.yml {env} differs from tests/bootstrap.sh {boot}"


def test_pins_admitted_by_pyproject() -> None:
    ranges = {Requirement(d).name: Requirement(d).specifier for d in _pyproject()["project"]["dependencies"]}
    for name, version in _env_pins().items():
        assert name in ranges, f"{name} is pinned in environment.yml but not a dependency in pyproject.toml"
        assert ranges[name].contains(version), f"{name}=={version} is outside pyproject.toml's {ranges[name]}"


def test_no_conda_torch_that_would_shadow_the_pins() -> None:
    env = _env()
    specs = _conda_specs(env)
    assert not {"pytorch", "torch", "torchvision", "pytorch-cuda"} & set(specs), \
        f"conda packages {sorted(specs)} would install a second torch beside the pip pins"
    assert "pytorch" not in env.get("channels", []), "the pytorch conda channel stops at torch 2.5"
    assert "pip" in specs, "the pip section needs pip in the conda dependencies"
    python = specs.get("python", "")
    assert python, "environment.yml must pin python"
    requires = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert requires.contains(Version(python.rstrip(".*"))), f"python {python} outside requires-python {requires}"


def test_installs_the_extras_the_readme_commands_use() -> None:
    editable = [x for x in _pip_lines(_env()) if x.startswith("-e")]
    assert len(editable) == 1, "environment.yml should install the project once, editable"
    have = _editable_extras(editable[0])
    defined = set(_pyproject()["project"].get("optional-dependencies", {}))
    assert have <= defined, f"extras {sorted(have - defined)} are not defined in pyproject.toml"
    wanted: set[str] = set()
    for source in ("README.md", "tests/bootstrap.sh"):
        text = (ROOT / source).read_text()
        for m in re.finditer(r"pip install[^\n`]*?-e\s+\"?\.\[([^\]]*)\]", text):
            wanted |= {x.strip() for x in m.group(1).split(",") if x.strip()}
    assert wanted, "found no `pip install -e .[...]` in README.md or tests/bootstrap.sh"
    assert wanted <= have, f"environment.yml lacks extras {sorted(wanted - have)} that README/bootstrap install"


@pytest.mark.parametrize("line, extras", [("-e .[offline-text,test]", {"offline-text", "test"}), ("-e .", set())])
def test_editable_extras_parser(line: str, extras: set[str]) -> None:
    assert _editable_extras(line) == extras
    with pytest.raises(AssertionError):
        _editable_extras("-e ../other[test]")
