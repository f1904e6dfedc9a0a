"""The dispatch commands that need no server: plan, journal, and configuration errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SAMPLES
from crbio.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "crbio.toml"
    path.write_text(
        f"""
[laboratory]
finess = "920000015"
name = "Laboratoire des Charmes"
oid = "1.2.250.1.999.1"

[outbox]
path = "outbox.sqlite"

[destinations.dmp]
[destinations.mssante]
{extra}
""",
        encoding="utf-8",
    )
    return path


def test_plan_prints_deliveries_and_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "plan", SAMPLES / "13-identite-provisoire.json")
    assert status == 0, err
    assert "→ mssante  submit   professional" in out
    assert "✗ dmp" in out and "[ins.not-qualified]" in out


def test_plan_json_is_machine_readable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path, "[destinations.hl7v2]\nname = 'pfi'")
    status, out, _ = run(
        capsys, "plan", "--config", config, "--format", "json", SAMPLES / "07-mineure-beta-hcg.json"
    )
    assert status == 0
    (plan,) = json.loads(out)
    assert {d["channel"] for d in plan["deliveries"]} == {"dmp", "mssante", "hl7v2"}
    assert {s["reason"] for s in plan["suppressed"]} == {
        "masking.invisible-representants-legaux",
        "minor.secret-connection",
    }


def test_plan_of_a_bad_report_names_the_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}", encoding="utf-8")
    status, _, err = run(capsys, "plan", bad)
    assert status == 2 and "bad.json" in err


def test_send_queue_only_then_journal(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path)
    status, out, err = run(capsys, "send", "--config", config, "--queue-only", SAMPLES / "01-biochimie.json")
    assert status == 0, err
    status, out, _ = run(capsys, "journal", "--config", config, "--format", "json")
    rows = json.loads(out)
    assert len(rows) == 3 and {r["state"] for r in rows} == {"queued"}
    assert {r["channel"] for r in rows} == {"dmp", "mssante"}
    status, out, _ = run(capsys, "journal", "--config", config, "--format", "csv")
    assert out.splitlines()[0].startswith("document_id,version,channel")
    assert len(out.splitlines()) == 4
    status, out, _ = run(capsys, "journal", "--config", config)
    assert "queued" in out and "document_id" in out.splitlines()[0]
    status, out, _ = run(capsys, "journal", "--config", config, "--since", "2999-01-01")
    assert "(no entries)" in out


def test_journal_lists_suppressed_destinations(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path)
    run(capsys, "send", "--config", config, "--queue-only", SAMPLES / "11-invisible-patient-vih.json")
    status, out, _ = run(capsys, "journal", "--config", config, "--suppressed", "--format", "json")
    assert status == 0
    assert [r["reason"] for r in json.loads(out)] == ["masking.invisible-patient"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[laboratory]\nname = 'x'\noid = '1.2'\n", "laboratory.finess: required"),
        ("[laboratry]\n", "laboratry: unknown section"),
        ("[laboratory]\nfiness='1'\nname='x'\noid='1.2'\n[retry]\nmax_attempts = -1\n", "retry.max_attempts"),
        (
            "[laboratory]\nfiness='1'\nname='x'\noid='1.2'\n[destinations.fax]\n",
            "destinations.fax: unknown channel",
        ),
        ("not = [toml", "not valid TOML"),
    ],
)
def test_configuration_errors_name_the_setting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "crbio.toml"
    path.write_text(content, encoding="utf-8")
    status, _, err = run(capsys, "journal", "--config", path)
    assert status == 3 and message in err


def test_unknown_sender_is_a_configuration_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path, "[destinations.hl7v2]\nsender = 'carrier-pigeon'\n")
    status, out, err = run(
        capsys, "send", "--config", config, "--timeout", "2", SAMPLES / "01-biochimie.json"
    )
    # The deliveries stay queued; the worker reports the configuration problem and retries later.
    assert status == 0
    status, out, _ = run(capsys, "journal", "--config", config, "--format", "json")
    hl7 = [r for r in json.loads(out) if r["channel"] == "hl7v2"]
    assert hl7 and "unknown sender 'carrier-pigeon'" in hl7[0]["last_error"]


def test_simulate_without_the_simulate_extra_says_what_to_install(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.delitem(sys.modules, "crbio.simulators.smtp", raising=False)
    monkeypatch.setitem(sys.modules, "aiosmtpd", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "aiosmtpd.controller", None)
    status, _, err = run(capsys, "simulate", "--dir", tmp_path / "sim")
    assert status == 3 and "pip install 'crbio[simulate]'" in err
