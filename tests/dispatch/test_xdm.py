"""The IHE_XDM.ZIP of MSSanté messages: normative layout, metadata matching the document, determinism."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import zipfile
from datetime import UTC, datetime, timedelta, timezone

import pytest
from lxml import etree

from conftest import ROOT
from crbio._xml import parse_xml
from crbio.dispatch.delivery import Action, Channel, Delivery, Job, Recipient, RecipientKind
from crbio.dispatch.header import read_header
from crbio.dispatch.senders.base import SenderContext
from crbio.dispatch.xdm import ARCHIVE_NAME, build_xdm

OUTPUT = ROOT / "samples" / "output"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
NS = {"rim": RIM}
UNIQUE_ID_SCHEME = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
PATIENT_ID_SCHEME = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
LAYOUT = ["IHE_XDM/SUBSET01/DOC0001.XML", "IHE_XDM/SUBSET01/METADATA.XML", "INDEX.HTM", "README.TXT"]
WHEN = datetime(2024, 1, 5, 9, 30, 12, tzinfo=UTC)
CONTEXT = SenderContext(
    laboratory_finess="920000015",
    laboratory_name="Laboratoire des Charmes",
    laboratory_oid="1.2.250.1.999.77",
    responsible_name="CAMPARINI Marcel",
    software_name="SGL-Test",
    software_version="4.2",
    nil="NIL-0001",
)


def job(sample: str, action: Action = Action.SUBMIT, *, replaces: str | None = None, attempt: int = 1) -> Job:
    n3 = (OUTPUT / f"{sample}.n3.xml").read_bytes()
    header = read_header(n3)
    delivery = Delivery(
        Channel.MSSANTE,
        action,
        Recipient(RecipientKind.PROFESSIONAL, "dr.prescripteur@hopital.mssante.fr", "810001234567"),
        header.document_id,
        header.version,
        replaces,
        {"confidentiality": [header.confidentiality], "headers": {"X-MSS-CODECDA": "11502-2"}},
    )
    return Job(delivery, attempt, n3, (OUTPUT / f"{sample}.pdf").read_bytes())


def archive(data: bytes) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(data))


def document_entry(metadata: bytes) -> etree._Element:
    root = parse_xml(metadata, label="METADATA.XML").getroot()
    (entry,) = root.iter(f"{{{RIM}}}ExtrinsicObject")
    return entry


def slots(entry: etree._Element) -> dict[str, list[str]]:
    return {
        slot.get("name"): [v.text for v in slot.iterfind("rim:ValueList/rim:Value", NS)]
        for slot in entry.iterfind("rim:Slot", NS)
    }


def test_the_archive_has_exactly_the_normative_layout() -> None:
    j = job("01-biochimie")
    with archive(build_xdm(j, CONTEXT, submission_time=WHEN)) as xdm:
        assert xdm.namelist() == LAYOUT  # sorted, no extra entry, no directory entry
        assert xdm.testzip() is None
        for info in xdm.infolist():
            assert info.compress_type == zipfile.ZIP_DEFLATED
            # 8.3 upper-case names, as the profile requires for media
            assert all(
                re.fullmatch(r"[A-Z0-9_]{1,8}(\.[A-Z]{1,3})?", part) for part in info.filename.split("/")
            )
        assert xdm.read("IHE_XDM/SUBSET01/DOC0001.XML") == j.n3
    assert ARCHIVE_NAME == "IHE_XDM.ZIP"


def test_metadata_describes_doc0001_uri_hash_and_size() -> None:
    j = job("01-biochimie")
    with archive(build_xdm(j, CONTEXT, submission_time=WHEN)) as xdm:
        document = xdm.read("IHE_XDM/SUBSET01/DOC0001.XML")
        entry = document_entry(xdm.read("IHE_XDM/SUBSET01/METADATA.XML"))
    values = slots(entry)
    assert values["URI"] == ["DOC0001.XML"]
    assert values["hash"] == [hashlib.sha1(document).hexdigest()]
    assert values["size"] == [str(len(document))]
    assert "action" not in values  # a first send has no action slot
    identifiers = {
        e.get("identificationScheme"): e.get("value") for e in entry.iterfind("rim:ExternalIdentifier", NS)
    }
    assert identifiers[UNIQUE_ID_SCHEME] == j.header.document_id
    matricule, oid = j.header.ins  # type: ignore[misc]
    assert identifiers[PATIENT_ID_SCHEME] == f"{matricule}^^^&{oid}&ISO^NH"


@pytest.mark.parametrize(("action", "code"), [(Action.REPLACE, "C"), (Action.DELETE, "D")])
def test_replacement_and_deletion_carry_the_action_slot(action: Action, code: str) -> None:
    v1 = read_header((OUTPUT / "08a-diabete-v1.n3.xml").read_bytes())
    j = job("08b-diabete-v2", action, replaces=v1.document_id if action is Action.REPLACE else None)
    with archive(build_xdm(j, CONTEXT, submission_time=WHEN)) as xdm:
        values = slots(document_entry(xdm.read("IHE_XDM/SUBSET01/METADATA.XML")))
        readme = xdm.read("README.TXT").decode("utf-8")
    assert values["action"] == [code]
    assert f"XDM action {code}" in readme
    if action is Action.REPLACE:
        assert v1.document_id in readme


def test_same_input_gives_identical_bytes_with_timestamps_from_the_submission_time() -> None:
    first = build_xdm(job("10-accents-apostrophes"), CONTEXT, submission_time=WHEN)
    again = build_xdm(job("10-accents-apostrophes", attempt=3), CONTEXT, submission_time=WHEN)
    assert first == again
    paris = WHEN.astimezone(timezone(timedelta(hours=1)))  # the same instant written differently
    assert build_xdm(job("10-accents-apostrophes"), CONTEXT, submission_time=paris) == first
    later = build_xdm(job("10-accents-apostrophes"), CONTEXT, submission_time=WHEN + timedelta(minutes=1))
    assert later != first
    with archive(first) as xdm:
        assert {info.date_time for info in xdm.infolist()} == {(2024, 1, 5, 9, 30, 12)}


def test_readme_and_index_describe_the_archive_without_patient_data() -> None:
    j = job("10-accents-apostrophes")
    header = j.header
    with archive(build_xdm(j, CONTEXT, submission_time=WHEN)) as xdm:
        readme = xdm.read("README.TXT").decode("utf-8")
        index = xdm.read("INDEX.HTM")
    for expected in ("Laboratoire des Charmes", "920000015", "CAMPARINI Marcel", "SGL-Test 4.2", "crbio"):
        assert expected in readme
    for name in LAYOUT:
        assert name.rsplit("/", 1)[-1] in readme
    assert "2024-01-05T09:30:12Z" in readme
    # XHTML: well-formed, links to the readme and the document, UTF-8 title with an apostrophe
    page = etree.fromstring(index, etree.XMLParser(load_dtd=False, no_network=True, resolve_entities=False))
    links = {a.get("href") for a in page.iter("{http://www.w3.org/1999/xhtml}a")}
    assert links == {"README.TXT", "IHE_XDM/SUBSET01/DOC0001.XML", "IHE_XDM/SUBSET01/METADATA.XML"}
    assert header.title in index.decode("utf-8")
    ins = header.ins[0]  # type: ignore[index]
    for text in (readme, index.decode("utf-8")):
        for patient_data in (ins, "ALMEIDA", "Almeida", "ZOE", "Zoé", "1984"):
            assert patient_data not in text


def test_a_document_without_ins_still_gets_an_archive() -> None:
    j = job("13-identite-provisoire")
    with archive(build_xdm(j, CONTEXT, submission_time=WHEN)) as xdm:
        entry = document_entry(xdm.read("IHE_XDM/SUBSET01/METADATA.XML"))
        assert xdm.read("IHE_XDM/SUBSET01/DOC0001.XML") == j.n3
    identifiers = {
        e.get("identificationScheme"): e.get("value") for e in entry.iterfind("rim:ExternalIdentifier", NS)
    }
    assert "1.2.250.1.213.1.4" not in identifiers[PATIENT_ID_SCHEME]  # the local id, not an INS


def _zipfile_archive(files: dict[str, bytes], moment: datetime) -> bytes:
    """The archive as the standard library's zipfile writes it: the reference for build_xdm's writer."""
    buffer = io.BytesIO()
    stamp = moment.astimezone(UTC).timetuple()[:6]
    with zipfile.ZipFile(buffer, "w") as out:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o100644 << 16
            out.writestr(info, files[name], compresslevel=6)
    return buffer.getvalue()


@pytest.mark.parametrize("sample", ["01-biochimie", "09-reanimation-long", "10-accents-apostrophes"])
def test_the_archive_is_byte_for_byte_what_zipfile_writes(sample: str) -> None:
    # The document's compressed entry is computed once per document and reused for each
    # recipient: the archive must not differ from one built from scratch by zipfile.
    j = job(sample)
    built = build_xdm(j, CONTEXT, submission_time=WHEN)
    with archive(built) as xdm:
        files = {name: xdm.read(name) for name in xdm.namelist()}
    assert built == _zipfile_archive(files, WHEN)
    other = Job(
        dataclasses.replace(
            j.delivery,
            recipient=Recipient(RecipientKind.PATIENT, "279035121518989@patient.mssante.fr", None),
        ),
        1,
        j.n3,
        j.pdf,
    )
    again = build_xdm(other, CONTEXT, submission_time=WHEN + timedelta(seconds=7))
    with archive(again) as xdm:
        files = {name: xdm.read(name) for name in xdm.namelist()}
        assert files["IHE_XDM/SUBSET01/DOC0001.XML"] == j.n3
    assert again == _zipfile_archive(files, WHEN + timedelta(seconds=7))
