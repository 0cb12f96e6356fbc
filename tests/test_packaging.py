"""The supported versions agree across pyproject.toml, noxfile.py and the README."""

from __future__ import annotations

import ast
import functools
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import django_safelive

ROOT = Path(__file__).resolve().parent.parent


def nox_matrix() -> list[tuple[str, str, str]]:
    """noxfile.py's MATRIX, read without importing nox."""
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "MATRIX":
            matrix: list[tuple[str, str, str]] = ast.literal_eval(node.value)
            return matrix
    raise AssertionError("noxfile.py has no MATRIX")


MATRIX = nox_matrix()


def classifier_versions(framework: str) -> set[str]:
    """The X.Y versions of `framework` among pyproject.toml's classifiers."""
    text = (ROOT / "pyproject.toml").read_text()
    return set(re.findall(rf'"{framework} :: (\d+\.\d+)"', text))


def readme_versions(name: str) -> set[str]:
    """The versions listed on the README's requirements line for `name`."""
    text = (ROOT / "README.md").read_text()
    line = re.search(rf"^- {name} ([\d., ]+)", text, re.MULTILINE)
    assert line, f"README.md lists no {name} versions"
    return set(re.findall(r"\d+\.\d+", line.group(1)))


def test_django_versions_agree() -> None:
    """Every Django series is a classifier, tested by nox, and in the README."""
    tested = {django for _, django, _ in MATRIX}
    assert classifier_versions("Framework :: Django") == tested
    assert readme_versions("Django") == tested


def test_python_versions_agree() -> None:
    """Every Python version is a classifier, tested by nox, and in the README."""
    tested = {python for python, _, _ in MATRIX}
    assert classifier_versions("Programming Language :: Python") == tested
    assert readme_versions("Python") == tested


def test_both_drivers_tested_on_every_django() -> None:
    """psycopg2 and psycopg 3 are each tested on every Django series."""
    for django in {django for _, django, _ in MATRIX}:
        drivers = {driver for _, series, driver in MATRIX if series == django}
        assert drivers == {"psycopg2", "psycopg"}, django


def test_public_names_are_exported() -> None:
    """Everything in __all__ exists and has a docstring."""
    for name in django_safelive.__all__:
        assert getattr(django_safelive, name).__doc__, name


def test_api_reference_covers_every_public_module() -> None:
    """docs/api.md documents each public module's __all__, all with docstrings."""
    from django_safelive import channels, hypothesis, runner, schemathesis

    api = (ROOT / "docs" / "api.md").read_text()
    for module in (django_safelive, hypothesis, runner, schemathesis, channels):
        assert f".. automodule:: {module.__name__}\n   :members:" in api
        for name in module.__all__:
            assert inspect.getdoc(getattr(module, name)), f"{module.__name__}.{name}"


@pytest.mark.once
@pytest.mark.parametrize(
    ("extra", "module", "needs"),
    [
        ("schemathesis", "django_safelive.schemathesis", "yaml"),
        ("asgi", "django_safelive._core.asgi_server", "uvicorn, wsproto"),
        ("channels", "django_safelive.channels", "uvicorn, wsproto"),
    ],
)
def test_extra_installs_what_its_module_imports(
    tmp_path: Path, extra: str, module: str, needs: str
) -> None:
    """A clean venv with only django-safelive[extra] imports the extra's module
    and what the module needs at run time."""
    uv = shutil.which("uv")
    assert uv, "uv is not on PATH: install it as the README says (pip install uv)"
    run = functools.partial(subprocess.run, check=True, capture_output=True, text=True)
    run([uv, "build", "--wheel", "--out-dir", str(tmp_path), str(ROOT)])
    (wheel,) = tmp_path.glob("django_safelive-*.whl")
    venv = tmp_path / "venv"
    run([uv, "venv", "--python", sys.executable, str(venv)])
    python = venv / "bin" / "python"
    run([uv, "pip", "install", "--python", str(python), f"{wheel}[{extra}]"])
    imported = run(
        [
            str(python),
            "-c",
            f"import sys, {module}, {needs}; "
            "print(sorted(m for m in sys.modules if m.startswith('django_safelive')))",
        ],
        cwd=tmp_path,
    ).stdout
    assert module in imported
    assert "django_safelive._tools" not in imported
