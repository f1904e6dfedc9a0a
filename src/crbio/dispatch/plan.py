"""The routing rules: from a report and the lab's configuration to a plan of deliveries.

:func:`plan_dispatch` is a pure function: the same report and configuration always give the
same plan, and every destination that is not used is listed with the reason. The rules
follow the ANS texts summarised in the domain notes (HL7 v2 volet "règles de gestion
MSSanté" and management matrix, DMP feeding preconditions, Ségur INS rules):

- **DMP** needs a qualified INS, no opposition to DMP feeding, a normal confidentiality
  (an R/V document "ne devrait pas être mis en partage") and a biologically validated report.
  Masking codes travel as extra XDS confidentiality codes; a secret connection as the VIHF
  confidentiality-code.
- **MSSanté to professionals** (prescriber, copy recipients with an MSSanté address) needs no
  opposition to MSSanté sending and, as the management matrix demands, no MASQUE_PS (a rule
  the lab can relax with ``rules.masque_ps_blocks_mssante = false``: the volet's text dropped
  it in v2.1.1 while its matrix kept it).
- **MSSanté to the patient** needs a qualified INS (the address is built from it), no
  opposition, no INVISIBLE_PATIENT, a validated report; for a minor, nothing hidden from the
  legal representatives (they manage a minor's Mon espace santé) and no secret connection.
- **HL7 v2** to the hospital record carries every report with its flags; the receiving PFI
  applies them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from crbio.dispatch.config import DispatchConfig, RoutingRules
from crbio.dispatch.delivery import Action, Channel, Delivery, Recipient, RecipientKind
from crbio.dispatch.hl7v2 import FLAG_ORDER
from crbio.model import Confidentiality, Report

__all__ = [
    "PATIENT_MSSANTE_DOMAIN",
    "Plan",
    "Suppressed",
    "patient_address",
    "plan_dispatch",
    "plan_deletion",
]

PATIENT_MSSANTE_DOMAIN = "patient.mssante.fr"


@dataclass(frozen=True, slots=True)
class Suppressed:
    """A destination the rules did not use, and why.

    Attributes:
        channel: The channel not used.
        recipient: Who would have received it.
        reason: A stable code (``ins.not-qualified``, ``opposition.dmp``…).
        explanation: One sentence for humans; no patient data.
    """

    channel: Channel
    recipient: Recipient
    reason: str
    explanation: str


@dataclass(frozen=True, slots=True)
class Plan:
    """The deliveries of one document version, and the destinations left out with their reasons."""

    document_id: str
    version: int
    action: Action
    deliveries: tuple[Delivery, ...]
    suppressed: tuple[Suppressed, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-serialisable data (``crbio plan --format json``)."""
        return {
            "document_id": self.document_id,
            "version": self.version,
            "action": self.action.value,
            "deliveries": [{**d.to_dict(), "key": d.key} for d in self.deliveries],
            "suppressed": [
                {
                    "channel": s.channel.value,
                    "recipient": s.recipient.to_dict(),
                    "reason": s.reason,
                    "explanation": s.explanation,
                }
                for s in self.suppressed
            ],
        }


def patient_address(matricule: str) -> str:
    """The patient's Mon espace santé address, built from the qualified INS matricule."""
    return f"{matricule}@{PATIENT_MSSANTE_DOMAIN}"


class _Rules:
    """The decisions for one report, computed once and shared by every channel."""

    def __init__(
        self, report: Report, rules: RoutingRules, previous_confidentiality: Sequence[str] | None
    ) -> None:
        doc = report.document
        patient = report.patient
        self.report = report
        self.rules = rules
        self.masking = doc.masking
        self.minor = patient.is_minor_at(report.validated_at)
        self.qualified_ins = patient.qualified_ins
        self.previous_confidentiality = previous_confidentiality
        self.dmp_refusals = self._dmp_refusals()
        self.ps_refusals = self._ps_refusals()
        self.patient_refusals = self._patient_refusals()

    def _dmp_refusals(self) -> list[tuple[str, str]]:
        doc, patient = self.report.document, self.report.patient
        out = []
        if self.qualified_ins is None:
            out.append(("ins.not-qualified", "the DMP is fed only for a patient with a qualified INS"))
        if patient.oppositions.dmp:
            out.append(("opposition.dmp", "the patient opposes the feeding of the DMP"))
        if doc.confidentiality is not Confidentiality.NORMAL:
            out.append(
                ("confidentiality.restricted", "a document of restricted confidentiality (R/V) is not shared")
            )
        if doc.before_validation:
            out.append(
                ("report.not-validated", "results sent before biological validation do not go to the DMP")
            )
        return out

    def _ps_refusals(self) -> list[tuple[str, str]]:
        out = []
        if self.report.patient.oppositions.mssante:
            out.append(("opposition.mssante", "the patient opposes sending by MSSanté"))
        if self.masking.masque_ps and self.rules.masque_ps_blocks_mssante:
            out.append(("masking.masque-ps", "the document is masked to health professionals (MASQUE_PS)"))
        return out

    def _patient_refusals(self) -> list[tuple[str, str]]:
        doc, patient = self.report.document, self.report.patient
        out = []
        if not self.rules.mssante_patient:
            out.append(
                ("rules.patient-off", "sending to the patient is switched off (rules.mssante_patient)")
            )
        if self.qualified_ins is None:
            out.append(("ins.not-qualified", "the patient's address needs a qualified INS"))
        if patient.oppositions.mssante:
            out.append(("opposition.mssante", "the patient opposes sending by MSSanté"))
        if self.masking.invisible_patient:
            out.append(
                (
                    "masking.invisible-patient",
                    "the document is not visible to the patient (INVISIBLE_PATIENT)",
                )
            )
        if self.minor and self.masking.invisible_representants_legaux:
            out.append(
                (
                    "masking.invisible-representants-legaux",
                    "the document is hidden from the legal representatives,"
                    " who manage a minor's Mon espace santé",
                )
            )
        if self.minor and doc.secret_connection:
            out.append(
                ("minor.secret-connection", "a minor's confidential care (secret connection) is not mailed")
            )
        if doc.before_validation:
            out.append(
                ("report.not-validated", "results sent before biological validation do not go to the patient")
            )
        return out

    def confidentiality(self) -> list[str]:
        return [self.report.document.confidentiality.value, *self.masking.codes()]

    def flags(self, *, dest_dmp: bool, dest_ps: bool, dest_patient: bool) -> dict[str, str]:
        doc = self.report.document
        values = {
            "MASQUE_PS": self.masking.masque_ps,
            "INVISIBLE_PATIENT": self.masking.invisible_patient,
            "INVISIBLE_REP_LEGAUX": self.masking.invisible_representants_legaux,
            "CONNEXION_SECRETE": doc.secret_connection,
            # A new version whose masking changed (e.g. released after the announcement consultation).
            "MODIF_CONF_CODE": self.previous_confidentiality is not None
            and list(self.previous_confidentiality) != self.confidentiality(),
            "DESTDMP": dest_dmp,
            "DESTMSSANTEPS": dest_ps,
            "DESTMSSANTEPAT": dest_patient,
            "ACK_RECEPTION": self.rules.request_dsn,
            "ACK_LECTURE_MSS": self.rules.request_mdn,
        }
        return {code: "Y" if values[code] else "N" for code in FLAG_ORDER}


def _professionals(report: Report) -> Iterable[Recipient]:
    """The prescriber and copy recipients as MSSanté recipients (an empty address when none is known)."""
    seen: set[str] = set()
    for person in (report.prescriber, *report.copy_recipients):
        address = person.mssante or ""
        if address and address.lower() in seen:
            continue
        seen.add(address.lower())
        yield Recipient(RecipientKind.PROFESSIONAL, address, person.rpps, person.name.display())


def plan_dispatch(
    report: Report, config: DispatchConfig, *, previous_confidentiality: Sequence[str] | None = None
) -> Plan:
    """The deliveries of a built report's document, with the destinations left out and why.

    ``report`` must have its document id resolved (``Documents.report``). The action is a
    replacement when the document replaces an earlier version, else a first send.
    ``previous_confidentiality`` is the confidentiality list of the replaced version when
    known (from the outbox): a change sets the HL7 v2 ``MODIF_CONF_CODE`` flag.
    """
    doc = report.document
    if doc.id is None:
        raise ValueError("plan_dispatch needs a report whose document id is resolved (Documents.report)")
    action = Action.REPLACE if doc.is_amendment else Action.SUBMIT
    rules = _Rules(report, config.rules, previous_confidentiality)
    deliveries: list[Delivery] = []
    suppressed: list[Suppressed] = []
    common: dict[str, Any] = {
        "confidentiality": rules.confidentiality(),
        "secret_connection": doc.secret_connection,
    }

    def deliver(channel: Channel, recipient: Recipient, **metadata: Any) -> None:
        deliveries.append(
            Delivery(
                channel, action, recipient, doc.id or "", doc.version, doc.replaces, {**common, **metadata}
            )
        )

    def refuse(channel: Channel, recipient: Recipient, refusals: list[tuple[str, str]]) -> None:
        suppressed.extend(Suppressed(channel, recipient, code, text) for code, text in refusals)

    dmp_recipient = Recipient(RecipientKind.DMP, "dmp")
    dmp_on = config.destination(Channel.DMP) is not None
    if not dmp_on:
        refuse(
            Channel.DMP, dmp_recipient, [("destination.off", "DMP feeding is not configured or switched off")]
        )
    elif rules.dmp_refusals:
        refuse(Channel.DMP, dmp_recipient, rules.dmp_refusals)
    else:
        deliver(Channel.DMP, dmp_recipient)

    mss_on = config.destination(Channel.MSSANTE) is not None
    code_headers = {
        "X-MSS-CODECDA": "11502-2",
        "X-MSS-INS": "O" if rules.qualified_ins is not None else "N",
        **({"X-MSS-NIL": config.context.nil} if config.context.nil else {}),
    }
    mail = {"request_dsn": config.rules.request_dsn, "request_mdn": config.rules.request_mdn}
    ps_recipients: list[Recipient] = []
    for recipient in _professionals(report):
        if not recipient.address:
            refuse(Channel.MSSANTE, recipient, [("recipient.no-address", "no MSSanté address is known")])
            continue
        if not mss_on:
            refuse(
                Channel.MSSANTE, recipient, [("destination.off", "MSSanté is not configured or switched off")]
            )
        elif rules.ps_refusals:
            refuse(Channel.MSSANTE, recipient, rules.ps_refusals)
        else:
            ps_recipients.append(recipient)
            deliver(Channel.MSSANTE, recipient, headers=code_headers, to_patient=False, **mail)

    # Without a qualified INS there is no address; the suppression still names "the patient".
    ins = rules.qualified_ins
    patient_recipient = Recipient(RecipientKind.PATIENT, patient_address(ins.matricule) if ins else "")
    if not mss_on:
        refuse(
            Channel.MSSANTE,
            patient_recipient,
            [("destination.off", "MSSanté is not configured or switched off")],
        )
    elif rules.patient_refusals:
        refuse(Channel.MSSANTE, patient_recipient, rules.patient_refusals)
    else:
        headers = dict(code_headers)
        if config.rules.patient_no_reply:
            headers["X-MSS-MES"] = "FIN"
        deliver(Channel.MSSANTE, patient_recipient, headers=headers, to_patient=True, **mail)

    hl7 = config.destination(Channel.HL7V2)
    if hl7 is not None:
        patient_ok = not rules.patient_refusals
        recipients = [r.to_dict() for r in (*ps_recipients, *([patient_recipient] if patient_ok else []))]
        deliver(
            Channel.HL7V2,
            Recipient(RecipientKind.SYSTEM, hl7.address),
            flags=rules.flags(
                dest_dmp=not rules.dmp_refusals, dest_ps=bool(ps_recipients), dest_patient=patient_ok
            ),
            mssante_recipients=recipients,
            no_reply=config.rules.patient_no_reply and patient_ok,
        )
    return Plan(doc.id, doc.version, action, tuple(deliveries), tuple(suppressed))


def plan_deletion(document_id: str, version: int, delivered: Iterable[Delivery]) -> Plan:
    """The deletions of a document on every channel and recipient that acknowledged it.

    ``delivered`` are the acknowledged deliveries of ``document_id`` (from the outbox); each
    becomes a DELETE delivery to the same recipient with the same metadata.
    """
    seen: set[tuple[Channel, str]] = set()
    deletions = []
    for d in delivered:
        if (d.channel, d.recipient.address) in seen or d.action is Action.DELETE:
            continue
        seen.add((d.channel, d.recipient.address))
        metadata = dict(d.metadata)
        if "flags" in metadata:
            metadata["flags"] = {**metadata["flags"], "MODIF_CONF_CODE": "N"}
        deletions.append(
            Delivery(d.channel, Action.DELETE, d.recipient, document_id, version, None, metadata)
        )
    return Plan(document_id, version, Action.DELETE, tuple(deletions))
