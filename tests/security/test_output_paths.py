"""Output file names derived from inputs and ids never lead a write out of the output folder.

Where names come from: ``crbio build`` and ``crbio merge`` name the outputs after the input
file's stem; ``Documents.write`` without a stem after the document's OID; ``crbio batch``
mirrors the input folders under OUTDIR (and removes an earlier run's outputs listed in its
manifest); the XDM zip's member names are fixed (``IHE_XDM/SUBSET01/DOC0001.XML``…). Every
write goes through :func:`crbio._files.write_atomically`, which refuses a name that is not one
plain file name, replaces (never follows) a symlink at a final name, and below an output
root refuses a symlinked folder.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

import crbio
from crbio._files import MAX_NAME_BYTES, check_file_name, write_atomically
from crbio.batch.manifest import ManifestEntry
from crbio.batch.worker import _remove_stale
from crbio.cli import main
from crbio.errors import ConfigurationError, InvalidReport
from crbio.input import load_report

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../escape.n3.xml",
        "/etc/crbio.n3.xml",
        "sub/x.pdf",
        "..\\escape.pdf",
        "nul\x00.pdf",
        "line\nbreak.pdf",
        "x" * (MAX_NAME_BYTES + 1),
        "é" * 128,  # 256 bytes in UTF-8
        "CON",
        "con.n3.xml",
        "NUL .pdf",
        "COM1.pdf",
        "lpt9.n1.xml",
    ],
)
def test_a_name_that_is_not_one_plain_file_name_is_refused(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    assert check_file_name(name) is not None
    with pytest.raises(ConfigurationError) as caught:
        write_atomically(out, {"ok.pdf": b"1", name: b"2"})
    assert caught.value.code == "config.output" and str(out) in str(caught.value)
    assert _tree(tmp_path) == []  # nothing written, not even the valid name


@pytest.mark.parametrize(
    "name",
    [
        "\uff0e\uff0e\uff0fescape.pdf",  # fullwidth dots and solidus
        "\u2024\u2024\u2215escape.pdf",  # one-dot leaders and a division slash
        "e\u0301te.pdf",  # decomposed é: another name than the composed one, still one name
        "CONSOLE.pdf",
        "x" * (MAX_NAME_BYTES - 4) + ".pdf",  # the longest name: its temporary name is shortened
    ],
)
def test_look_alikes_and_long_names_stay_one_file_in_the_folder(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    (written,) = write_atomically(out, {name: b"data"})
    assert written.parent == out and written.read_bytes() == b"data"
    assert os.listdir(out) == [name]


def test_a_symlink_at_a_final_name_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"untouched")
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.n3.xml").symlink_to(victim)
    write_atomically(out, {"report.n3.xml": b"<new/>"})
    assert victim.read_bytes() == b"untouched"
    assert not (out / "report.n3.xml").is_symlink() and (out / "report.n3.xml").read_bytes() == b"<new/>"


def test_a_symlinked_folder_inside_the_output_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(outside, target_is_directory=True)
    for directory in (out / "sub", out / "sub" / "deeper", out / ".." / "outside"):
        with pytest.raises(ConfigurationError) as caught:
            write_atomically(directory, {"r.pdf": b"x"}, root=out)
        assert caught.value.code == "config.output"
    assert _tree(outside) == []


def test_a_document_id_used_as_stem_cannot_be_a_path(tmp_path: Path) -> None:
    """Documents.write() without a stem names files after the OID, which the model checks."""
    data = json.loads((SAMPLES / "01-biochimie.json").read_text(encoding="utf-8"))
    data["document"]["id"] = "../../escape"
    with pytest.raises(InvalidReport) as caught:
        crbio.report_from_mapping(data)
    assert "$.document.id" in caught.value.fields


def test_crbio_build_refuses_an_input_whose_name_makes_a_bad_output_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = (SAMPLES / "01-biochimie.json").read_bytes()
    reserved = tmp_path / "CON.json"
    reserved.write_bytes(source)
    long = tmp_path / ("r" * 250 + ".json")  # fine as an input, too long once ".n3.xml" replaces ".json"
    long.write_bytes(source)
    out = tmp_path / "out"
    for path in (reserved, long):
        status = main(["build", str(path), "-o", str(out)])
        err = capsys.readouterr().err
        assert status == 3, err
        assert err.count("\n") == 1 and "Traceback" not in err and "output file name" in err
        assert not out.exists() or [p for p in out.iterdir() if p.suffix != ".xsl"] == []


def test_crbio_batch_refuses_a_symlink_planted_in_its_output_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in"
    (inputs / "lab-a").mkdir(parents=True)
    (inputs / "lab-a" / "r.json").write_bytes((SAMPLES / "01-biochimie.json").read_bytes())
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "lab-a").symlink_to(outside, target_is_directory=True)
    status = main(["batch", str(inputs), "-o", str(out), "--jobs", "1"])
    err = capsys.readouterr().err
    assert status == 3, err
    assert "symlink inside the output folder" in err and "Traceback" not in err
    assert _tree(outside) == []


def test_crbio_batch_removes_stale_outputs_only_inside_its_folder(tmp_path: Path) -> None:
    """A manifest is a file in OUTDIR: names it lists that lead elsewhere are left alone."""
    victim = tmp_path / "victim.pdf"
    victim.write_bytes(b"keep")
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "r.pdf").write_bytes(b"stale")
    (out / "link").symlink_to(tmp_path, target_is_directory=True)
    entry = ManifestEntry(
        "sub/r.json",
        "0" * 64,
        "{}",
        {"../victim.pdf": "", str(victim): "", "link/victim.pdf": "", "sub/r.pdf": ""},
        "1.2.3",
        "2024-01-01T00:00:00+00:00",
        "crbio-cda.xsl",
        None,
    )
    assert _remove_stale(out, entry) == ("sub/r.pdf",)
    assert victim.read_bytes() == b"keep"


def test_xdm_member_names_are_fixed(tmp_path: Path) -> None:
    """The IHE_XDM.ZIP's member names never come from the document or the recipient."""
    from datetime import UTC, datetime

    from crbio.dispatch.delivery import Action, Channel, Delivery, Job, Recipient, RecipientKind
    from crbio.dispatch.header import read_header
    from crbio.dispatch.senders.base import SenderContext
    from crbio.dispatch.xdm import build_xdm

    n3 = (SAMPLES / "output" / "01-biochimie.n3.xml").read_bytes()
    header = read_header(n3)
    delivery = Delivery(
        channel=Channel.MSSANTE,
        action=Action.SUBMIT,
        recipient=Recipient(RecipientKind.PROFESSIONAL, "../../x@medecin.mssante.fr"),
        document_id=header.document_id,
        version=header.version,
        replaces=None,
        metadata={"confidentiality": ["N"], "secret_connection": False},
    )
    job = Job(delivery, 1, n3, b"%PDF", None)
    context = SenderContext(
        laboratory_finess="920000015", laboratory_name="L", laboratory_oid="1.2.250.1.999.1"
    )
    zipped = build_xdm(job, context, submission_time=datetime(2024, 1, 4, tzinfo=UTC))
    with zipfile.ZipFile(__import__("io").BytesIO(zipped)) as archive:
        assert sorted(archive.namelist()) == [
            "IHE_XDM/SUBSET01/DOC0001.XML",
            "IHE_XDM/SUBSET01/METADATA.XML",
            "INDEX.HTM",
            "README.TXT",
        ]


def test_load_report_reads_the_input_it_is_given_only(tmp_path: Path) -> None:
    """A symlinked input is read (the operator named it); outputs still go under OUTDIR."""
    link = tmp_path / "report.json"
    link.symlink_to(SAMPLES / "01-biochimie.json")
    report = load_report(link)
    written = crbio.build(report).write(tmp_path / "out", stem=link.stem)
    assert all(p.parent == tmp_path / "out" for p in written)
