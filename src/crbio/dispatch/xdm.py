"""The ``IHE_XDM.ZIP`` of an MSSanté message (IHE ITI-32, Distribute Document Set on Media, ZIP over e-mail).

Layout, with the 8.3 upper-case names the profile requires::

    README.TXT                    who made the archive, with what, and what is inside
    INDEX.HTM                     an XHTML entry page linking README.TXT and the document
    IHE_XDM/SUBSET01/METADATA.XML the submission set's XDS metadata (ebRIM SubmitObjectsRequest)
    IHE_XDM/SUBSET01/DOC0001.XML  the CR-BIO: the CDA R2 N3 with its PDF embedded

The receiver identifies the patient from the INS in METADATA.XML and, for a replacement or a
deletion, reads the ``action`` slot there (C or D). The archive is deterministic: entries in
sorted order with timestamps taken from the submission time, so the same job and time give
the same bytes. INDEX.HTM and README.TXT carry no patient data.

The archive is written here rather than with :mod:`zipfile`, byte for byte as ``zipfile``
writes it, so that the document's compressed entry, the costliest part of an MSSanté
delivery, is computed once per document and reused for each of its recipients: DEFLATE of
the same bytes at the same level always gives the same stream.
"""

from __future__ import annotations

import html
import struct
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from crbio import __version__
from crbio.dispatch.delivery import Action, Job
from crbio.dispatch.senders.base import SenderContext
from crbio.dispatch.xds.metadata import xdm_metadata

__all__ = ["ARCHIVE_NAME", "DOCUMENT_NAME", "METADATA_NAME", "SUBSET", "build_xdm"]

ARCHIVE_NAME = "IHE_XDM.ZIP"
SUBSET = "IHE_XDM/SUBSET01"
DOCUMENT_NAME = "DOC0001.XML"
METADATA_NAME = "METADATA.XML"

_PROJECT = "crbio contributors, https://github.com/crbio/crbio"
_ACTIONS = {
    Action.SUBMIT: "first transmission / premier envoi",
    Action.REPLACE: "replacement / annule et remplace (XDM action C)",
    Action.DELETE: "withdrawal / suppression (XDM action D)",
}


def _zip_time(moment: datetime) -> tuple[int, int, int, int, int, int]:
    utc = moment.astimezone(UTC) if moment.tzinfo is not None else moment
    if utc.year < 1980:  # the ZIP format starts in 1980
        return (1980, 1, 1, 0, 0, 0)
    return (utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second)


def _stamp(moment: datetime) -> str:
    utc = moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def _readme(job: Job, context: SenderContext, submission_time: datetime) -> bytes:
    header = job.header
    delivery = job.delivery
    software = " ".join(p for p in (context.software_name, context.software_version) if p)
    lines = [
        "IHE_XDM.ZIP - IHE XDM (ITI-32) interchange / archive d'echange IHE XDM",
        "",
        "Sending organisation / Organisation emettrice",
        f"  {context.laboratory_name}",
        f"  FINESS: {context.laboratory_finess}",
    ]
    if context.responsible_name:
        lines.append(f"  Contact: {context.responsible_name}")
    lines += [
        "",
        "Sending application / Application emettrice",
        f"  {software}",
        f"  Built with crbio {__version__} ({_PROJECT})",
        "",
        "Content / Contenu",
        f"  Document: {header.title} (LOINC {header.code.code})",
        f"  Document id: {header.document_id} (version {header.version})",
        f"  Action: {_ACTIONS[delivery.action]}",
    ]
    if delivery.action is Action.REPLACE and (delivery.replaces or header.replaces):
        lines.append(f"  Replaces / remplace: {delivery.replaces or header.replaces}")
    lines += [
        f"  Created / cree le: {_stamp(submission_time)}",
        "",
        "Instructions",
        "  Open INDEX.HTM in a web browser, or import the archive with an IHE XDM Portable",
        "  Media Importer (the patient is identified by the INS in METADATA.XML).",
        "  Ouvrir INDEX.HTM dans un navigateur, ou importer l'archive avec un logiciel",
        "  compatible IHE XDM (le patient est identifie par l'INS de METADATA.XML).",
        "",
        "Files / Fichiers",
        "  README.TXT                  this file / ce fichier",
        "  INDEX.HTM                   entry page / page d'accueil",
        "  IHE_XDM/",
        "    SUBSET01/",
        "      METADATA.XML            XDS metadata of the submission set (ebRIM)",
        "      DOC0001.XML             the report, CDA R2 level 3 with its PDF embedded",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


def _index(job: Job, context: SenderContext) -> bytes:
    header = job.header
    title = html.escape(header.title, quote=False)
    lab = html.escape(context.laboratory_name, quote=False)
    action = html.escape(_ACTIONS[job.delivery.action], quote=False)
    page = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML Basic 1.0//EN" "http://www.w3.org/TR/xhtml-basic/xhtml-basic10.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="fr" lang="fr">
<head>
<title>IHE XDM - {title}</title>
</head>
<body>
<h1>{title}</h1>
<p>Émetteur : {lab} (FINESS {html.escape(context.laboratory_finess, quote=False)})</p>
<p>Action : {action}</p>
<ul>
<li><a href="{SUBSET}/{DOCUMENT_NAME}">{DOCUMENT_NAME}</a> : {title} (CDA R2)</li>
<li><a href="{SUBSET}/{METADATA_NAME}">{METADATA_NAME}</a> : métadonnées XDS</li>
<li><a href="README.TXT">README.TXT</a> : description de l'archive</li>
</ul>
</body>
</html>
"""
    return page.encode("utf-8")


def build_xdm(job: Job, context: SenderContext, *, submission_time: datetime) -> bytes:
    """The ``IHE_XDM.ZIP`` for one job: README.TXT, INDEX.HTM, METADATA.XML and DOC0001.XML (= ``job.n3``).

    METADATA.XML comes from :func:`crbio.dispatch.xds.metadata.xdm_metadata` (URI
    ``DOC0001.XML``, hash and size of the document, the ``action`` slot of a replacement or
    a deletion). The result depends only on the job, the context and ``submission_time``.
    """
    files = {
        "README.TXT": _deflated(_readme(job, context, submission_time)),
        "INDEX.HTM": _deflated(_index(job, context)),
        f"{SUBSET}/{METADATA_NAME}": _deflated(
            xdm_metadata(job, context, document_uri=DOCUMENT_NAME, submission_time=submission_time)
        ),
        # The same bytes object for every delivery of a document (see Worker): compressed once.
        f"{SUBSET}/{DOCUMENT_NAME}": _deflated_document(job.n3),
    }
    return _zip(files, _zip_time(submission_time))


# What zipfile writes for a deflated entry of a seekable archive: version 2.0 needed and
# made by, no flag (ASCII names, sizes known before the data), Unix file mode 0644.
_VERSION = 20
_UNIX = 3
_DEFLATED = 8
_MODE = 0o100644 << 16
# A central directory record's fields after the name length: no extra field, no comment,
# disk 0, no internal attributes, the file mode.
_CENTRAL_TAIL = (0, 0, 0, 0, _MODE)
_LEVEL = 6


@dataclass(frozen=True, slots=True)
class _Entry:
    crc: int
    size: int
    data: bytes  # the raw DEFLATE stream


def _deflated(data: bytes) -> _Entry:
    compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15)
    return _Entry(zlib.crc32(data), len(data), compressor.compress(data) + compressor.flush())


@lru_cache(maxsize=16)
def _deflated_document(n3: bytes) -> _Entry:
    # A pure function of the bytes: several recipients of one document share the result.
    return _deflated(n3)


def _zip(files: dict[str, _Entry], stamp: tuple[int, int, int, int, int, int]) -> bytes:
    """A ZIP archive of already compressed entries, in sorted name order (no comment, no ZIP64)."""
    year, month, day, hour, minute, second = stamp
    dos_time = hour << 11 | minute << 5 | second // 2
    dos_date = (year - 1980) << 9 | month << 5 | day
    chunks: list[bytes] = []
    directory: list[bytes] = []
    offset = 0
    for name in sorted(files):
        entry = files[name]
        encoded = name.encode("ascii")
        common = (0, _DEFLATED, dos_time, dos_date, entry.crc, len(entry.data), entry.size, len(encoded))
        local = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", _VERSION, 0, *common, 0)
        made_by = (_VERSION, _UNIX, _VERSION, 0)
        central = struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", *made_by, *common, *_CENTRAL_TAIL, offset)
        directory.append(central + encoded)
        chunks += [local, encoded, entry.data]
        offset += len(local) + len(encoded) + len(entry.data)
    listing = b"".join(directory)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(files), len(files), len(listing), offset, 0)
    return b"".join(chunks) + listing + end
