"""The built wheel carries the data folders that live outside src/ (fixed layout)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT

DATA_FOLDERS = ("templates", "schemas", "stylesheets", "samples")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{result.stderr[-2000:]}")
    [path] = out.glob("crbio-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_ships_every_data_file(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for folder in DATA_FOLDERS:
        for file in (ROOT / folder).rglob("*"):
            if file.is_file() and "output" not in file.relative_to(ROOT).parts:
                assert f"crbio/_data/{file.relative_to(ROOT).as_posix()}" in names, file
    assert not [n for n in names if n.startswith("crbio/_data/samples/output/")]


def test_the_wheel_ships_package_data(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    package = ROOT / "src" / "crbio"
    for file in package.rglob("*"):
        if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
            assert f"crbio/{file.relative_to(package).as_posix()}" in names, file
    assert any(
        name.endswith("/entry_points.txt") and b"crbio = crbio.cli:main" in wheel.read(name) for name in names
    )


def test_tests_and_tooling_stay_out_of_the_wheel(wheel: zipfile.ZipFile) -> None:
    assert not [n for n in wheel.namelist() if n.startswith(("tests/", "bench/", ".ci/"))]
