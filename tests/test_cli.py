"""The ``crbio`` command line: exit codes, messages, files written (or not)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import ANS_KIT, SAMPLES, sample_files
from crbio.cli import main

SAMPLE = SAMPLES / "01-biochimie.json"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def broken(tmp_path: Path, change: Callable[[dict[str, Any]], None], name: str = "report.json") -> Path:
    data = json.loads(SAMPLE.read_text("utf-8"))
    change(data)
    path = tmp_path / name
    path.write_text(json.dumps(data, ensure_ascii=False), "utf-8")
    return path


def test_build_the_bundled_samples(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, err = run(capsys, "build", "--samples", "-o", tmp_path)
    assert status == 0, err
    names = {p.name for p in tmp_path.iterdir()}
    for sample in sample_files():
        assert {f"{sample.stem}.n3.xml", f"{sample.stem}.n1.xml", f"{sample.stem}.pdf"} <= names
        assert sample.name in out
    assert "crbio-cda.xsl" in names


def set_path(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is KeyError:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return change


BAD_INPUTS = [
    ("wrong INS key", set_path("patient.ins.matricule", "279035121518988"), "$.patient.ins.matricule"),
    ("INS on a non-qualified identity", set_path("patient.identity_status", "VALI"), "$.patient.ins"),
    (
        "malformed LOINC",
        set_path("chapters.0.batteries.0.observations.0.loinc", "14749"),
        "$.chapters[0].batteries[0].observations[0].loinc",
    ),
    ("missing biologist", set_path("biologist", KeyError), "$.biologist"),
    (
        "unknown unit",
        set_path("chapters.0.batteries.1.observations.0.value.unit", "mmoll"),
        "$.chapters[0].batteries[1].observations[0].value.unit",
    ),
    ("empty results", set_path("chapters", []), "$.chapters"),
    (
        "empty battery",
        set_path("chapters.0.batteries.0.observations", []),
        "$.chapters[0].batteries[0].observations",
    ),
    ("bad RPPS key", set_path("prescriber.rpps", "10100023456"), "$.prescriber.rpps"),
]


@pytest.mark.parametrize(("what", "change", "field"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_exits_2_names_the_field_and_writes_nothing(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    what: str,
    change: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    source = broken(tmp_path / "in", change) if (tmp_path / "in").mkdir() is None else None
    out_dir = tmp_path / "out"
    status, out, err = run(capsys, "build", source, "-o", out_dir)
    assert status == 2
    assert field in err and "report.json" in err
    assert "Traceback" not in err
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_one_bad_report_does_not_stop_the_others(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = broken(tmp_path, set_path("patient.ins.matricule", "279035121518988"), "bad.json")
    status, out, err = run(capsys, "build", bad, SAMPLE, "-o", tmp_path / "out")
    assert status == 2
    assert "bad.json" in err and "01-biochimie.json" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix != ".xsl") == [
        "01-biochimie.n1.xml",
        "01-biochimie.n3.xml",
        "01-biochimie.pdf",
    ]


def test_unreadable_and_non_json_inputs_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    not_json = tmp_path / "notes.json"
    not_json.write_text("{ this is not json", "utf-8")
    status, _, err = run(capsys, "build", not_json, tmp_path / "missing.json", "-o", tmp_path / "out")
    assert status == 2
    assert "notes.json: input is not JSON" in err and "missing.json: cannot be read" in err


def test_build_without_input_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run(capsys, "build", "-o", tmp_path)
    assert status == 2 and "--samples" in err


def test_validate_good_bad_and_unreadable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "build", SAMPLE, "-o", tmp_path)[0] == 0
    n3 = tmp_path / "01-biochimie.n3.xml"
    status, out, _ = run(capsys, "validate", n3, tmp_path / "01-biochimie.n1.xml")
    assert status == 0 and out.count("valid (xsd, crbio, pdfa)") == 2

    bad = tmp_path / "bad.xml"
    bad.write_bytes(n3.read_bytes().replace(b'unit="mmol/L"', b'unit="mmoll"', 1))
    status, out, _ = run(capsys, "validate", bad, "--format", "json")
    assert status == 1
    [report] = json.loads(out)
    assert report["ok"] is False and "ucum" in {f["rule"] for f in report["findings"]}

    garbage = tmp_path / "garbage.xml"
    garbage.write_bytes(b"<ClinicalDocument>")
    status, _, err = run(capsys, "validate", garbage)
    assert status == 2 and "garbage.xml" in err and "not well-formed" in err


@pytest.mark.skipif(not (ANS_KIT / "schematrons").is_dir(), reason=f"the ANS kit is not at {ANS_KIT}")
def test_build_and_validate_with_the_ans_kit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("saxonche", reason="saxonche is not installed (pip install 'crbio[ans]')")
    assert run(capsys, "build", SAMPLE, "-o", tmp_path, "--ans-kit", ANS_KIT)[0] == 0
    status, out, _ = run(capsys, "validate", tmp_path / "01-biochimie.n3.xml", "--ans-kit", ANS_KIT)
    assert status == 0 and "ans:" in out


def test_render_writes_html(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "build", SAMPLE, "-o", tmp_path)[0] == 0
    html = tmp_path / "view" / "report.html"
    status, _, _ = run(capsys, "render", tmp_path / "01-biochimie.n3.xml", "-o", html)
    assert status == 0
    assert b"PAT-TROIS" in html.read_bytes()
    status, _, err = run(capsys, "render", tmp_path / "nothing.xml", "-o", html)
    assert status == 2 and "nothing.xml: cannot be read" in err


def test_console_script_is_installed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "crbio.cli", "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stdout.startswith("crbio ")
