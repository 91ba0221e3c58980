"""The repository keeps its promises: one test command, pinned versions, clean code."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys

import pytest
import yaml
from packaging.requirements import Requirement

import optimlib
from tests.repository.project_files import (
    DISTRIBUTION,
    PIN,
    REPO_ROOT,
    constraints,
    normalise,
    pyproject,
    tool,
)


def _requirement_name(requirement: str) -> str:
    return normalise(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])


def _direct_requirements() -> list[str]:
    """Runtime, book and test requirements that apply to this Python."""
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    requirements = project["dependencies"] + extras["book"] + extras["docs"] + extras["test"]
    return [
        requirement
        for requirement in requirements
        if Requirement(requirement).marker is None or Requirement(requirement).marker.evaluate()
    ]


def _environment_pins() -> dict[str, str]:
    environment = yaml.safe_load((REPO_ROOT / "environment.yml").read_text(encoding="utf-8"))
    (pip_section,) = [entry for entry in environment["dependencies"] if isinstance(entry, dict)]
    pins = {}
    for line in pip_section["pip"]:
        match = PIN.match(line)
        if match:
            pins[normalise(match[1])] = match[2]
    return pins


def test_ci_runs_the_readmes_test_command_verbatim():
    ci_lines = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    command = ci_lines[-1]
    assert "python -m pytest" in command and "-c constraints.txt" in command
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert f"\n{command}\n" in readme, "README command (b) and .ci/run differ"


def test_the_readmes_build_command_builds_with_warnings_as_errors():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "jupyter-book build . -n -W --keep-going" in readme
    assert "_build/html/index.html" in readme


def test_constraints_pin_the_verified_versions():
    pins = constraints()
    assert pins["torch"] == "2.14.1"
    assert pins["torchvision"] == "0.29.1"
    assert pins["jupyter-book"] == "1.0.4.post1"
    for requirement in _direct_requirements():
        assert _requirement_name(requirement) in pins, f"{requirement} is not pinned"


def test_pyproject_keeps_lower_bounds_only():
    for requirement in _direct_requirements():
        assert "==" not in requirement, f"exact pin in pyproject.toml: {requirement}"
    assert "jupyter-book>=1.0.4,<2" in _direct_requirements()


def test_environment_yml_pins_equal_the_constraints():
    pins, environment = constraints(), _environment_pins()
    direct = {_requirement_name(requirement) for requirement in _direct_requirements()}
    assert direct <= set(environment), f"missing from environment.yml: {direct - set(environment)}"
    for name, version in environment.items():
        assert pins.get(name) == version, (
            f"environment.yml pins {name}=={version}, constraints.txt {pins.get(name)}"
        )


def test_the_installed_environment_follows_the_constraints():
    pins = constraints()
    for requirement in _direct_requirements():
        name = _requirement_name(requirement)
        installed = importlib.metadata.version(name)
        assert installed == pins[name], f"{name} {installed} installed, {pins[name]} pinned"


def test_package_version_and_type_marker():
    assert optimlib.__version__ == importlib.metadata.version(DISTRIBUTION)
    assert (REPO_ROOT / "optimlib" / "py.typed").is_file()


def test_ruff_is_clean():
    result = subprocess.run(
        [tool("ruff"), "check", str(REPO_ROOT)], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "path",
    [
        "_config.yml",
        "_toc.yml",
        "book",
        "chapters",
        "optimlib",
        "tests",
        "benchmarks",
        "environment.yml",
        "pyproject.toml",
        "README.md",
        ".ci/run",
        "constraints.txt",
        "book/references.bib",
        "book/preface.md",
        "book/setup.md",
        "book/notation.md",
    ],
)
def test_layout(path):
    assert (REPO_ROOT / path).exists()


def test_python_is_supported():
    # The tests run on 3.11 only, so that is the floor the package declares.
    assert pyproject()["project"]["requires-python"] == ">=3.11"
    assert sys.version_info >= (3, 10)
