"""The vocabulary of dispatch: channels, actions, recipients, deliveries, jobs, acknowledgements.

A :class:`Delivery` is one document version going to one recipient over one channel for one
action; the routing plan produces them, the outbox stores them, a worker turns each into a
:class:`Job` for a sender, and the sender answers with an :class:`Acknowledgement`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

from crbio.dispatch.header import DocumentHeader, read_header

__all__ = [
    "Acknowledgement",
    "Action",
    "Channel",
    "Delivery",
    "Job",
    "Recipient",
    "RecipientKind",
]


class Channel(StrEnum):
    """Where a document goes: the patient's DMP, MSSanté mailboxes, a hospital record (HL7 v2)."""

    DMP = "dmp"
    MSSANTE = "mssante"
    HL7V2 = "hl7v2"


class Action(StrEnum):
    """What a delivery does: a first send, an "annule et remplace", or a deletion."""

    SUBMIT = "submit"
    REPLACE = "replace"
    DELETE = "delete"


class RecipientKind(StrEnum):
    """Who receives: the patient's record, the patient, a health professional, a system."""

    DMP = "dmp"
    PATIENT = "patient"
    PROFESSIONAL = "professional"
    SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class Recipient:
    """One recipient of a delivery.

    ``address`` identifies it on its channel: ``dmp`` for the DMP, an MSSanté address, or the
    configured name of an HL7 v2 destination. ``identifier`` is the recipient's national id
    when there is one (RPPS for a professional), for the transmission journal.
    """

    kind: RecipientKind
    address: str
    identifier: str | None = None
    label: str | None = None  # a display name for professionals; never the patient's name

    def to_dict(self) -> dict[str, Any]:
        """The recipient as JSON-serialisable data."""
        return {
            "kind": self.kind.value,
            "address": self.address,
            "identifier": self.identifier,
            "label": self.label,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipient:
        """A recipient read back from :meth:`to_dict`."""
        return cls(RecipientKind(data["kind"]), data["address"], data.get("identifier"), data.get("label"))


@dataclass(frozen=True, slots=True)
class Delivery:
    """One document version, to one recipient, over one channel, for one action.

    Attributes:
        channel: The channel; the configuration chooses which sender serves it.
        action: First send, replacement or deletion.
        recipient: Who receives it.
        document_id: The OID of the document version sent (for a deletion, the one deleted).
        version: Its version number.
        replaces: For a replacement, the OID of the version it replaces.
        metadata: Channel-specific facts decided by the routing rules, JSON-serialisable:
            ``confidentiality`` (list of codes: N/R/V then the masking codes),
            ``secret_connection`` (bool), ``flags`` (HL7 v2 Y/N metadata),
            ``headers`` (X-MSS-* mail headers), ``no_reply`` (bool)…
    """

    channel: Channel
    action: Action
    recipient: Recipient
    document_id: str
    version: int
    replaces: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The idempotency key: the same (document, version, destination, action) is sent once."""
        parts = (self.document_id, str(self.version), self.channel, self.recipient.address, self.action)
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The delivery as JSON-serialisable data."""
        return {
            "channel": self.channel.value,
            "action": self.action.value,
            "recipient": self.recipient.to_dict(),
            "document_id": self.document_id,
            "version": self.version,
            "replaces": self.replaces,
            "metadata": dict(self.metadata),
        }

    def to_json(self) -> str:
        """The delivery as JSON, for the outbox."""
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Delivery:
        """A delivery read back from :meth:`to_json`."""
        data = json.loads(text)
        return cls(
            channel=Channel(data["channel"]),
            action=Action(data["action"]),
            recipient=Recipient.from_dict(data["recipient"]),
            document_id=data["document_id"],
            version=data["version"],
            replaces=data.get("replaces"),
            metadata=data.get("metadata") or {},
        )


@lru_cache(maxsize=16)
def _header(n3: bytes, label: str) -> DocumentHeader:
    # A worker hands the same bytes object to every delivery of a document; bytes cache
    # their hash, so the lookup costs nothing next to parsing the CDA again.
    return read_header(n3, label=label)


def key_oid(key: str) -> str:
    """An OID under 2.25 derived from an idempotency key: stable across retries."""
    return f"2.25.{int(key[:32], 16)}"


@dataclass(frozen=True)
class Job:
    """What a sender gets: the delivery, the stored documents and what earlier sends left behind.

    Attributes:
        delivery: The delivery to make.
        attempt: 1 for the first try, then 2, 3…
        n3: The CDA R2 N3 (PDF embedded) of ``delivery.document_id``.
        pdf: The PDF/A-1b of that document.
        previous: For a replacement or a deletion, the acknowledgement detail of the earlier
            delivery of the target version on the same channel and to the same recipient (for
            the DMP it holds ``entry_uuid``); None when the journal has none.
    """

    delivery: Delivery
    attempt: int
    n3: bytes
    pdf: bytes
    previous: Mapping[str, Any] | None = None

    @property
    def key(self) -> str:
        """The delivery's idempotency key."""
        return self.delivery.key

    @property
    def message_id(self) -> str:
        """A message id that stays the same on every retry (MSSanté Message-ID, MSH-10…).

        Receivers de-duplicate on it, which is what makes a resend after a crash harmless.
        """
        return self.delivery.key[:32]

    @property
    def control_id(self) -> str:
        """The same stable id cut to HL7 v2.5's 20 characters, for MSH-10."""
        return self.delivery.key[:20]

    @property
    def submission_oid(self) -> str:
        """An OID that stays the same on every retry (XDS SubmissionSet uniqueId)."""
        return key_oid(self.delivery.key)

    @property
    def header(self) -> DocumentHeader:
        """The header of the N3 document, read once per document (not once per delivery)."""
        return _header(self.n3, self.delivery.document_id)


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """What the destination answered to a successful delivery.

    Attributes:
        summary: A short line for humans ("RegistryResponse Success", "250 2.0.0 queued as …",
            "MSA AA"); no patient data.
        detail: JSON-serialisable facts kept in the journal: ``entry_uuid`` and
            ``registry_status`` (DMP), ``queue_id`` and ``message_id`` (SMTP), ``msa`` (HL7)…
    """

    summary: str
    detail: Mapping[str, Any] = field(default_factory=dict)
