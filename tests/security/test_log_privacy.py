"""No patient data in logs or error messages, on every path, with every logger at DEBUG.

The patients' identity values are collected from ``samples/*.json`` and from the PID segments
of the HL7 fixtures: birth and used family names, given names, the INS matricule (with and
without the usual spaces, and its first 13 digits, the NIR), the birth date as ISO, French
``dd/mm/yyyy`` and HL7 ``yyyymmdd``, address lines, city, phone numbers, e-mail addresses,
local ids (IPP). Only *distinctive* values are searched, so that a hit means a leak: at least
4 characters (6 for digits only), matched as whole words, case-insensitively, and absent from
everything in the inputs that is not the patient (the laboratory, the professionals, the
specimens, the ORU configuration). That leaves out, for instance, a given name shared with a
prescriber ("ANTOINE" and the prescriber ``antoine.meyer@…``), a city that is also the
laboratory's ("Saint-Brieuc", "Brest"), or "ANDRE" inside "ProvideAndRegister" (whole words).

Then, in this process with the root logger at DEBUG and a handler keeping every record (its
formatted message, its arguments and its exception text), the test runs ``crbio build`` on
every sample and HL7 fixture, a broken input of each kind (JSON, CDA, HL7 v2), a
``crbio conformity`` run (without the ANS kit), and ``crbio send`` + ``crbio worker`` +
``crbio returns`` against the simulators with faults, a DMP that does not know one patient
and an MSSanté address that bounces; ``crbio batch`` runs in a child process (its workers are
processes) whose stderr and ``batch-report.json`` are scanned too. Every log line and every
line on stderr must be free of those values; so must stdout, except ``crbio send``'s and
``crbio journal``'s, which list the recipients by design (a patient's MSSanté address is
``<INS>@patient.mssante.fr``): those are the journal, not logs.

Third-party loggers count: crbio keeps aiosmtpd (``mail.log``: every SMTP line, so RCPT TO
the patient's INS address and the subject with the name and birth date), signxml (the VIHF it
signs holds the INS) and httpcore at WARNING (:func:`crbio.dispatch.redaction.quiet_third_party_loggers`).

CPU time (``time.process_time()`` of this process plus the batch child's ``RUSAGE_CHILDREN``)
is about 30 s on the development machine, the conformity run being about half of it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from crbio.cli import main
from crbio.dispatch.redaction import THIRD_PARTY_LOGGERS
from crbio.simulators.run import Simulation

SAMPLES = ROOT / "samples"
HL7 = ROOT / "tests" / "fixtures" / "hl7"
OUTPUT = SAMPLES / "output"


# -- the values to look for -------------------------------------------------------------------


def _ins_forms(ins: str) -> set[str]:
    spaced = " ".join((ins[0], ins[1:3], ins[3:5], ins[5:7], ins[7:10], ins[10:13], ins[13:]))
    return {ins, spaced, ins[:13]}


def _date_forms(iso: str) -> set[str]:
    day = date.fromisoformat(iso)
    return {iso, day.strftime("%d/%m/%Y"), day.strftime("%Y%m%d")}


def _sample_values(patient: dict[str, Any]) -> set[str]:
    values: set[str] = set()
    for key in ("birth_family_name", "used_family_name", "first_birth_given_name", "used_given_name"):
        if patient.get(key):
            values.add(patient[key])
    values.update((patient.get("birth_given_names") or "").split())
    if patient.get("birth_given_names"):
        values.add(patient["birth_given_names"])
    if patient.get("ins"):
        values |= _ins_forms(patient["ins"]["matricule"])
    if patient.get("birth_date"):
        values |= _date_forms(patient["birth_date"])
    if patient.get("ipp"):
        values.add(patient["ipp"]["extension"])
    people = [patient, *(patient.get("legal_representatives") or [])]
    for person in people:
        address = person.get("address") or {}
        for key in ("street_name", "unit_id", "city", "additional_locator"):
            if address.get(key):
                values.add(address[key])
        if address.get("street_name") and address.get("house_number"):
            values.add(f"{address['house_number']} {address['street_name']}")
        for telecom in person.get("telecom") or []:
            values.add(str(telecom["value"]).split(":", 1)[-1])
        name = person.get("name") or {}
        values.update(v for v in [name.get("family"), *(name.get("given") or [])] if v)
    return values


def _hl7_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _segments(text: str) -> list[str]:
    return [s for s in re.split(r"[\r\n\x0b\x1c]+", text) if s.strip()]


def _components(fields: list[str], n: int) -> list[list[str]]:
    raw = fields[n] if len(fields) > n else ""
    return [repetition.split("^") for repetition in raw.split("~") if repetition]


def _hl7_values(text: str) -> set[str]:
    values: set[str] = set()
    for segment in _segments(text):
        fields = segment.split("|")
        if fields[0] != "PID":
            continue

        def field(n: int, fields: list[str] = fields) -> list[list[str]]:
            return _components(fields, n)

        for identifier in field(3):
            values.add(identifier[0])
            if len(identifier) > 4 and identifier[4] == "INS":
                values |= _ins_forms(identifier[0])
        for name in field(5):
            values.update(part for part in name[:3] if part)
            values.update(name[2].split() if len(name) > 2 else [])
        for birth in field(7):
            if len(birth[0]) >= 8:
                iso = f"{birth[0][:4]}-{birth[0][4:6]}-{birth[0][6:8]}"
                values |= _date_forms(iso)
        for address in field(11):
            values.update(part for part in address[:3] if part)
        for phone in field(13):
            values.update(part for part in phone if part.startswith(("+", "0")))
    return values


def _background() -> str:
    """Everything in the inputs that is not about a patient: a value found here is not distinctive."""
    parts: list[str] = []
    for path in sorted(SAMPLES.glob("*.json")):
        report = json.loads(path.read_text(encoding="utf-8"))
        report.pop("patient", None)
        parts.append(json.dumps(report, ensure_ascii=False))
    for path in sorted(HL7.glob("*.hl7")):
        # NTE comments are free text that may quote the patient ("requested by DOMINIQUE PAT-TROIS").
        # Only segments: garbage.hl7 quotes a patient too.
        segments = [s for s in _segments(_hl7_text(path)) if re.match(r"[A-Z][A-Z0-9]{2}\|", s)]
        parts += [s for s in segments if not s.startswith(("PID", "NK1", "PD1", "NTE"))]
    parts.append((HL7 / "crbio-oru.toml").read_text(encoding="utf-8"))
    return "\n".join(parts)


def _word(value: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w]){re.escape(value)}(?![\w])", re.IGNORECASE)


def patient_values() -> dict[str, re.Pattern[str]]:
    """The distinctive patient values of the samples and the HL7 fixtures, as whole-word patterns."""
    values: set[str] = set()
    for path in sorted(SAMPLES.glob("*.json")):
        values |= _sample_values(json.loads(path.read_text(encoding="utf-8"))["patient"])
    for path in sorted(HL7.glob("*.hl7")):
        values |= _hl7_values(_hl7_text(path))
    background = _background()
    kept: dict[str, re.Pattern[str]] = {}
    for value in sorted(v.strip() for v in values):
        short = len(value) < (6 if value.replace(" ", "").isdigit() else 4)
        if short or _word(value).search(background):
            continue
        kept[value] = _word(value)
    return kept


VALUES = patient_values()


def test_the_value_list_is_meaningful() -> None:
    # Guard against a collection that silently finds nothing: every sample's INS, birth names
    # and birth date forms, and the HL7 fixtures' own patients, are searched.
    for expected in (
        "279035121518989",
        "2 79 03 51 215 189 89",
        "PAT-TROIS",
        "DOMINIQUE MARIE-LOUISE",
        "28/03/1979",
        "19790328",
        "avenue de Breteuil",
        "+33647151010",
        "D'ALMEIDA-LEFEVRE",
        "PAT-QUATORZE",
        "12 rue Garibaldi",  # 03-serologie-latin1.hl7's address, in no sample
    ):
        assert expected in VALUES, expected
    assert "ANTOINE" not in VALUES  # also a prescriber's given name
    assert len(VALUES) > 150


# -- capturing -------------------------------------------------------------------------------


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)  # message, then exc_text and stack_info when there are
        self.lines.append(f"{text} args={record.args!r}")


@pytest.fixture
def captured() -> Iterator[_Keep]:
    root = logging.getLogger()
    handler = _Keep()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


class _Run:
    """The CLI in this process, with its stdout and stderr kept."""

    def __init__(self) -> None:
        self.scanned: list[tuple[str, str]] = []  # (where, text)
        self.journal: list[str] = []

    def __call__(self, *args: str | Path, stdout_is_journal: bool = False) -> int:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["--debug", *map(str, args)])
        label = f"crbio {args[0]}"
        self.scanned.append((f"{label} stderr", err.getvalue()))
        if stdout_is_journal:
            self.journal.append(out.getvalue())
        else:
            self.scanned.append((f"{label} stdout", out.getvalue()))
        return status


def _leaks(texts: list[tuple[str, str]]) -> list[str]:
    found: list[str] = []
    for where, text in texts:
        for line in text.splitlines():
            lowered = line.lower()
            for value, pattern in VALUES.items():
                match = pattern.search(line) if value.lower() in lowered else None
                if match is not None:
                    found.append(
                        f"{where}: {value!r} in …{line[max(0, match.start() - 150) : match.end() + 60]!r}"
                    )
    return found


# -- broken inputs of each kind --------------------------------------------------------------


def _broken_inputs(directory: Path) -> list[Path]:
    directory.mkdir()
    report = json.loads((SAMPLES / "01-biochimie.json").read_text(encoding="utf-8"))
    broken: dict[str, Any] = {}
    wrong_key = json.loads(json.dumps(report))
    wrong_key["patient"]["ins"]["matricule"] = "279035121518988"
    broken["bad-ins-key.json"] = wrong_key
    french_date = json.loads(json.dumps(report))
    french_date["patient"]["birth_date"] = "28/03/1979"
    broken["french-birth-date.json"] = french_date
    misplaced = json.loads(json.dumps(report))  # a mapping bug: the name in the sex field
    misplaced["patient"]["sex"] = report["patient"]["birth_family_name"]
    misplaced["patient"]["postal_code"] = report["patient"]["address"]["street_name"]
    broken["misplaced-name.json"] = misplaced
    paths = []
    for name, data in broken.items():
        (directory / name).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        paths.append(directory / name)
    text = (SAMPLES / "01-biochimie.json").read_text(encoding="utf-8")
    cut = text.index("avenue de Breteuil") + 10
    (directory / "truncated.json").write_text(text[:cut], encoding="utf-8")
    paths.append(directory / "truncated.json")
    n3 = (OUTPUT / "02-hemogramme.n3.xml").read_text(encoding="utf-8")
    (directory / "truncated.n3.xml").write_text(n3[: n3.index("PAT-QUATRE") + 20], encoding="utf-8")
    (directory / "no-birth-date.n3.xml").write_text(
        re.sub(r'<birthTime value="[0-9]+"/>', "<birthTime/>", n3, count=1), encoding="utf-8"
    )
    (directory / "an-n1.xml").write_bytes((OUTPUT / "02-hemogramme.n1.xml").read_bytes())
    paths += [directory / "truncated.n3.xml", directory / "no-birth-date.n3.xml", directory / "an-n1.xml"]
    oru = _hl7_text(HL7 / "01-biochimie-ins.hl7")
    (directory / "crbio-oru.toml").write_text((HL7 / "crbio-oru.toml").read_text(encoding="utf-8"))
    (directory / "local-loinc.csv").write_bytes((HL7 / "local-loinc.csv").read_bytes())
    pid = next(s for s in _segments(oru) if s.startswith("PID"))
    fields = pid.split("|")
    fields[7] = "28/03/1979"  # a birth date in the wrong format
    fields[8] = fields[5].split("^")[0]  # the family name as sex
    (directory / "bad-pid.hl7").write_text(oru.replace(pid, "|".join(fields)), encoding="utf-8")
    paths.append(directory / "bad-pid.hl7")
    return paths


def _without_recipients(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_recipients(v) for k, v in value.items() if k != "recipient"}
    if isinstance(value, list):
        return [_without_recipients(v) for v in value]
    return value


# -- the test --------------------------------------------------------------------------------


def test_no_patient_data_in_any_log_line_or_error_message(captured: _Keep, tmp_path: Path) -> None:
    started = time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = _Run()
    broken = _broken_inputs(tmp_path / "broken")

    # Build: every sample, every HL7 fixture (good and bad), every broken input.
    run(
        "build",
        *sorted(SAMPLES.glob("*.json")),
        *sorted(HL7.glob("*.hl7")),
        *broken,
        "-o",
        tmp_path / "build",
    )

    build_errors = run.scanned[0][1]
    for path in broken:  # each broken input was refused, with a message (scanned below)
        assert f"crbio: {path.name}: " in build_errors, path.name

    # Batch, in a child process with its own worker processes: stderr and the report are scanned.
    batch_out = tmp_path / "batch"
    child = subprocess.run(
        [sys.executable, "-m", "crbio", "--debug", "batch", SAMPLES, HL7, *broken, "-o", batch_out]
        + ["--jobs", "1", "--progress", "log"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert child.returncode == 2, child.stderr[-2000:]  # some inputs are unusable, on purpose
    run.scanned += [
        ("batch stderr", child.stderr),
        ("batch stdout", child.stdout),
        ("batch-report.json", (batch_out / "batch-report.json").read_text(encoding="utf-8")),
    ]

    # Conformity: every built-in scenario against the simulators (no ANS kit, to stay quick).
    assert run("conformity", "-o", tmp_path / "evidence") == 0

    # send + worker + returns against the simulators, with retryable faults, a patient unknown
    # to the DMP (its rejection quotes the patient id) and a bounce for a patient address.
    samples = sorted(SAMPLES.glob("*.json"))
    reports = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in samples}
    known = {r["patient"]["ins"]["matricule"] for r in reports.values() if r["patient"].get("ins")}
    unknown_ins = reports["04-serologie.json"]["patient"]["ins"]["matricule"]
    bounced = reports["02-hemogramme.json"]["patient"]["ins"]["matricule"] + "@patient.mssante.fr"
    with Simulation(
        tmp_path / "sim",
        fault_rate=0.15,
        seed=11,
        known_patients=known - {unknown_ins},
        unknown_recipients=[bounced],
        retry_delay=0.2,
    ) as sim:
        config = str(sim.config_path)
        run("send", "--config", config, "--queue-only", *samples, stdout_is_journal=True)
        assert run("worker", "--config", config, "--drain") == 0
        run("returns", "--config", config)
        run("journal", "--config", config, "--format", "json", stdout_is_journal=True)
        entries = json.loads(run.journal[-1])
    states = {entry["state"] for entry in entries}
    assert "dead" in states and "acknowledged" in states, states  # the error paths were taken
    assert any(e["channel"] == "dmp" and e["state"] == "dead" for e in entries)  # the unknown patient

    # The journal's free texts (reasons, acknowledgements) are error messages too.
    # The recipient (and its copy in the SMTP acknowledgement) is what the journal is for.
    journal_texts = [json.dumps(_without_recipients(entry), ensure_ascii=False) for entry in entries]
    leaks = _leaks([("log", line) for line in captured.lines])
    leaks += _leaks(run.scanned)
    leaks += _leaks([("journal", text) for text in journal_texts])
    assert not leaks, "\n".join(leaks[:40])

    # The third-party loggers known to write message content stayed quiet, even at DEBUG.
    for name in THIRD_PARTY_LOGGERS:
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
    assert len(captured.lines) > 500  # crbio's own DEBUG/INFO lines were captured and scanned
    cpu = time.process_time() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    print(f"log privacy: {len(captured.lines)} log records, {len(VALUES)} values, {cpu:.1f} s CPU")
