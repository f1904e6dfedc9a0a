"""The sender interface, and how senders are found (the ``crbio.senders`` entry-point group).

A sender is to crbio what a transport is to httpx: one small class per protocol, built from
its section of the configuration, that makes one delivery at a time and says how it went.
A third party adds one by publishing a class under the ``crbio.senders`` entry-point group::

    [project.entry-points."crbio.senders"]
    my-operator = "my_package.sender:MyOperatorSender"

and naming it in the configuration (``[destinations.mssante] sender = "my-operator"``).
"""

from __future__ import annotations

import abc
import functools
import select
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Self

from crbio.dispatch.delivery import Acknowledgement, Channel, Job
from crbio.errors import ConfigurationError

__all__ = [
    "ENTRY_POINT_GROUP",
    "Sender",
    "SenderContext",
    "available_senders",
    "load_sender",
    "peer_closed",
]

ENTRY_POINT_GROUP = "crbio.senders"


@dataclass(frozen=True, slots=True)
class SenderContext:
    """What every sender may need beyond its own section: who is sending, with what software.

    Attributes:
        laboratory_finess: FINESS (géographique) of the sending laboratory, without prefix.
        laboratory_name: Its name.
        laboratory_oid: OID root of the laboratory's systems (XDS sourceId, HL7 facility).
        responsible_rpps: RPPS of the person responsible for the automated sending (VIHF).
        responsible_name: That person's "Nom Prénom".
        software_name: Name of the sending software (VIHF LPS_Nom, XDM README, MSH-3).
        software_version: Its version.
        nil: Product reference number from convergence.esante.gouv.fr (``X-MSS-NIL``).
        dmp_homologation: CNDA DMP homologation number (VIHF ``LPS_ID_HOMOLOGATION_DMP``).
        base_dir: Directory relative paths in the configuration are resolved against.
    """

    laboratory_finess: str
    laboratory_name: str
    laboratory_oid: str
    responsible_rpps: str | None = None
    responsible_name: str | None = None
    software_name: str = "crbio"
    software_version: str = ""
    nil: str | None = None
    dmp_homologation: str | None = None
    base_dir: Path = Path()

    def path(self, value: str | Path) -> Path:
        """A path from the configuration, resolved against :attr:`base_dir`."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path


class Sender(abc.ABC):
    """Delivers jobs over one channel; one instance serves many jobs, from one thread.

    ``send`` either returns an :class:`Acknowledgement` or raises
    :class:`~crbio.errors.TransientSendError` (the outbox retries later) or
    :class:`~crbio.errors.PermanentSendError` (the delivery goes to the dead letter with the
    server's reason). Any other exception is a sender bug; the outbox treats it as transient.
    """

    channel: ClassVar[Channel]

    @classmethod
    @abc.abstractmethod
    def from_config(cls, section: Mapping[str, Any], context: SenderContext) -> Self:
        """Build the sender from its ``[destinations.<channel>]`` section.

        Raises:
            ConfigurationError: a setting is missing or wrong; the message names it.
        """

    @abc.abstractmethod
    def send(self, job: Job) -> Acknowledgement:
        """Make one delivery and return what the destination acknowledged."""

    def find_delivered(self, job: Job) -> Acknowledgement | None:
        """After a crash mid-send: whether the destination already holds this delivery.

        Senders that can ask (the DMP, through ITI-18) return the acknowledgement of the
        earlier send so the outbox records it instead of sending again; the default says
        "cannot tell", and the outbox then resends with the same message id, which receivers
        de-duplicate on.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the sender is not used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def peer_closed(sock: socket.socket) -> bool:
    """Whether the server closed (or broke) a connection kept idle between two deliveries.

    Between exchanges a request/reply server has nothing to say, so a readable socket means
    it sent its FIN, a TLS alert or garbage: a sender that reused it would lose the next
    reply. Checking costs no round trip, unlike a NOOP.
    """
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def available_senders() -> dict[str, str]:
    """The registered sender names and the objects they point to."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


@functools.cache
def load_sender(name: str) -> type[Sender]:
    """The sender class registered under ``name`` in the ``crbio.senders`` group (looked up once per process).

    Raises:
        ConfigurationError: no sender has that name, or it is not a :class:`Sender`.
    """
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        known = ", ".join(sorted(available_senders())) or "none"
        raise ConfigurationError(f"unknown sender {name!r} (registered: {known})", code="config.sender")
    try:
        cls = found[0].load()
    except Exception as exc:  # a third-party package that fails to import
        raise ConfigurationError(f"sender {name!r} could not be loaded: {exc}", code="config.sender") from exc
    if not (isinstance(cls, type) and issubclass(cls, Sender)):
        raise ConfigurationError(f"sender {name!r} is not a crbio Sender", code="config.sender")
    return cls
