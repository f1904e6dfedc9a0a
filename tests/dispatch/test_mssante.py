"""The MSSanté message: normative subject and PDF name, headers, attachments, bodies per action."""

from __future__ import annotations

import base64
import email
import email.policy
import io
import re
import zipfile
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage, Message, MIMEPart
from email.utils import format_datetime
from typing import Any, cast

import pytest

from conftest import ROOT
from crbio.dispatch.delivery import Action, Channel, Delivery, Job, Recipient, RecipientKind
from crbio.dispatch.header import read_header
from crbio.dispatch.mssante import body_text, compose, message_id, pdf_file_name, subject
from crbio.dispatch.senders.base import SenderContext
from crbio.dispatch.xdm import build_xdm
from crbio.errors import PermanentSendError

OUTPUT = ROOT / "samples" / "output"
WHEN = datetime(2024, 1, 5, 9, 30, tzinfo=UTC)
SENDER = "laboratoire@labo-charmes.mssante.fr"
CONTEXT = SenderContext(
    laboratory_finess="920000015",
    laboratory_name="Laboratoire des Charmes",
    laboratory_oid="1.2.250.1.999.77",
    nil="NIL-0001",
)
PATIENT = "279035121518989@patient.mssante.fr"
DOCTOR = "dr.prescripteur@hopital.mssante.fr"


def job(
    sample: str,
    action: Action = Action.SUBMIT,
    *,
    to_patient: bool = False,
    headers: dict[str, str] | None = None,
    replaces: str | None = None,
    previous: dict[str, Any] | None = None,
    attempt: int = 1,
    **metadata: Any,
) -> Job:
    n3 = (OUTPUT / f"{sample}.n3.xml").read_bytes()
    header = read_header(n3)
    if headers is None:
        headers = {"X-MSS-CODECDA": "11502-2", "X-MSS-INS": "O" if header.ins else "N"}
        if to_patient:
            headers["X-MSS-MES"] = "FIN"
    recipient = (
        Recipient(RecipientKind.PATIENT, PATIENT)
        if to_patient
        else Recipient(RecipientKind.PROFESSIONAL, DOCTOR, "810001234567", "Dr Prescripteur")
    )
    delivery = Delivery(
        Channel.MSSANTE,
        action,
        recipient,
        header.document_id,
        header.version,
        replaces,
        {
            "confidentiality": [header.confidentiality],
            "headers": headers,
            "to_patient": to_patient,
            "request_dsn": True,
            "request_mdn": False,
            **metadata,
        },
    )
    return Job(delivery, attempt, n3, (OUTPUT / f"{sample}.pdf").read_bytes(), previous)


def parsed(raw: bytes) -> EmailMessage:
    """The message as a receiver sees it."""
    return cast(EmailMessage, email.message_from_bytes(raw, policy=email.policy.default))


def attachments(message: EmailMessage) -> dict[str, tuple[str, bytes]]:
    return {
        part.get_filename() or "": (part.get_content_type(), part.get_payload(decode=True))  # type: ignore[misc]
        for part in message.iter_attachments()
    }


# -- subject and file name ------------------------------------------------------------------------


def test_file_name_and_subject_of_the_reference_sample() -> None:
    header = read_header((OUTPUT / "01-biochimie.n3.xml").read_bytes())
    assert pdf_file_name(header) == "20240104_CR_d_examens_biologiques_PAT-TROIS_DOMINIQUE.pdf"
    assert subject(header) == "XDM/1.0/DDM+Compte rendu d'examens biologiques PAT-TROIS DOMINIQUE 28/03/1979"


def test_apostrophes_in_names_become_underscores_in_the_file_name_only() -> None:
    header = read_header((OUTPUT / "10-accents-apostrophes.n3.xml").read_bytes())
    assert pdf_file_name(header) == "20241008_CR_d_examens_biologiques_D_ALMEIDA-LEFEVRE_ZOE.pdf"
    assert (
        subject(header) == "XDM/1.0/DDM+Compte rendu d'examens biologiques D'ALMEIDA-LEFEVRE ZOE 12/05/1984"
    )


def test_the_file_name_is_ascii_and_safe_whatever_the_letters() -> None:
    header = read_header((OUTPUT / "10-accents-apostrophes.n3.xml").read_bytes())
    odd = replace(
        header, birth_family_name="d’Œuvré  de l'Étang", birth_given_name="Zoé Léa", birth_date=None
    )
    assert pdf_file_name(odd) == "20241008_CR_d_examens_biologiques_D_OEUVRE_DE_L_ETANG_Zoe_Lea.pdf"
    # The subject keeps the letters (encoded by the mail layer) and drops the missing birth date.
    assert subject(odd) == "XDM/1.0/DDM+Compte rendu d'examens biologiques D’ŒUVRÉ DE L'ÉTANG Zoé Léa"


def test_the_date_of_the_act_is_the_sampling_date() -> None:
    header = read_header((OUTPUT / "03-ecbu.n3.xml").read_bytes())
    assert header.service_start is not None and header.service_start.date() != header.effective_time.date()
    assert pdf_file_name(header).startswith(header.service_start.strftime("%Y%m%d") + "_")


@pytest.mark.parametrize("path", sorted(OUTPUT.glob("*.n3.xml")), ids=lambda p: p.name.split(".")[0])
def test_every_sample_gets_a_normative_name_and_subject(path: Any) -> None:
    header = read_header(path.read_bytes())
    assert re.fullmatch(
        r"\d{8}_CR_d_examens_biologiques_[A-Z0-9-]+(_[A-Z0-9-]+)*_[A-Za-z0-9_-]+\.pdf", pdf_file_name(header)
    )
    assert subject(header).startswith("XDM/1.0/DDM+Compte rendu d'examens biologiques ")
    assert re.search(r" \d{2}/\d{2}/\d{4}$", subject(header))


# -- the composed message -------------------------------------------------------------------------


def test_headers_of_a_message_to_a_professional() -> None:
    j = job("01-biochimie")
    message = parsed(compose(j, CONTEXT, sender_address=SENDER, submission_time=WHEN))
    assert message["From"] == SENDER
    assert message["To"] == DOCTOR
    assert message["Subject"] == subject(j.header)
    assert message["Date"] == "Fri, 05 Jan 2024 09:30:00 +0000"
    assert message["Message-ID"] == f"<{j.message_id}@labo-charmes.mssante.fr>"
    assert message_id(j, SENDER) == f"{j.message_id}@labo-charmes.mssante.fr"
    assert message["X-MSS-CODECDA"] == "11502-2"
    assert message["X-MSS-INS"] == "O"
    assert message["X-MSS-NIL"] == "NIL-0001"  # from the context: it goes on every message
    assert message["X-MSS-MES"] is None
    assert message["Disposition-Notification-To"] is None
    assert message["In-Reply-To"] is None
    assert message.get_content_type() == "multipart/mixed"


def test_the_subject_is_written_on_one_line_for_routing() -> None:
    raw = compose(job("10-accents-apostrophes"), CONTEXT, sender_address=SENDER, submission_time=WHEN)
    assert (
        b"\r\nSubject: XDM/1.0/DDM+Compte rendu d'examens biologiques D'ALMEIDA-LEFEVRE ZOE 12/05/1984\r\n"
        in raw
    )


def test_message_to_the_patient_with_read_receipt_and_no_reply() -> None:
    j = job("01-biochimie", to_patient=True, request_mdn=True)
    message = parsed(compose(j, CONTEXT, sender_address=SENDER, submission_time=WHEN))
    assert message["To"] == PATIENT
    assert message["X-MSS-MES"] == "FIN"
    assert message["Disposition-Notification-To"] == SENDER
    assert len(message.get_all("To") or []) == 1 and "," not in message["To"]  # one patient, one recipient


def test_the_message_id_is_stable_across_retries() -> None:
    first = compose(job("01-biochimie"), CONTEXT, sender_address=SENDER, submission_time=WHEN)
    retry = compose(
        job("01-biochimie", attempt=4), CONTEXT, sender_address=SENDER, submission_time=datetime.now(UTC)
    )
    assert parsed(first)["Message-ID"] == parsed(retry)["Message-ID"]
    other = compose(
        job("01-biochimie", to_patient=True), CONTEXT, sender_address=SENDER, submission_time=WHEN
    )
    assert parsed(other)["Message-ID"] != parsed(first)["Message-ID"]  # another recipient is another delivery


def test_attachments_decode_back_to_the_exact_documents() -> None:
    j = job("10-accents-apostrophes")
    message = parsed(compose(j, CONTEXT, sender_address=SENDER, submission_time=WHEN))
    files = attachments(message)
    assert list(files) == ["IHE_XDM.ZIP", "20241008_CR_d_examens_biologiques_D_ALMEIDA-LEFEVRE_ZOE.pdf"]
    zip_type, xdm = files["IHE_XDM.ZIP"]
    pdf_type, pdf = files["20241008_CR_d_examens_biologiques_D_ALMEIDA-LEFEVRE_ZOE.pdf"]
    assert (zip_type, pdf_type) == ("application/zip", "application/pdf")
    assert pdf == j.pdf
    with zipfile.ZipFile(io.BytesIO(xdm)) as archive:
        assert archive.read("IHE_XDM/SUBSET01/DOC0001.XML") == j.n3
    body = message.get_body(("plain",))
    assert body is not None and body.get_content_charset() == "utf-8"
    assert body.get_content().replace("\r\n", "\n") == body_text(j)


def test_the_message_is_7bit_ascii_with_crlf_line_ends() -> None:
    raw = compose(
        job("10-accents-apostrophes", to_patient=True), CONTEXT, sender_address=SENDER, submission_time=WHEN
    )
    assert max(raw) < 128
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_replacement_and_deletion_refer_to_the_earlier_message() -> None:
    v1 = read_header((OUTPUT / "08a-diabete-v1.n3.xml").read_bytes())
    earlier = {"message_id": "0123456789abcdef@labo-charmes.mssante.fr", "queue_id": "X"}
    for action in (Action.REPLACE, Action.DELETE):
        j = job("08b-diabete-v2", action, replaces=v1.document_id, previous=earlier)
        message = parsed(compose(j, CONTEXT, sender_address=SENDER, submission_time=WHEN))
        assert message["In-Reply-To"] == "<0123456789abcdef@labo-charmes.mssante.fr>"
        assert message["References"] == "<0123456789abcdef@labo-charmes.mssante.fr>"
        assert message["Subject"] == subject(j.header)  # routing needs the same prefix
    with zipfile.ZipFile(io.BytesIO(attachments(message)["IHE_XDM.ZIP"][1])) as archive:
        assert b'name="action"' in archive.read("IHE_XDM/SUBSET01/METADATA.XML")


def test_unusable_headers_or_sender_are_refused_for_good() -> None:
    with pytest.raises(PermanentSendError, match="X-MSS header"):
        compose(
            job("01-biochimie", headers={"X-MSS-INS": "O\r\nBcc: x@y"}),
            CONTEXT,
            sender_address=SENDER,
            submission_time=WHEN,
        )
    with pytest.raises(PermanentSendError, match="X-MSS header"):
        compose(
            job("01-biochimie", headers={"Bcc": "x@y.fr"}),
            CONTEXT,
            sender_address=SENDER,
            submission_time=WHEN,
        )
    with pytest.raises(PermanentSendError, match="sender address"):
        compose(job("01-biochimie"), CONTEXT, sender_address="laboratoire", submission_time=WHEN)


# -- bodies ---------------------------------------------------------------------------------------


def test_bodies_per_action_for_a_professional() -> None:
    v1 = read_header((OUTPUT / "08a-diabete-v1.n3.xml").read_bytes())
    submit = body_text(job("08a-diabete-v1"))
    assert "Veuillez trouver ci-joint le compte rendu" in submit and v1.document_id in submit
    assert "annule et remplace" not in submit.lower()
    amended = body_text(job("08b-diabete-v2", Action.REPLACE, replaces=v1.document_id))
    assert "ANNULE ET REMPLACE" in amended and v1.document_id in amended and "version 2" in amended
    withdrawn = body_text(job("08b-diabete-v2", Action.DELETE))
    assert "RETIRÉ" in withdrawn and "ne doit plus être utilisé" in withdrawn
    for text in (submit, amended, withdrawn):
        assert text.startswith("Bonjour,\n") and "Ce message ne permet pas de répondre" not in text


def test_bodies_per_action_for_the_patient() -> None:
    v1 = read_header((OUTPUT / "08a-diabete-v1.n3.xml").read_bytes())
    submit = body_text(job("08a-diabete-v1", to_patient=True))
    amended = body_text(job("08b-diabete-v2", Action.REPLACE, to_patient=True, replaces=v1.document_id))
    withdrawn = body_text(job("08b-diabete-v2", Action.DELETE, to_patient=True))
    assert "vous transmet le compte rendu de vos examens biologiques du 05/03/2024" in submit
    assert "annule et remplace celle que vous avez reçue" in amended
    assert "a été retiré" in withdrawn
    for text in (submit, amended, withdrawn):
        assert "Ce message ne permet pas de répondre" in text  # X-MSS-MES: FIN
        assert v1.document_id not in text and "1.2.250" not in text  # plain words, no OIDs
    may_reply = body_text(job("08a-diabete-v1", to_patient=True, headers={"X-MSS-CODECDA": "11502-2"}))
    assert "Ce message ne permet pas de répondre" not in may_reply


# -- the hand-written parts equal what the email package writes ------------------------------------


def _reference_compose(job: Job, sender: str, when: datetime) -> bytes:
    """The message built entirely with the email package (headers, text part, attachment headers)."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = job.delivery.recipient.address
    message["Subject"] = subject(job.header)
    message["Date"] = format_datetime(when)
    message["Message-ID"] = f"<{message_id(job, sender)}>"
    previous = (job.previous or {}).get("message_id")
    if previous and job.delivery.action is not Action.SUBMIT:
        message["In-Reply-To"] = f"<{previous}>"
        message["References"] = f"<{previous}>"
    headers = {**job.delivery.metadata["headers"], "X-MSS-NIL": CONTEXT.nil}
    for name in sorted(headers):
        message[name] = headers[name]
    if job.delivery.metadata.get("request_mdn"):
        message["Disposition-Notification-To"] = sender
    boundary = f"=_crbio.{job.message_id}"
    message["MIME-Version"] = "1.0"
    message["Content-Type"] = f'multipart/mixed; boundary="{boundary}"'
    policy = email.policy.SMTP.clone(max_line_length=998)

    def block(part: Message) -> bytes:
        return b"".join(policy.fold_binary(k, v) for k, v in part.items()) + b"\r\n"

    def attachment(content_type: str, filename: str, data: bytes) -> bytes:
        part = MIMEPart(policy=email.policy.SMTP)
        part["Content-Type"] = content_type
        part.add_header("Content-Disposition", "attachment", filename=filename)
        part["Content-Transfer-Encoding"] = "base64"
        return block(part) + base64.encodebytes(data).replace(b"\n", b"\r\n")

    text = MIMEPart(policy=email.policy.SMTP)
    text.set_content(body_text(job), subtype="plain", charset="utf-8", cte="quoted-printable")
    parts = [
        text.as_bytes(policy=policy),
        attachment("application/zip", "IHE_XDM.ZIP", build_xdm(job, CONTEXT, submission_time=when)),
        attachment("application/pdf", pdf_file_name(job.header), job.pdf),
    ]
    delimiter = f"--{boundary}".encode()
    return block(message) + b"".join(delimiter + b"\r\n" + p + b"\r\n" for p in parts) + delimiter + b"--\r\n"


@pytest.mark.parametrize("sample", ["01-biochimie", "09-reanimation-long", "10-accents-apostrophes"])
@pytest.mark.parametrize("to_patient", [False, True])
def test_the_message_is_byte_for_byte_what_the_email_package_writes(sample: str, to_patient: bool) -> None:
    earlier = {"message_id": "0123456789abcdef@labo-charmes.mssante.fr"}
    for j in (
        job(sample, to_patient=to_patient, request_mdn=to_patient),
        job(sample, Action.REPLACE, to_patient=to_patient, replaces="1.2.3", previous=earlier),
        job(sample, Action.DELETE, to_patient=to_patient, previous=earlier),
    ):
        for when in (WHEN, datetime(2026, 11, 23, 23, 59, 59, tzinfo=UTC)):
            built = compose(j, CONTEXT, sender_address=SENDER, submission_time=when)
            assert built == _reference_compose(j, SENDER, when)
