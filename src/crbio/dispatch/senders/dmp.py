"""Feeding the DMP: IHE XDS.b ITI-41 (submit, replace), ITI-57 (delete) and ITI-18 (look up).

Every request is a SOAP 1.2 message over mutually authenticated HTTPS (ORG AUTH_CLI
certificate) whose ``wsse:Security`` header carries a VIHF signed with the structure's ORG
SIGN certificate. A submission is an MTOM/XOP message with the CR-BIO and the XAdES signature
of the submission set as binary parts. What each answer means (retry, give up, done) is
decided in :mod:`crbio.dispatch.xds.response`.

Idempotency: the entryUUIDs and the submission set uniqueId are derived from the delivery
key, and the document keeps its own uniqueId, so a resend after a lost answer is recognised
by the registry (``XDSDuplicateUniqueIdInRegistry``); the sender then confirms with an ITI-18
GetDocuments that the stored entry is this very document (same hash) and reports success.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Self

import httpx
from lxml import etree

from crbio.dispatch.delivery import Acknowledgement, Action, Channel, Job
from crbio.dispatch.senders._shared import shared
from crbio.dispatch.senders.base import Sender, SenderContext
from crbio.dispatch.tls import ClientCredential, client_credential, server_certificate_problem, tls_context
from crbio.dispatch.xds.metadata import (
    DEFAULT_CONTENT_TYPE,
    STATUS_DELETED,
    Code,
    availability_update,
    dmp_submission,
    get_documents_query,
    submission_ids,
)
from crbio.dispatch.xds.response import (
    DocumentEntryInfo,
    RegistryResult,
    failure_error,
    fault_error,
    http_error,
    registry_result,
    soap_fault,
)
from crbio.dispatch.xds.signature import SignedDocument, sign_submission_set
from crbio.dispatch.xds.soap import (
    ACTION_PROVIDE_AND_REGISTER,
    ACTION_REGISTRY_STORED_QUERY,
    ACTION_UPDATE_DOCUMENT_SET,
    Attachment,
    HttpRequest,
    SoapMessage,
    content_id,
    envelope,
    mtom_request,
    parse_message,
    provide_and_register,
    soap_request,
)
from crbio.dispatch.xds.vihf import DEFAULT_SECTEUR_ACTIVITE, VihfIdentity, build_vihf
from crbio.errors import ConfigurationError, InputError, PermanentSendError, TransientSendError

__all__ = ["DmpSender"]

logger = logging.getLogger(__name__)

_WHERE: Final = "destinations.dmp"
_KNOWN_KEYS: Final = frozenset(
    {
        "name",
        "url",
        "ca_file",
        "timeout",
        "content_type_code",
        "content_type_scheme",
        "content_type_label",
        "secteur_activite",
        "lps_id",
    }
)
_FILE_KEYS: Final = (
    "ca_file",
    "client_cert",
    "client_key",
    "client_pkcs12",
    "sign_cert",
    "sign_key",
    "sign_pkcs12",
)
_DUPLICATE: Final = "XDSDuplicateUniqueIdInRegistry"


def _text(section: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = section.get(key, default)
    if not isinstance(value, str) or not value.strip():
        problem = "is required" if value is None else "must be a non-empty string"
        raise ConfigurationError(f"{_WHERE}.{key}: {problem}", code="config.value")
    return value.strip()


def _is_certificate_failure(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class DmpSender(Sender):
    """Sends CR-BIO documents to the DMP (IHE XDS.b), with the VIHF and a signed submission set.

    Configuration (``[destinations.dmp]``):

    - ``url`` (required): the service base, ``https://…/si-dmp-server/v2/services``;
      ``/repository`` (ITI-41) and ``/registry`` (ITI-18, ITI-57) are appended.
    - ``ca_file``: CA bundle for the DMP server certificate (IGC Santé chains).
    - ``client_cert`` + ``client_key``, or ``client_pkcs12``: the ORG AUTH_CLI certificate for
      TLS client authentication; password by ``client_password_file`` / ``client_password_env``.
    - ``sign_cert`` + ``sign_key``, or ``sign_pkcs12`` (required): the ORG SIGN certificate
      that signs the VIHF and the submission set; password by ``sign_password_file`` /
      ``sign_password_env``.
    - ``timeout``: seconds per HTTP exchange (default 30).
    - ``content_type_code`` (default ``07``), ``content_type_scheme`` (default
      ``1.2.250.1.213.2.2``, TRE_R209) and ``content_type_label``: the SubmissionSet
      contentTypeCode (JDV_J59).
    - ``secteur_activite``: the VIHF ``Secteur_Activite``, ``code^codeSystem`` (default
      ``SA25^1.2.250.1.71.4.2.4``, "Laboratoire de biologie médicale").
    - ``lps_id``: optional VIHF ``LPS_ID``.
    - ``name``: a display name for the destination.

    The VIHF also uses ``[laboratory]`` (FINESS, responsible person) and ``[software]``
    (name, version, ``dmp_homologation``, the CNDA number the real DMP requires).
    """

    channel = Channel.DMP

    def __init__(
        self,
        *,
        url: str,
        context: SenderContext,
        sign: ClientCredential,
        client: httpx.Client,
        content_type: Code = DEFAULT_CONTENT_TYPE,
        secteur_activite: str = DEFAULT_SECTEUR_ACTIVITE,
        lps_id: str | None = None,
    ) -> None:
        base = url.rstrip("/")
        self.repository_url = f"{base}/repository"
        self.registry_url = f"{base}/registry"
        self.context = context
        self.content_type = content_type
        self._identity = VihfIdentity(context, sign, secteur_activite, lps_id)
        self._client = client

    @classmethod
    def from_config(cls, section: Mapping[str, Any], context: SenderContext) -> Self:
        """Build the sender from ``[destinations.dmp]`` (keys in the class docstring).

        Raises:
            ConfigurationError: a setting is missing, unknown, unreadable or wrong; the message
                names it.
        """
        for key in section:
            if key not in _KNOWN_KEYS and not key.startswith(("client_", "sign_")):
                raise ConfigurationError(f"{_WHERE}.{key}: unknown setting", code="config.key")
        url = _text(section, "url")
        if not url.lower().startswith("https://"):
            raise ConfigurationError(f"{_WHERE}.url: must be an https:// URL", code="config.value")
        timeout = section.get("timeout", 30.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigurationError(
                f"{_WHERE}.timeout: must be a positive number of seconds", code="config.value"
            )
        for key in _FILE_KEYS:
            if key in section and not context.path(str(section[key])).is_file():
                raise ConfigurationError(f"{_WHERE}.{key}: cannot read the file", code="config.certificate")
        # Read once per process for identical settings: every worker thread builds a sender.
        sign, verify = shared(
            "dmp",
            section,
            context,
            lambda: (
                client_credential(section, "sign", context, where=_WHERE, required=True),
                tls_context(section, context, where=_WHERE),
            ),
        )
        assert sign is not None  # required=True raises instead
        code = _text(section, "content_type_code", DEFAULT_CONTENT_TYPE.code)
        content_type = Code(
            code,
            _text(section, "content_type_scheme", DEFAULT_CONTENT_TYPE.scheme),
            _text(
                section,
                "content_type_label",
                DEFAULT_CONTENT_TYPE.display if code == DEFAULT_CONTENT_TYPE.code else code,
            ),
        )
        lps_id = section.get("lps_id")
        if lps_id is not None and not isinstance(lps_id, str):
            raise ConfigurationError(f"{_WHERE}.lps_id: must be a string", code="config.value")
        agent = f"{context.software_name}/{context.software_version}".rstrip("/")
        client = httpx.Client(
            verify=verify, timeout=httpx.Timeout(float(timeout)), headers={"User-Agent": agent}
        )
        return cls(
            url=url,
            context=context,
            sign=sign,
            client=client,
            content_type=content_type,
            secteur_activite=_text(section, "secteur_activite", DEFAULT_SECTEUR_ACTIVITE),
            lps_id=lps_id,
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    # -- the three actions ---------------------------------------------------------------

    def send(self, job: Job) -> Acknowledgement:
        """Submit (ITI-41), replace (ITI-41 with RPLC) or delete (ITI-57) the job's document.

        Raises:
            PermanentSendError: no qualified INS (``dispatch.dmp.no-ins``), the registry refused
                the request, or the version to replace or delete is not in the DMP.
            TransientSendError: timeout, connection error, HTTP 5xx, busy registry.
        """
        self._require_ins(job)
        action = job.delivery.action
        if action is Action.DELETE:
            return self._delete(job)
        replaced = self._replaced_entry(job) if action is Action.REPLACE else None
        return self._provide(job, replaced)

    def find_delivered(self, job: Job) -> Acknowledgement | None:
        """Ask the registry (ITI-18) whether this delivery already took effect.

        For a submission or replacement: whether an entry with the document's uniqueId and
        the same hash exists. For a deletion: whether the entry exists and is Deleted. None
        when the registry holds no such entry (the delivery should be made).
        """
        if job.header.ins is None:
            return None
        unique_id = job.delivery.document_id
        entries = self._get_documents(job, unique_id)
        if job.delivery.action is Action.DELETE:
            deleted = [e for e in entries if (e.status or "").endswith(":Deleted")]
            if deleted and not any(e.approved for e in entries):
                return self._deletion_ack(job, deleted[0].entry_uuid, "Success", recovered=True)
            return None
        found = self._own_entry(job, entries)
        return (
            None if found is None else self._submission_ack(job, found.entry_uuid, "Success", recovered=True)
        )

    # -- transactions ---------------------------------------------------------------------

    def _provide(self, job: Job, replaced: str | None) -> Acknowledgement:
        """ITI-41: the CR-BIO, its signed submission set and, for a replacement, the RPLC."""
        ids = submission_ids(job)
        signed: list[bytes] = []

        def sign(package: etree._Element) -> bytes:
            signed.append(
                sign_submission_set(
                    documents=[SignedDocument(job.header.document_id, job.n3)],
                    submission_set_unique_id=ids.submission_set_unique_id,
                    signature_unique_id=ids.signature_unique_id,
                    credential=self._identity.credential,
                    submission_set=package,
                )
            )
            return signed[0]

        submit = dmp_submission(
            job,
            self.context,
            submission_time=datetime.now(UTC),
            content_type=self.content_type,
            replaced_entry_uuid=replaced,
            sign=sign,
        )
        (signature,) = signed
        document_cid, signature_cid = content_id("document"), content_id("signature")
        body = provide_and_register(submit, [(ids.document, document_cid), (ids.signature, signature_cid)])
        env = envelope(
            action=ACTION_PROVIDE_AND_REGISTER,
            to=self.repository_url,
            body=body,
            security=[self._vihf(job)],
        )
        request = mtom_request(
            env,
            [Attachment(document_cid, job.n3), Attachment(signature_cid, signature)],
            ACTION_PROVIDE_AND_REGISTER,
        )
        result = self._call(job, self.repository_url, request, "ITI-41")
        if result.success:
            logger.info("document %s: DMP submission accepted (%s)", job.delivery.document_id, job.key[:16])
            return self._submission_ack(job, ids.document, result.short_status, replaced=replaced)
        if _DUPLICATE in result.error_codes:
            # A resend of something the registry already holds: done, if it is this document.
            found = self._own_entry(job, self._get_documents(job, job.delivery.document_id))
            if found is not None:
                logger.info("document %s: already in the DMP, resend acknowledged", job.delivery.document_id)
                return self._submission_ack(
                    job, found.entry_uuid, "Success", replaced=replaced, duplicate=True
                )
        raise failure_error(result, transaction="ITI-41", label=self._label(job))

    def _delete(self, job: Job) -> Acknowledgement:
        """ITI-57: UpdateAvailabilityStatus Approved → Deleted on the document's entry."""
        target = self._previous_uuid(job)
        if target is None:
            entries = self._get_documents(job, job.delivery.document_id)
            approved = [e for e in entries if e.approved]
            if not approved:
                if any((e.status or "").endswith(":Deleted") for e in entries):
                    return self._deletion_ack(job, entries[0].entry_uuid, "Success", recovered=True)
                raise PermanentSendError(
                    f"{self._label(job)}: no current version of the document in the DMP to delete",
                    code="dispatch.dmp.target-unknown",
                    reason="document to delete not found in the DMP",
                    detail={"document_unique_id": job.delivery.document_id},
                )
            target = approved[0].entry_uuid
        request = availability_update(
            job,
            self.context,
            submission_time=datetime.now(UTC),
            target_entry_uuid=target,
            content_type=self.content_type,
        )
        env = envelope(
            action=ACTION_UPDATE_DOCUMENT_SET, to=self.registry_url, body=request, security=[self._vihf(job)]
        )
        result = self._call(job, self.registry_url, soap_request(env, ACTION_UPDATE_DOCUMENT_SET), "ITI-57")
        if not result.success:
            raise failure_error(result, transaction="ITI-57", label=self._label(job))
        logger.info("document %s: DMP deletion accepted (%s)", job.delivery.document_id, job.key[:16])
        return self._deletion_ack(job, target, result.short_status)

    def _get_documents(self, job: Job, unique_id: str) -> list[DocumentEntryInfo]:
        """ITI-18 GetDocuments (LeafClass) by uniqueId: the entries holding that document."""
        env = envelope(
            action=ACTION_REGISTRY_STORED_QUERY,
            to=self.registry_url,
            body=get_documents_query(unique_ids=[unique_id]),
            security=[self._vihf(job)],
        )
        result = self._call(job, self.registry_url, soap_request(env, ACTION_REGISTRY_STORED_QUERY), "ITI-18")
        if not result.success:
            raise failure_error(result, transaction="ITI-18", label=self._label(job))
        return [e for e in result.entries if e.unique_id in (None, unique_id)]

    # -- helpers ----------------------------------------------------------------------------

    def _require_ins(self, job: Job) -> None:
        if job.header.ins is None:
            raise PermanentSendError(
                f"{self._label(job)}: the DMP requires a qualified INS and the document has none",
                code="dispatch.dmp.no-ins",
                reason="no qualified INS",
            )

    def _label(self, job: Job) -> str:
        return f"document {job.delivery.document_id}"

    def _vihf(self, job: Job) -> etree._Element:
        assert job.header.ins is not None
        secret = bool(job.delivery.metadata.get("secret_connection", False))
        return build_vihf(self._identity, ins=job.header.ins, secret_connection=secret)

    @staticmethod
    def _previous_uuid(job: Job) -> str | None:
        value = (job.previous or {}).get("entry_uuid")
        return value if isinstance(value, str) and value else None

    def _replaced_entry(self, job: Job) -> str:
        """The entryUUID of the version being replaced: from the journal, else from ITI-18."""
        known = self._previous_uuid(job)
        if known is not None:
            return known
        replaces = job.delivery.replaces or job.header.replaces
        if not replaces:
            raise PermanentSendError(
                f"{self._label(job)}: a replacement without the id of the version it replaces",
                code="dispatch.dmp.target-unknown",
                reason="no replaced document id",
            )
        entries = self._get_documents(job, replaces)
        approved = [e for e in entries if e.approved]
        if approved:
            return approved[0].entry_uuid
        if entries:
            raise PermanentSendError(
                f"{self._label(job)}: the version it replaces ({replaces}) is no longer current in the DMP",
                code="dispatch.dmp.target-not-current",
                reason="replaced document is not Approved in the DMP",
                detail={"replaced_unique_id": replaces, "status": entries[0].status},
            )
        raise PermanentSendError(
            f"{self._label(job)}: the version it replaces ({replaces}) is not in the DMP",
            code="dispatch.dmp.target-unknown",
            reason="replaced document not found in the DMP",
            detail={"replaced_unique_id": replaces},
        )

    @staticmethod
    def _own_entry(job: Job, entries: list[DocumentEntryInfo]) -> DocumentEntryInfo | None:
        """The entry holding exactly this document (same SHA-1 when the registry gives it)."""
        digest = hashlib.sha1(job.n3).hexdigest()
        matching = [e for e in entries if e.hash is None or e.hash.lower() == digest]
        matching.sort(key=lambda e: not e.approved)
        return matching[0] if matching else None

    def _submission_ack(
        self,
        job: Job,
        entry_uuid: str,
        status: str,
        *,
        replaced: str | None = None,
        duplicate: bool = False,
        recovered: bool = False,
    ) -> Acknowledgement:
        ids = submission_ids(job)
        detail: dict[str, Any] = {
            "transaction": "ITI-41",
            "registry_status": status,
            "entry_uuid": entry_uuid,
            "document_unique_id": job.delivery.document_id,
            "submission_set_unique_id": ids.submission_set_unique_id,
        }
        if replaced is not None:
            detail["replaced_entry_uuid"] = replaced
        if duplicate:
            detail["duplicate"] = True
        if recovered:
            detail["found_by"] = "ITI-18"
        verb = "replacement" if job.delivery.action is Action.REPLACE else "submission"
        return Acknowledgement(f"DMP {verb}: RegistryResponse {status}", detail)

    def _deletion_ack(
        self, job: Job, target: str, status: str, *, recovered: bool = False
    ) -> Acknowledgement:
        detail: dict[str, Any] = {
            "transaction": "ITI-57",
            "registry_status": status,
            "entry_uuid": target,
            "target": target,
            "new_status": STATUS_DELETED,
            "document_unique_id": job.delivery.document_id,
            "submission_set_unique_id": submission_ids(job).submission_set_unique_id,
        }
        if recovered:
            detail["found_by"] = "ITI-18"
        return Acknowledgement(f"DMP deletion: RegistryResponse {status}", detail)

    def _call(self, job: Job, url: str, request: HttpRequest, transaction: str) -> RegistryResult:
        """POST one SOAP request and read the registry's answer, mapping failures to send errors."""
        label = self._label(job)
        try:
            response = self._client.post(
                url, content=request.body, headers={"Content-Type": request.content_type}
            )
        except httpx.TimeoutException as exc:
            raise TransientSendError(
                f"{label}: {transaction} timed out",
                code="dispatch.dmp.timeout",
                reason="timeout",
                detail={"transaction": transaction},
            ) from exc
        except httpx.TransportError as exc:
            if _is_certificate_failure(exc):
                problem = server_certificate_problem(exc, where=_WHERE, address="url")
                raise PermanentSendError(
                    f"{label}: {transaction}: the DMP server certificate could not be verified: {problem}",
                    code="dispatch.dmp.tls",
                    reason=f"TLS: {problem}",
                    detail={"transaction": transaction},
                ) from exc
            raise TransientSendError(
                f"{label}: {transaction} connection failed ({type(exc).__name__})",
                code="dispatch.dmp.connection",
                reason=f"connection error ({type(exc).__name__})",
                detail={"transaction": transaction},
            ) from exc
        message: SoapMessage | None
        try:
            message = parse_message(response.headers.get("content-type"), response.content, label=label)
        except InputError as exc:
            message, unreadable = None, exc
        if message is not None:
            fault = soap_fault(message)
            if fault is not None:
                raise fault_error(
                    fault, http_status=response.status_code, transaction=transaction, label=label
                )
        if message is None and response.status_code < 400:
            # A success status with a body refused by the safe parser (a DTD, an entity, not XML):
            # the reason names what was refused and where, never the body's content.
            reason = f"unreadable SOAP response ({unreadable.message.removeprefix(f'{label}: ')})"
            raise PermanentSendError(
                f"{label}: {transaction} answered with an {reason}",
                code="dispatch.dmp.response",
                reason=reason,
                detail={"transaction": transaction, "http_status": response.status_code},
            )
        if message is None or response.status_code >= 400:
            raise http_error(response.status_code, transaction=transaction, label=label)
        try:
            return registry_result(message, label=label)
        except InputError:
            reason = "unexpected SOAP body (not a registry response)"
            raise PermanentSendError(
                f"{label}: {transaction} answered with an {reason}",
                code="dispatch.dmp.response",
                reason=reason,
                detail={"transaction": transaction, "http_status": response.status_code},
            ) from None
