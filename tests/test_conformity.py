"""``crbio conformity``: the catalogue end to end, user scenarios, bad files, real verdicts, the bundle."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import html

from conftest import ANS_KIT, SAMPLES
from crbio.cli import main
from crbio.conformity import CHECKS, ScenarioError, catalogue, load_scenario, resolve_scenarios
from crbio.conformity.scenario import default_name

CHROMIUM = Path("/usr/bin/chromium")
KIT_PRESENT = (ANS_KIT / "schematrons").is_dir() and importlib.util.find_spec("saxonche") is not None
# What the issue asks the catalogue to cover, at least.
REQUIRED = {
    "nominal",
    "amended-then-deleted",
    "masked-until-announcement",
    "minor-secret-connection",
    "identity-not-qualified",
    "opposition-dmp",
    "opposition-mssante",
    "subcontracted",
    "microbiology-antibiogram",
    "long-report",
    "fault-heals",
    "permanent-rejection",
}
EXTERNAL = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)


@dataclass(frozen=True)
class Run:
    status: int
    out: str
    err: str
    directory: Path

    @property
    def summary(self) -> dict[str, object]:
        data: dict[str, object] = json.loads((self.directory / "summary.json").read_text("utf-8"))
        return data

    def scenario(self, name: str) -> dict[str, object]:
        scenarios = self.summary["scenarios"]
        assert isinstance(scenarios, list)
        found: dict[str, object] = next(s for s in scenarios if s["name"] == name)
        return found


def conformity(directory: Path, *args: object) -> Run:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["conformity", "-o", str(directory), *map(str, args)])
    return Run(status, out.getvalue(), err.getvalue(), directory)


@pytest.fixture(scope="module")
def catalogue_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The whole catalogue, once for the module: with the ANS kit when it is there."""
    directory = tmp_path_factory.mktemp("evidence")
    return conformity(directory, *(["--ans-kit", ANS_KIT] if KIT_PRESENT else []))


def test_the_whole_catalogue_passes_with_the_ans_kit(catalogue_run: Run) -> None:
    if not KIT_PRESENT:
        pytest.skip(f"the ANS kit is not at {ANS_KIT} (or saxonche is missing): the kit's column is not run")
    assert catalogue_run.status == 0, catalogue_run.out + catalogue_run.err
    summary = catalogue_run.summary
    assert summary["passed"] is True and summary["ans_kit"]
    assert summary["checks"] == list(CHECKS)
    scenarios = summary["scenarios"]
    assert isinstance(scenarios, list)
    names = [s["name"] for s in scenarios]
    assert names == [default_name(p) for p in catalogue()] and set(names) >= REQUIRED
    for scenario in scenarios:
        assert scenario["verdict"] == "pass", scenario
        assert set(scenario["checks"]) == set(CHECKS)
        assert {c["status"] for c in scenario["checks"].values()} == {"pass"}, scenario["name"]
    # One line per scenario, then where the evidence is.
    lines = catalogue_run.out.strip().splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [["PASS", name] for name in names]
    assert lines[-1].endswith(str(catalogue_run.directory / "index.html"))


def test_the_bundle_holds_every_artefact(catalogue_run: Run) -> None:
    assert catalogue_run.status == 0, catalogue_run.out + catalogue_run.err
    root = catalogue_run.directory
    for name in REQUIRED:
        base = root / name
        assert (base / "scenario.toml").is_file() and (base / "checks.json").is_file()
        for suffix in (
            "input.json",
            "n3.xml",
            "n1.xml",
            "pdf",
            "n3.html",
            "n3.validation.json",
            "n1.validation.txt",
        ):
            assert (base / "reports" / f"v1.{suffix}").stat().st_size > 0, (name, suffix)
        assert (base / "reports" / "v1.page1.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        step = base / "steps" / "1-send"
        for file in ("plan.json", "journal.json", "journal.csv", "events.json", "acknowledgements.json"):
            assert (step / file).is_file(), (name, file)
        assert json.loads((step / "journal.json").read_text("utf-8")), name
    nominal = root / "nominal"
    soap = (nominal / "steps" / "1-send" / "dmp" / "01-ITI-41-success.soap.xml").read_text("utf-8")
    assert "ProvideAndRegisterDocumentSetRequest" in soap and "Assertion" in soap
    assert len(list((nominal / "received" / "mssante-smtp").glob("*.eml"))) == 2
    assert len(list((nominal / "received" / "hl7v2").glob("*.hl7"))) == 1
    listing = next((nominal / "steps" / "1-send" / "mssante").glob("*.xdm.txt")).read_text("utf-8")
    assert "IHE_XDM/SUBSET01/METADATA.XML" in listing and "IHE_XDM/SUBSET01/DOC0001.XML" in listing
    # The amendment, then the deletion: three steps, a journal for each.
    amended = root / "amended-then-deleted" / "steps"
    assert sorted(p.name for p in amended.iterdir()) == ["1-send", "2-replace", "3-delete"]
    # The permanent rejection's reason is in the journal.
    journal = json.loads(
        (root / "permanent-rejection" / "steps" / "1-send" / "journal.json").read_text("utf-8")
    )
    dead = [line for line in journal if line["state"] == "dead"]
    assert [line["channel"] for line in dead] == ["dmp"] and "XDSUnknownPatientId" in dead[0]["last_error"]
    # The long report really has several pages.
    checks = json.loads((root / "long-report" / "checks.json").read_text("utf-8"))
    assert any("at least 3 expected" in line["text"] and line["ok"] for line in checks["build"]["lines"])


def _external_references(page: Path) -> list[str]:
    tree = html.fromstring(page.read_bytes())
    found = []
    for element in tree.iter():
        for attribute in ("src", "href", "srcdoc", "data", "poster", "action"):
            value = element.get(attribute)
            if value and EXTERNAL.match(value):
                found.append(f"{element.tag}@{attribute}={value[:80]}")
        if element.tag in ("script", "link", "object", "embed"):
            found.append(f"<{element.tag}>")
    css = " ".join(style.text_content() for style in tree.iter("style"))
    found += re.findall(r"(?:@import|url\()\s*['\"]?(?:https?:)?//[^'\")]+", css)
    return found


def test_the_bundle_loads_nothing_from_the_network(catalogue_run: Run) -> None:
    root = catalogue_run.directory
    pages = [root / "index.html", *sorted(root.glob("*/reports/*.n3.html"))]
    assert len(pages) > len(REQUIRED)
    for page in pages:
        assert _external_references(page) == [], page.relative_to(root)


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_index_html_renders_in_headless_chromium(catalogue_run: Run, tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium): the rendering check is skipped")
    index = catalogue_run.directory / "index.html"
    dumped = _chromium("--dump-dom", index.as_uri(), profile=tmp_path / "profile-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = html.fromstring(dumped.stdout)
    rows = dom.xpath("//table[@class='summary']/tbody/tr")
    names = [default_name(p) for p in catalogue()]
    assert [row.xpath("string(th/a)") for row in rows] == names, catalogue_run.out
    for row in rows:
        assert len(row.xpath("td")) == len(CHECKS) + 1
    for name in names:
        (section,) = dom.xpath(f"//section[@id='s-{name}']")
        assert section.xpath(".//iframe") and section.xpath(".//img"), (
            f"{name}: no rendered CDA or PDF picture"
        )
    # A picture of the page as a browser draws it, kept as a test artefact.
    shot = tmp_path / "conformity.png"
    drawn = _chromium(
        f"--screenshot={shot}", "--window-size=1280,2000", index.as_uri(), profile=tmp_path / "profile-shot"
    )
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    picture = shot.read_bytes()
    assert picture.startswith(b"\x89PNG\r\n\x1a\n") and len(picture) > 20_000
    artefacts = os.environ.get("CRBIO_TEST_ARTIFACTS")
    if artefacts:
        Path(artefacts).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(artefacts) / "conformity.png")


USER_REPORT = """
title = "A user scenario: haematology without its copy recipient, an MSSanté hiccup"

[reports.hemato]
input = "hemato.json"
drop = ["copy_recipients"]
set = { "patient.oppositions.dmp" = true }

[[steps]]
action = "send"
report = "hemato"
faults = [{ server = "mssante", fault = "busy", times = 1 }]

[steps.expect]
deliveries = { "mssante:professional" = "submit", "mssante:patient" = "submit", hl7v2 = "submit" }
suppressed = { dmp = ["opposition.dmp"] }
mssante_professionals = ["yann.legoff@medecin.mssante.fr"]
attempts = { "mssante:professional" = 2, "mssante:patient" = 1 }
dmp_status = { hemato = "absent" }
hl7_flags = { DESTDMP = "N" }
"""


def test_a_user_scenario_file_runs_beside_a_builtin_one(tmp_path: Path) -> None:
    shutil.copyfile(SAMPLES / "02-hemogramme.json", tmp_path / "hemato.json")
    scenario = tmp_path / "my-hemato.toml"
    scenario.write_text(USER_REPORT, encoding="utf-8")
    run = conformity(tmp_path / "evidence", "--scenarios", "identity-not-qualified", scenario)
    assert run.status == 0, run.out + run.err
    mine = run.scenario("my-hemato")
    assert mine["verdict"] == "pass" and mine["builtin"] is False
    assert mine["checks"]["ans_kit"]["status"] == "not run"  # type: ignore[index]
    assert run.scenario("identity-not-qualified")["verdict"] == "pass"
    built = json.loads((run.directory / "my-hemato" / "reports" / "hemato.input.json").read_text("utf-8"))
    assert "copy_recipients" not in built and built["patient"]["oppositions"] == {"dmp": True}
    assert "(ANS kit not run: give --ans-kit DIR)" in run.out


def test_a_scenario_in_json(tmp_path: Path) -> None:
    scenario = {
        "title": "JSON works too",
        "reports": {"v1": {"input": "sample:13-identite-provisoire"}},
        "steps": [
            {
                "action": "send",
                "report": "v1",
                "expect": {
                    "deliveries": {"mssante:professional": "submit", "hl7v2": "submit"},
                    "suppressed": {"dmp": ["ins.not-qualified"], "mssante:patient": ["ins.not-qualified"]},
                },
            }
        ],
    }
    path = tmp_path / "07-provisional.json"
    path.write_text(json.dumps(scenario), encoding="utf-8")
    loaded = load_scenario(path)
    assert loaded.name == "provisional" and loaded.steps[0].expect.deliveries["hl7v2"] == "submit"
    assert loaded.reports["v1"].report.patient.qualified_ins is None


def test_a_wrong_expectation_fails_and_exits_1(tmp_path: Path) -> None:
    # The nominal scenario, expecting what does not happen: the checks must notice.
    text = (catalogue()[0]).read_text("utf-8")
    assert 'dmp_status = { v1 = "Approved" }' in text
    wrong = text.replace('dmp_status = { v1 = "Approved" }', 'dmp_status = { v1 = "Deprecated" }')
    wrong = wrong.replace('"X-MSS-INS" = "O"', '"X-MSS-INS" = "N"')
    wrong = wrong.replace('obx11 = "F"', 'obx11 = "C"')
    path = tmp_path / "wrong.toml"
    path.write_text(wrong, encoding="utf-8")
    run = conformity(tmp_path / "evidence", "--scenarios", path)
    assert run.status == 1, run.out + run.err
    assert run.out.splitlines()[0].startswith("FAIL  wrong")
    checks = run.scenario("wrong")["checks"]
    assert isinstance(checks, dict)
    assert {name: c["status"] for name, c in checks.items()} == {
        "build": "pass",
        "xsd_rules": "pass",
        "ans_kit": "not run",
        "pdfa": "pass",
        "plan": "pass",
        "deliveries": "pass",
        "messages": "fail",
        "lifecycle": "fail",
    }
    failed = checks["messages"]["failed"] + checks["lifecycle"]["failed"]
    assert any("X-MSS-INS: expected N, got O" in line for line in failed)
    assert any("OBX-11: expected C, got F" in line for line in failed)
    assert any("DMP entry of v1: expected Deprecated, got Approved" in line for line in failed)
    index = (run.directory / "index.html").read_text("utf-8")
    assert "1 OF 1 SCENARIOS FAIL" in index


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            ('deliveries = { dmp = "submit",', 'deliveries = { dmp = "sbmit",'),
            "steps[1].expect.deliveries.dmp",
        ),
        (("[steps.expect]", "[steps.expect]\nsuprressed = {}"), "steps[1].expect.suprressed"),
        (('report = "v1"', 'report = "v9"'), "steps[1].report"),
        (('input = "sample:01-biochimie"', 'input = "sample:99-nothing"'), "reports.v1.input"),
        (
            ('input = "sample:01-biochimie"', 'input = "sample:01-biochimie"\ndrop = ["patient.nope"]'),
            "reports.v1.drop",
        ),
        (
            ('input = "sample:01-biochimie"', 'input = "sample:01-biochimie"\nset = { "patient.sex" = "X" }'),
            "reports.v1: the report is invalid: $.patient.sex",
        ),
        (
            ('action = "send"', 'action = "send"\nfaults = [{ server = "dmp", fault = "boom" }]'),
            "steps[1].faults[0].fault",
        ),
        (('DESTDMP = "Y"', 'DESTDNP = "Y"'), "steps[1].expect.hl7_flags.DESTDNP"),
        (("[steps.expect]", "[steps.expect]\n"), None),
    ],
)
def test_a_bad_scenario_names_the_file_and_the_field(
    tmp_path: Path, change: tuple[str, str], field: str | None
) -> None:
    text = catalogue()[0].read_text("utf-8")
    assert change[0] in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(change[0], change[1], 1), encoding="utf-8")
    if field is None:
        assert load_scenario(path).name == "bad"  # the control: the untouched file loads
        return
    with pytest.raises(ScenarioError) as raised:
        load_scenario(path)
    assert str(raised.value).startswith(f"bad.toml: {field}"), raised.value


def test_a_bad_scenario_file_exits_2_before_running_anything(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(
        catalogue()[0].read_text("utf-8").replace('"mssante:patient" = "submit"', '"mssante:patient" = 1')
    )
    run = conformity(tmp_path / "evidence", "--scenarios", "nominal", path)
    assert run.status == 2
    assert "broken.toml: steps[1].expect.deliveries.mssante:patient: must be one of" in run.err
    assert not (tmp_path / "evidence" / "nominal").exists()
    not_toml = tmp_path / "notes.toml"
    not_toml.write_text("title = \n", encoding="utf-8")
    assert conformity(tmp_path / "evidence", "--scenarios", not_toml).status == 2
    assert conformity(tmp_path / "evidence", "--scenarios", "no-such-scenario").status == 2


def test_list_shows_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformity", "--list"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == [s.name for s in resolve_scenarios(None)]
    assert main(["conformity"]) == 2  # neither --list nor -o


def test_a_missing_extra_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pypdfium2", None)  # as if it were not installed
    assert main(["conformity", "-o", str(tmp_path), "--scenarios", "nominal"]) == 3
    assert "pip install 'crbio[conformity]'" in capsys.readouterr().err
