"""``crbio batch``: discovery, bad inputs, the report, resuming, SIGKILL, --jobs, --validate full, --send.

Every test runs the real command (``main([...])`` or a child process) on real files in
``tmp_path``, with a real process pool. Inputs are the bundled samples or reports made by
``bench/generate_inputs.py``.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from lxml import etree

from conftest import ANS_KIT, ROOT, SAMPLES
from crbio.cli import main

HAVE_SAXON = importlib.util.find_spec("saxonche") is not None
NEEDS_KIT = pytest.mark.skipif(
    not (ANS_KIT / "schematrons" / "moteur").is_dir() or not HAVE_SAXON,
    reason=f"needs the ANS kit in {ANS_KIT} and saxonche (pip install 'crbio[ans]')",
)
CHILD_ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_inputs", ROOT / "bench" / "generate_inputs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    status = main(["batch", *(str(a) for a in args), "--progress", "log", "--log-every", "3600"])
    out, err = capsys.readouterr()
    return status, out, err


def report(outdir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((outdir / "batch-report.json").read_text("utf-8"))
    return data


def entries(outdir: Path) -> dict[str, dict[str, Any]]:
    return {Path(e["path"]).name: e for e in report(outdir)["inputs"]}


def copy_sample(name: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SAMPLES / name, target)
    return target


def changed_sample(name: str, target: Path, change: Any) -> Path:
    data = json.loads((SAMPLES / name).read_text("utf-8"))
    change(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, ensure_ascii=False), "utf-8")
    return target


def outputs(outdir: Path) -> dict[str, bytes]:
    """Every document under outdir (not the report, the manifest or the stylesheet)."""
    return {
        p.relative_to(outdir).as_posix(): p.read_bytes()
        for p in sorted(outdir.rglob("*"))
        if p.is_file() and p.name.endswith((".n3.xml", ".n1.xml", ".pdf"))
    }


def assert_complete_documents(outdir: Path) -> None:
    """No half-written file: no temporary left, each N3/N1 parses, each PDF is whole."""
    leftovers = [p.name for p in outdir.rglob("*.tmp")]
    assert leftovers == [], leftovers
    for name, data in outputs(outdir).items():
        if name.endswith(".xml"):
            etree.fromstring(data)
        else:
            assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF"), name


# --- discovery ----------------------------------------------------------------------------------


def test_directories_and_globs_mirror_the_folders(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    copy_sample("01-biochimie.json", tmp_path / "in" / "lab-a" / "r1.json")
    copy_sample("04-serologie.json", tmp_path / "in" / "lab-b" / "deep" / "r2.json")
    (tmp_path / "in" / "README.txt").write_text("not a report", "utf-8")  # ignored in a folder
    (tmp_path / "in" / ".hidden.json").write_text("{", "utf-8")  # hidden: ignored
    copy_sample("07-mineure-beta-hcg.json", tmp_path / "other" / "x" / "r3.json")
    out = tmp_path / "in" / "out"  # inside an input folder: never read back as input

    status, stdout, err = run(capsys, tmp_path / "in", f"{tmp_path}/other/**/*.json", "-o", out, "--jobs", 2)

    assert status == 0, err
    assert sorted(outputs(out)) == [
        "lab-a/r1.n1.xml", "lab-a/r1.n3.xml", "lab-a/r1.pdf",
        "lab-b/deep/r2.n1.xml", "lab-b/deep/r2.n3.xml", "lab-b/deep/r2.pdf",
        "x/r3.n1.xml", "x/r3.n3.xml", "x/r3.pdf",
    ]  # fmt: skip
    # Each folder of documents gets the stylesheet they point to.
    for folder in ("lab-a", "lab-b/deep", "x"):
        assert (out / folder / "crbio-cda.xsl").is_file()
    assert "3 inputs" in stdout and "3 built" in stdout and str(out / "batch-report.json") in stdout
    # A re-run does not take the report (a .json inside an input folder) as an input.
    status, stdout, _ = run(capsys, tmp_path / "in", f"{tmp_path}/other/**/*.json", "-o", out)
    assert status == 0 and "3 skipped" in stdout


def test_two_inputs_with_the_same_outputs_clash(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    first = copy_sample("01-biochimie.json", tmp_path / "a" / "report.json")
    second = copy_sample("04-serologie.json", tmp_path / "b" / "report.json")
    out = tmp_path / "out"

    status, _, err = run(capsys, tmp_path / "a", tmp_path / "b", "-o", out)

    assert status == 2
    by_path = {e["path"]: e for e in report(out)["inputs"]}
    assert by_path[str(first)]["outcome"] == "built"
    clash = by_path[str(second)]
    assert clash["outcome"] == "unusable" and clash["outputs"] == []
    assert clash["error"]["code"] == "batch.clash" and str(first) in clash["error"]["message"]
    assert f"{second}: unusable: its outputs would overwrite those of {first}" in err
    # The first input's documents are the ones on disk.
    assert b"1.2.250.1.999.1.1.2024.1001.1" in (out / "report.n3.xml").read_bytes()


# --- bad inputs ---------------------------------------------------------------------------------

# A local conformity profile in the ANS kit's layout: every schematron the kit runs, the
# volet refusing orders whose id starts with REJET. It makes a valid report non-conformant.
_SCHEMATRON = """<?xml version="1.0" encoding="UTF-8"?>
<schema xmlns="http://purl.oclc.org/dsdl/schematron" queryBinding="xslt2">
  <ns prefix="cda" uri="urn:hl7-org:v3"/>
  <pattern id="{name}">{rule}</pattern>
</schema>
"""
_REFUSE_ORDER = """
    <rule context="cda:inFulfillmentOf/cda:order/cda:id">
      <assert test="not(starts-with(@extension, 'REJET'))">Commande refusée par le profil local.</assert>
    </rule>"""
_ANYTHING = """
    <rule context="cda:ClinicalDocument"><assert test="cda:title">Le titre est obligatoire.</assert></rule>"""


def local_kit(root: Path) -> Path:
    kit = root / "local-kit"
    moteur = kit / "schematrons" / "moteur"
    moteur.mkdir(parents=True)
    for xsl in (ANS_KIT / "schematrons" / "moteur").glob("*.xsl"):
        shutil.copyfile(xsl, moteur / xsl.name)
    from crbio.validation.anskit import DEFAULT_VOLET, PROFILES

    for relative, rule in [(f"{DEFAULT_VOLET}.sch", _REFUSE_ORDER), *((p, _ANYTHING) for p in PROFILES)]:
        path = kit / "schematrons" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_SCHEMATRON.format(name=Path(relative).stem, rule=rule), "utf-8")
    (kit / "jeuxDeValeurs").mkdir()
    return kit


@NEEDS_KIT
def test_bad_inputs_are_reported_and_the_rest_converted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRBIO_CACHE_DIR", str(tmp_path / "cache"))
    kit = local_kit(tmp_path)
    folder = tmp_path / "in"
    copy_sample("01-biochimie.json", folder / "good-1.json")
    copy_sample("13-identite-provisoire.json", folder / "good-2.json")
    (folder / "not-json.json").write_text('{"format": 1,', "utf-8")

    def schema_error(data: dict[str, Any]) -> None:
        data["document"]["version"] = "one"
        del data["patient"]["sex"]

    changed_sample("02-hemogramme.json", folder / "schema-error.json", schema_error)
    changed_sample(
        "04-serologie.json",
        folder / "refused.json",
        lambda d: d["order_id"].update(extension="REJET-0001"),
    )
    (folder / "gone.json").symlink_to(folder / "deleted-since.json")  # listed, cannot be read
    (folder / "ignored.txt").write_text("a folder's other files are ignored", "utf-8")
    notes = tmp_path / "notes.txt"  # named explicitly: an error entry
    notes.write_text("not a report", "utf-8")
    out = tmp_path / "out"

    status, stdout, err = run(
        capsys, folder, notes, "-o", out, "--jobs", 2, "--validate", "full", "--ans-kit", kit
    )

    assert status == 2  # an unusable input outweighs a non-conformant one
    data = report(out)
    by_name = {Path(e["path"]).name: e for e in data["inputs"]}
    assert sorted(by_name) == [
        "gone.json", "good-1.json", "good-2.json", "not-json.json", "notes.txt", "refused.json",
        "schema-error.json",
    ]  # fmt: skip
    assert data["counts"] == {"built": 2, "skipped": 0, "invalid": 1, "unusable": 4, "failed": 0}
    assert data["complete"] is True and data["exit_status"] == 2
    assert data["options"]["validate"] == "full" and data["options"]["jobs"] == 2

    good = by_name["good-1.json"]
    assert good["outcome"] == "built" and good["error"] is None
    assert good["outputs"] == ["good-1.n1.xml", "good-1.n3.xml", "good-1.pdf"]
    assert good["document_id"] == "1.2.250.1.999.1.1.2024.1001.1"
    assert all((out / name).is_file() for name in good["outputs"])

    assert by_name["not-json.json"]["error"] == {
        "code": "input.not-json",
        "field": None,
        "message": "input is not JSON: Expecting property name enclosed in double quotes "
        "at line 1, column 14",
    }
    schema = by_name["schema-error.json"]
    assert schema["outcome"] == "unusable"
    assert (schema["error"]["code"], schema["error"]["field"]) == ("input.invalid", "$.document.version")
    assert [d["field"] for d in schema["error"]["details"]] == ["$.document.version", "$.patient.sex"]
    refused = by_name["refused.json"]
    assert refused["outcome"] == "invalid" and refused["outputs"] == []
    assert refused["error"]["code"] == "validation.failed"
    assert refused["error"]["field"] == "/ClinicalDocument/inFulfillmentOf/order/id"
    assert "Commande refusée par le profil local." in refused["error"]["message"]
    assert by_name["gone.json"]["error"]["code"] == "input.unreadable"
    assert by_name["notes.txt"]["error"]["code"] == "input.unsupported"
    assert not (out / "refused.n3.xml").exists() and not (out / "schema-error.n3.xml").exists()

    # One line on stderr per input that did not convert, naming the file and the field.
    problems = [line for line in err.splitlines() if line.startswith("crbio: ")]
    assert len(problems) == 5
    assert (
        f"crbio: {folder / 'schema-error.json'}: unusable: $.document.version: must be of type integer" in err
    )
    assert "2 built, 0 skipped, 1 invalid, 4 unusable" in stdout
    # Nothing of the patients' data in the report or the messages.
    for text in (json.dumps(data, ensure_ascii=False), err):
        assert "PAT-TROIS" not in text and "279035121518989" not in text

    # Alone, the non-conformant report exits with 1.
    status, _, _ = run(
        capsys, folder / "refused.json", "-o", tmp_path / "out-2", "--validate", "full", "--ans-kit", kit
    )
    assert status == 1


def test_full_validation_needs_a_kit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    copy_sample("01-biochimie.json", tmp_path / "r.json")
    status, _, err = run(capsys, tmp_path / "r.json", "-o", tmp_path / "out", "--validate", "full")
    assert status == 3 and "--validate full needs --ans-kit" in err
    status, _, err = run(
        capsys, tmp_path / "r.json", "-o", tmp_path / "out", "--validate", "full", "--ans-kit", tmp_path
    )
    assert status == 3 and "is not the ANS conformity kit" in err


# --- resuming -----------------------------------------------------------------------------------


def test_a_rerun_skips_what_is_done_and_redoes_what_changed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    for name in (
        "01-biochimie.json",
        "04-serologie.json",
        "07-mineure-beta-hcg.json",
        "11-invisible-patient-vih.json",
    ):
        copy_sample(name, folder / name)
    out = tmp_path / "out"
    assert run(capsys, folder, "-o", out)[0] == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix in (".xml", ".pdf")}

    status, stdout, _ = run(capsys, folder, "-o", out)

    assert status == 0 and "0 built, 4 skipped" in stdout
    assert {e["outcome"] for e in report(out)["inputs"]} == {"skipped"}
    assert report(out)["inputs"][0]["outputs"] == [
        "01-biochimie.n1.xml",
        "01-biochimie.n3.xml",
        "01-biochimie.pdf",
    ]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix in (".xml", ".pdf")} == stamps

    # A changed input is built again; a deleted output is written again; a half-written
    # file left by a killed batch is removed.
    changed_sample(
        "04-serologie.json",
        folder / "04-serologie.json",
        lambda d: d.update(conclusion="Conclusion revue."),
    )
    (out / "07-mineure-beta-hcg.pdf").unlink()
    (out / "01-biochimie.n3.xml").write_bytes(b"<damaged/>")
    (out / ".11-invisible-patient-vih.n3.xml.k2j4h.tmp").write_bytes(b"<Clinical")

    status, stdout, _ = run(capsys, folder, "-o", out)

    assert status == 0
    outcomes = {name: e["outcome"] for name, e in entries(out).items()}
    assert outcomes == {
        "01-biochimie.json": "built",
        "04-serologie.json": "built",
        "07-mineure-beta-hcg.json": "built",
        "11-invisible-patient-vih.json": "skipped",
    }
    assert b"Conclusion revue." in (out / "04-serologie.n3.xml").read_bytes()
    assert (out / "07-mineure-beta-hcg.pdf").read_bytes().startswith(b"%PDF-")
    assert (out / "01-biochimie.n3.xml").read_bytes() != b"<damaged/>"
    assert_complete_documents(out)

    # Other options that change the outputs build everything again.
    status, stdout, _ = run(capsys, folder, "-o", out, "--stylesheet", "https://lab.example/cda.xsl")
    assert status == 0 and "4 built" in stdout
    assert b'href="https://lab.example/cda.xsl"' in (out / "01-biochimie.n3.xml").read_bytes()

    # An input that no longer converts loses its earlier documents: none stays beside a bad input.
    (folder / "01-biochimie.json").write_text("{", "utf-8")
    status, _, _ = run(capsys, folder, "-o", out, "--stylesheet", "https://lab.example/cda.xsl")
    assert status == 2
    entry = entries(out)["01-biochimie.json"]
    assert entry["removed_outputs"] == ["01-biochimie.n1.xml", "01-biochimie.n3.xml", "01-biochimie.pdf"]
    assert not (out / "01-biochimie.n3.xml").exists()


def test_a_batch_killed_midway_resumes_without_duplicates_or_partial_files(tmp_path: Path) -> None:
    count = 200
    generator().generate(count, tmp_path / "in", seed=7, results=10, per_dir=50)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "crbio.cli",
        "batch",
        str(tmp_path / "in"),
        "-o",
        str(out),
        "--jobs",
        "2",
    ]
    child = subprocess.Popen(
        [*command, "--validate", "off"],
        env=CHILD_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    manifest = out / ".crbio-batch-manifest.sqlite"
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and done < 20:
        time.sleep(0.1)
        if manifest.exists():
            with sqlite3.connect(manifest) as db:
                try:
                    done = db.execute("SELECT count(*) FROM entries").fetchone()[0]
                except sqlite3.OperationalError:
                    done = 0
            db.close()
    assert child.poll() is None, "the batch finished before it could be interrupted"
    os.kill(child.pid, signal.SIGKILL)  # the batch only: its workers must notice and stop
    child.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(child.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("worker processes outlived the killed batch")
    assert not (out / "batch-report.json").exists()

    finished = subprocess.run(
        [*command, "--validate", "off", "--progress", "none"], env=CHILD_ENV, capture_output=True, text=True
    )

    assert finished.returncode == 0, finished.stderr
    counts = report(out)["counts"]
    assert counts["built"] + counts["skipped"] == count and counts["skipped"] >= 20
    assert counts["built"] < count  # the work done before the kill was kept
    assert len(outputs(out)) == 3 * count
    assert_complete_documents(out)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker processes in /proc")
def test_a_worker_process_killed_midway_is_replaced(tmp_path: Path) -> None:
    count = 40
    generator().generate(count, tmp_path / "in", seed=11, results=10, per_dir=0)
    out = tmp_path / "out"
    child = subprocess.Popen(
        [sys.executable, "-m", "crbio.cli", "batch", str(tmp_path / "in"), "-o", str(out), "--jobs", "2"]
        + ["--validate", "off", "--progress", "none"],
        env=CHILD_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The workers are the processes that write documents: wait for the first ones, then kill
    # one of the busy processes outright, as the OOM killer would.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out.glob("*.pdf"))) < 3:
        time.sleep(0.05)
    # The pool's workers are forked by the forkserver, a child of the batch.
    servers = [p for p in children_of(child.pid) if b"forkserver" in Path(f"/proc/{p}/cmdline").read_bytes()]
    workers = [worker for server in servers for worker in children_of(server)]
    assert workers, "no worker process found"
    os.kill(workers[-1], signal.SIGKILL)
    stdout, stderr = child.communicate(timeout=120)

    assert child.returncode == 0, stderr
    assert "a worker process died; starting new ones" in stderr
    data = report(out)
    assert data["complete"] is True and data["counts"]["built"] == count
    assert len(outputs(out)) == 3 * count
    assert_complete_documents(out)


def test_another_batch_on_the_same_output_directory_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    copy_sample("01-biochimie.json", tmp_path / "r.json")
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".crbio-batch.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        status, _, err = run(capsys, tmp_path / "r.json", "-o", out)
    assert status == 2 and "another crbio batch is writing into it" in err


# --- determinism, progress ----------------------------------------------------------------------


def test_one_or_two_workers_give_the_same_documents_and_report(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    generator().generate(8, tmp_path / "in", seed=3, results=10, per_dir=4)
    assert run(capsys, tmp_path / "in", "-o", tmp_path / "one", "--jobs", 1)[0] == 0
    assert run(capsys, tmp_path / "in", "-o", tmp_path / "two", "--jobs", 2)[0] == 0

    one, two = outputs(tmp_path / "one"), outputs(tmp_path / "two")
    assert len(one) == 24 and one == two  # byte for byte: inputs give ids and creation times

    def stable(outdir: Path) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in e.items() if k not in ("path", "seconds")} for e in report(outdir)["inputs"]
        ]

    assert stable(tmp_path / "one") == stable(tmp_path / "two")  # same entries, same order


def test_plain_log_lines_when_not_on_a_terminal(tmp_path: Path) -> None:
    generator().generate(3, tmp_path / "in", seed=5, per_dir=0)
    (tmp_path / "in" / "broken.json").write_text("[]", "utf-8")

    child = subprocess.run(
        [sys.executable, "-m", "crbio.cli", "batch", str(tmp_path / "in"), "-o", str(tmp_path / "out")]
        + ["--jobs", "2", "--log-every", "0"],
        env=CHILD_ENV,
        capture_output=True,
        text=True,
    )

    assert child.returncode == 2
    lines = child.stderr.splitlines()
    assert lines[0] == "crbio batch: started with 2 worker(s), validation own"
    progress = [line for line in lines if line.startswith("crbio batch: ") and "inputs" in line]
    assert len(progress) == 4  # one per input with --log-every 0
    assert progress[-1].startswith("crbio batch: 4/4 inputs (100%): 3 built, 1 unusable; ")
    assert (
        f"crbio: {tmp_path / 'in' / 'broken.json'}: unusable: $: must be a JSON object [input.invalid]"
        in lines
    )
    assert "\x1b[" not in child.stderr  # no terminal escapes in a log
    assert child.stdout.startswith("batch: 4 inputs in ")


def test_progress_bar(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    copy_sample("01-biochimie.json", tmp_path / "in" / "r.json")
    status = main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--progress", "bar"])
    _, err = capsys.readouterr()
    assert status == 0
    assert "crbio batch" in err and "1/1" in err and "built 1" in err


# --- the ANS kit, --send ------------------------------------------------------------------------


@NEEDS_KIT
def test_full_validation_with_the_ans_kit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    copy_sample("01-biochimie.json", tmp_path / "in" / "r1.json")
    out = tmp_path / "out"

    # One worker: the kit compiles once per worker process (about 15 s here).
    status, stdout, err = run(
        capsys, tmp_path / "in", "-o", out, "--jobs", 1, "--validate", "full", "--ans-kit", ANS_KIT
    )

    assert status == 0, err
    assert "1 built" in stdout and report(out)["options"]["validate"] == "full"
    assert len(outputs(out)) == 3


CONFIG = """
[laboratory]
finess = "920000015"
name = "Laboratoire des Charmes"
oid = "1.2.250.1.999.1"

[outbox]
path = "outbox.sqlite"

[destinations.dmp]
sender = "dmp"
url = "https://127.0.0.1:9/dmp"

[destinations.mssante]
sender = "smtp"
host = "127.0.0.1"
port = 9
from = "laboratoire@labo.mssante.fr"
"""


def deliveries(outbox: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(outbox) as db:
        rows = db.execute("SELECT document_id, key FROM deliveries ORDER BY key").fetchall()
    db.close()
    return [(r[0], r[1]) for r in rows]


def test_send_queues_each_document_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "crbio.toml"
    config.write_text(CONFIG, "utf-8")
    outbox = tmp_path / "outbox.sqlite"
    folder = tmp_path / "in"
    copy_sample("01-biochimie.json", folder / "r1.json")
    copy_sample("10-accents-apostrophes.json", folder / "r2.json")
    out = tmp_path / "out"

    # Built without --send first: the next run queues what it skips, as it was built.
    assert run(capsys, folder, "-o", out)[0] == 0
    copy_sample("04-serologie.json", folder / "r3.json")
    status, stdout, err = run(capsys, folder, "-o", out, "--send", "--config", config)

    assert status == 0, err
    by_name = entries(out)
    assert [by_name[n]["outcome"] for n in ("r1.json", "r2.json", "r3.json")] == [
        "skipped",
        "skipped",
        "built",
    ]
    queued = deliveries(outbox)
    assert {doc for doc, _ in queued} == {e["document_id"] for e in by_name.values()}
    assert sum(e["queued"] for e in by_name.values()) == len(queued) > 3
    assert f"outbox: {len(queued)} deliveries queued in {outbox}" in stdout
    with sqlite3.connect(outbox) as db:
        stored = dict(db.execute("SELECT document_id, n3 FROM documents").fetchall())
    db.close()
    assert stored[by_name["r1.json"]["document_id"]] == (out / "r1.n3.xml").read_bytes()

    # A re-run queues nothing new.
    status, stdout, _ = run(capsys, folder, "-o", out, "--send", "--config", config)
    assert status == 0 and "outbox: 0 deliveries queued" in stdout
    assert deliveries(outbox) == queued

    # A changed report under the same document id cannot be sent: the outbox holds the other content.
    changed_sample(
        "01-biochimie.json", folder / "r1.json", lambda d: d.update(conclusion="Autre conclusion.")
    )
    status, _, err = run(capsys, folder, "-o", out, "--send", "--config", config)
    assert status == 2
    entry = entries(out)["r1.json"]
    assert entry["outcome"] == "unusable" and entry["error"]["code"] == "batch.already-queued"
    assert entry["error"]["field"] == "$.document.id"
    assert deliveries(outbox) == queued


def test_send_needs_a_configuration(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRBIO_CONFIG", raising=False)
    copy_sample("01-biochimie.json", tmp_path / "r.json")
    status, _, err = run(capsys, tmp_path / "r.json", "-o", tmp_path / "out", "--send")
    assert status == 3 and "--send needs --config" in err
