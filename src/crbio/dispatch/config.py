"""The dispatch configuration: one TOML file for the lab identity, rules, outbox, retries and destinations.

::

    [laboratory]                # who sends (VIHF, XDS author and sourceId, HL7 PRT, XDM README)
    finess = "920000015"        # FINESS géographique, without the "1" prefix
    name = "Laboratoire des Charmes"
    oid = "1.2.250.1.999.1"     # OID root of the lab's systems
    responsible_rpps = "10100012342"   # person responsible for automated sending (optional)
    responsible_name = "CAMPARINI Marcel"

    [software]
    nil = "NIL-0000"            # X-MSS-NIL, from convergence.esante.gouv.fr
    dmp_homologation = "..."    # CNDA homologation number

    [outbox]
    backend = "sqlite"          # or "postgresql": workers on several machines share one outbox
    path = "crbio-outbox.sqlite"    # sqlite only
    # dsn_file = "outbox.dsn"   # postgresql only: the libpq connection string (a secret: dsn_file or dsn_env)
    lease_seconds = 120

    [retry]                     # exponential backoff with jitter for retryable failures
    max_attempts = 12
    initial_delay = 30          # seconds
    max_delay = 3600
    multiplier = 2
    jitter = 0.2

    [rules]                     # routing choices left to the lab (see crbio.dispatch.plan)
    mssante_patient = true      # send to the patient's Mon espace santé address
    patient_no_reply = true     # X-MSS-MES: FIN on messages to the patient
    masque_ps_blocks_mssante = true
    request_dsn = true
    request_mdn = false

    [destinations.dmp]          # one section per channel: enabled, sender, then the sender's keys
    enabled = true
    sender = "dmp"
    url = "https://…/si-dmp-server/v2/services"

    [mailbox]                   # the lab's MSSanté mailbox (IMAP), where DSN and MDN come back
    host = "imap.operateur.mssante.fr"
    user = "laboratoire@labo.mssante.fr"
    password_file = "secrets/imap-password"
    processed_folder = "crbio-traites"   # optional: move read reports there
    poll_seconds = 300          # how often `crbio worker` reads it

Relative paths are resolved against the file's directory. Secrets are read from files or
environment variables by the senders (``password_file``, ``client_secret_env``…) and are never
logged or printed. Loading the file also reads every certificate it names (``client_*``,
``sign_*`` of the enabled destinations and of ``[mailbox]``), so an expired or not yet valid one
stops the program at start-up, and one expiring within 30 days is announced then. A URL or host
carrying credentials (``https://user:password@…``, ``?access_token=…``) is refused: credentials
go in their own ``*_file`` / ``*_env`` settings, never where they would be logged. Certificate
verification cannot be switched off: there is no setting for it.
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from crbio import __version__
from crbio.dispatch.delivery import Channel
from crbio.dispatch.senders.base import SenderContext
from crbio.dispatch.tls import check_credentials, read_secret
from crbio.errors import ConfigurationError

__all__ = [
    "DEFAULT_SENDERS",
    "Destination",
    "DispatchConfig",
    "MailboxSettings",
    "RetryPolicy",
    "RoutingRules",
]

DEFAULT_SENDERS = {Channel.DMP: "dmp", Channel.MSSANTE: "smtp", Channel.HL7V2: "mllp"}

_SECTIONS = {"laboratory", "software", "outbox", "retry", "rules", "destinations", "mailbox"}
_MAILBOX_KEYS = {
    "host",
    "port",
    "user",
    "password",
    "password_file",
    "password_env",
    "ca_file",
    "client_cert",
    "client_key",
    "client_pkcs12",
    "client_password",
    "client_password_file",
    "client_password_env",
    "folder",
    "processed_folder",
    "poll_seconds",
    "timeout",
    "max_message_bytes",
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter for retryable failures, and when to give up."""

    max_attempts: int = 12
    initial_delay: float = 30.0
    max_delay: float = 3600.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** max(0, attempt - 1))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1 + spread))


@dataclass(frozen=True, slots=True)
class RoutingRules:
    """Routing choices the domain leaves to the laboratory; defaults follow the ANS rules."""

    mssante_patient: bool = True
    patient_no_reply: bool = True
    masque_ps_blocks_mssante: bool = True
    request_dsn: bool = True
    request_mdn: bool = False


@dataclass(frozen=True, slots=True)
class Destination:
    """One channel's section: switched on or off, the sender serving it, the sender's settings."""

    channel: Channel
    enabled: bool
    sender: str
    # Out of repr: it may hold an inline secret (local tests) and reprs end up in logs.
    settings: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def address(self) -> str:
        """The recipient address of a system destination (HL7 v2): its configured name."""
        return str(self.settings.get("name", self.channel.value))


@dataclass(frozen=True)
class MailboxSettings:
    """The ``[mailbox]`` section: the lab's MSSanté mailbox, read over IMAP for return reports.

    The password (``password_file`` / ``password_env``) and the TLS settings (``ca_file``,
    ``client_*``) stay in ``settings`` and are read when the mailbox is opened, so that a
    command that does not read the mailbox never needs them.
    """

    host: str
    user: str
    port: int = 993
    folder: str = "INBOX"
    processed_folder: str | None = None
    poll_seconds: float = 300.0
    timeout: float = 30.0
    max_message_bytes: int = 32 * 1024 * 1024
    settings: Mapping[str, Any] = field(default_factory=dict, repr=False)  # may hold a password


@dataclass(frozen=True)
class DispatchConfig:
    """Everything dispatch needs, read from one TOML file (see the module docstring)."""

    context: SenderContext
    outbox_path: Path
    lease_seconds: float = 120.0
    outbox_backend: str = "sqlite"  # "sqlite" or "postgresql"
    outbox_dsn: str | None = field(default=None, repr=False)  # postgresql: it may hold a password
    retry: RetryPolicy = RetryPolicy()
    rules: RoutingRules = RoutingRules()
    destinations: Mapping[Channel, Destination] = field(default_factory=dict)
    mailbox: MailboxSettings | None = None

    def destination(self, channel: Channel) -> Destination | None:
        """The enabled destination of a channel, or None when it is off or not configured."""
        found = self.destinations.get(channel)
        return found if found is not None and found.enabled else None

    @classmethod
    def load(cls, path: str | Path) -> DispatchConfig:
        """Read a TOML configuration file.

        Raises:
            ConfigurationError: the file is missing or not TOML, or a setting is wrong; the
                message names the setting (``retry.max_attempts``…), never a secret's value.
        """
        file = Path(path)
        try:
            # utf-8-sig: a BOM left by a Windows editor is not a TOML error.
            data = tomllib.loads(file.read_text(encoding="utf-8-sig"))
        except OSError as exc:
            raise ConfigurationError(f"{file}: cannot read ({exc.strerror})", code="config.file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{file}: not valid TOML ({exc})", code="config.file") from None
        except RecursionError:  # tomllib recurses once per nested array or inline table
            raise ConfigurationError(
                f"{file}: not valid TOML (nested too deeply)", code="config.file"
            ) from None
        return cls.from_mapping(data, base_dir=file.resolve().parent)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base_dir: Path | None = None) -> DispatchConfig:
        """Build the configuration from already-parsed TOML data."""
        base = base_dir or Path.cwd()
        unknown = sorted(set(data) - _SECTIONS)
        if unknown:
            raise ConfigurationError(f"{unknown[0]}: unknown section", code="config.key")
        lab = _table(data, "laboratory")
        software = _table(data, "software")
        context = SenderContext(
            laboratory_finess=_required(lab, "laboratory", "finess"),
            laboratory_name=_required(lab, "laboratory", "name"),
            laboratory_oid=_required(lab, "laboratory", "oid"),
            responsible_rpps=_string(lab, "laboratory", "responsible_rpps", required=False),
            responsible_name=_string(lab, "laboratory", "responsible_name", required=False),
            software_name=_string(software, "software", "name", required=False) or "crbio",
            software_version=_string(software, "software", "version", required=False) or __version__,
            nil=_string(software, "software", "nil", required=False),
            dmp_homologation=_string(software, "software", "dmp_homologation", required=False),
            base_dir=base,
        )
        _only(lab, "laboratory", {"finess", "name", "oid", "responsible_rpps", "responsible_name"})
        _only(software, "software", {"name", "version", "nil", "dmp_homologation"})
        outbox = _table(data, "outbox")
        _only(outbox, "outbox", {"backend", "path", "dsn", "dsn_env", "dsn_file", "lease_seconds"})
        backend, dsn = _outbox_backend(outbox, context)
        outbox_path = Path(
            _string(outbox, "outbox", "path", required=False) or "crbio-outbox.sqlite"
        ).expanduser()
        retry_table = _table(data, "retry")
        _only(retry_table, "retry", set(RetryPolicy.__slots__))
        retry = RetryPolicy(**{k: _number(retry_table, "retry", k) for k in retry_table})  # type: ignore[arg-type]
        if (
            retry.max_attempts < 1
            or retry.initial_delay < 0
            or retry.multiplier < 1
            or not 0 <= retry.jitter < 1
        ):
            raise ConfigurationError("retry: values out of range", code="config.value")
        rules_table = _table(data, "rules")
        _only(rules_table, "rules", set(RoutingRules.__slots__))
        for key, value in rules_table.items():
            if not isinstance(value, bool):
                raise ConfigurationError(f"rules.{key}: must be true or false", code="config.value")
        destinations: dict[Channel, Destination] = {}
        for name, section in _table(data, "destinations").items():
            try:
                channel = Channel(name)
            except ValueError:
                known = ", ".join(c.value for c in Channel)
                raise ConfigurationError(
                    f"destinations.{name}: unknown channel (one of {known})", code="config.key"
                ) from None
            if not isinstance(section, Mapping):
                raise ConfigurationError(f"destinations.{name}: must be a table", code="config.value")
            settings = {k: v for k, v in section.items() if k not in {"enabled", "sender"}}
            enabled = section.get("enabled", True)
            if not isinstance(enabled, bool):
                raise ConfigurationError(
                    f"destinations.{name}.enabled: must be true or false", code="config.value"
                )
            sender = (
                _string(section, f"destinations.{name}", "sender", required=False) or DEFAULT_SENDERS[channel]
            )
            _no_credentials_in_addresses(settings, f"destinations.{name}")
            if enabled:
                check_credentials(settings, context, where=f"destinations.{name}")
            destinations[channel] = Destination(channel, enabled, sender, settings)
        return cls(
            context=context,
            outbox_path=outbox_path if outbox_path.is_absolute() else base / outbox_path,
            lease_seconds=float(
                _number(outbox, "outbox", "lease_seconds") if "lease_seconds" in outbox else 120.0
            ),
            outbox_backend=backend,
            outbox_dsn=dsn,
            retry=retry,
            rules=RoutingRules(**rules_table),
            destinations=destinations,
            mailbox=_mailbox(data, context),
        )


def _outbox_backend(outbox: Mapping[str, Any], context: SenderContext) -> tuple[str, str | None]:
    """The outbox backend and, for PostgreSQL, its connection string (read like any secret)."""
    backend = _string(outbox, "outbox", "backend", required=False) or "sqlite"
    dsn_keys = sorted({"dsn", "dsn_env", "dsn_file"} & set(outbox))
    if backend == "sqlite":
        if dsn_keys:
            raise ConfigurationError(
                f'outbox.{dsn_keys[0]}: only for backend = "postgresql"', code="config.value"
            )
        return backend, None
    if backend != "postgresql":
        raise ConfigurationError('outbox.backend: must be "sqlite" or "postgresql"', code="config.value")
    if "path" in outbox:
        raise ConfigurationError('outbox.path: only for backend = "sqlite"', code="config.value")
    return backend, read_secret(outbox, "dsn", where="outbox", context=context)


def _folder(table: Mapping[str, Any], key: str, default: str | None) -> str | None:
    value = table.get(key, default)
    if value is None:
        return None
    # Non-ASCII names would need IMAP's modified UTF-7; nobody needs that for a BAL applicative.
    if not isinstance(value, str) or not value.strip() or not all(" " <= c <= "~" for c in value):
        raise ConfigurationError(
            f"mailbox.{key}: must be a non-empty folder name in printable ASCII", code="config.value"
        )
    return value


def _mailbox(data: Mapping[str, Any], context: SenderContext) -> MailboxSettings | None:
    if "mailbox" not in data:
        return None
    table = _table(data, "mailbox")
    _only(table, "mailbox", _MAILBOX_KEYS)
    _no_credentials_in_addresses(table, "mailbox")
    check_credentials(table, context, where="mailbox")
    host = _required(table, "mailbox", "host").strip()
    user = _required(table, "mailbox", "user")
    if not {"password", "password_file", "password_env"} & set(table):
        raise ConfigurationError("mailbox: password_file or password_env is required", code="config.secret")
    port = table.get("port", 993)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigurationError("mailbox.port: must be a TCP port number", code="config.value")
    numbers: dict[str, float] = {}
    for key, default in (("poll_seconds", 300.0), ("timeout", 30.0), ("max_message_bytes", 32 * 1024**2)):
        value = _number(table, "mailbox", key) if key in table else default
        if value <= 0:
            raise ConfigurationError(f"mailbox.{key}: must be a positive number", code="config.value")
        numbers[key] = value
    folder = _folder(table, "folder", "INBOX")
    processed = _folder(table, "processed_folder", None)
    assert folder is not None
    if processed is not None and processed.upper() == folder.upper():
        raise ConfigurationError(
            "mailbox.processed_folder: must differ from mailbox.folder", code="config.value"
        )
    return MailboxSettings(
        host=host,
        user=user,
        port=port,
        folder=folder,
        processed_folder=processed,
        poll_seconds=float(numbers["poll_seconds"]),
        timeout=float(numbers["timeout"]),
        max_message_bytes=int(numbers["max_message_bytes"]),
        settings=dict(table),
    )


#: Query parameters that carry credentials: a URL is logged (HTTP clients log it), a secret is not.
_SECRET_PARAMETERS = frozenset(
    {
        *("access_token", "api_key", "apikey", "client_secret", "key"),
        *("pass", "password", "pwd", "secret", "token"),
    }
)


def _no_credentials_in_addresses(table: Mapping[str, Any], where: str) -> None:
    """Refuse a URL or host setting that carries credentials; the message never quotes them."""
    for key, value in table.items():
        if not isinstance(value, str):
            continue
        if "://" in value:
            parts = urlsplit(value.strip())
            if "@" in parts.netloc:
                raise ConfigurationError(
                    f"{where}.{key}: the URL must not carry credentials (user:password@); "
                    "give them in their own *_file or *_env setting",
                    code="config.value",
                )
            names = {name.lower() for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
            secret = sorted(names & _SECRET_PARAMETERS)
            if secret:
                raise ConfigurationError(
                    f"{where}.{key}: the URL must not carry credentials (query parameter {secret[0]!r}); "
                    "give them in their own *_file or *_env setting",
                    code="config.value",
                )
        elif key == "host" and "@" in value:
            raise ConfigurationError(
                f"{where}.{key}: must be a host name, without credentials (user@)", code="config.value"
            )


def _table(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{name}: must be a table", code="config.value")
    return value


def _only(table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigurationError(f"{where}.{unknown[0]}: unknown setting", code="config.key")


def _string(table: Mapping[str, Any], where: str, key: str, *, required: bool = True) -> str | None:
    value = table.get(key)
    if value is None:
        if required:
            raise ConfigurationError(f"{where}.{key}: required", code="config.missing")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{where}.{key}: must be a non-empty string", code="config.value")
    return value


def _required(table: Mapping[str, Any], where: str, key: str) -> str:
    value = _string(table, where, key)
    assert value is not None
    return value


def _number(table: Mapping[str, Any], where: str, key: str) -> float | int:
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigurationError(f"{where}.{key}: must be a non-negative number", code="config.value")
    return value
