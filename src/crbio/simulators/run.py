"""All simulators at once, with a throw-away PKI and a ready-to-use dispatch configuration.

``Simulation`` is what ``crbio simulate``, the end-to-end tests and the conformity runs use::

    with Simulation(tmp_dir) as sim:
        config = sim.config              # DispatchConfig pointing at the simulators
        ...                              # dispatch, run workers, collect_returns(config)
        sim.xds.entries, sim.smtp.messages, sim.mllp.messages, sim.operator.messages
        sim.imap.messages()              # the lab's mailbox: the DSN and MDN that came back
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from crbio.dispatch.config import DispatchConfig
from crbio.errors import ConfigurationError
from crbio.simulators.base import Fault, FaultPlan
from crbio.simulators.pki import make_test_pki

__all__ = ["Simulation"]

SENDER_MAILBOX = "laboratoire@labo-simulation.mssante.fr"
OPERATOR_CLIENT_ID = "crbio-simulation"
PROCESSED_FOLDER = "crbio-traites"


def _toml_string(value: str | Path) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Simulation:
    """Start the XDS.b, SMTP, IMAP, operator-API and MLLP simulators and write ``crbio.toml`` beside them.

    The SMTP server puts the delivery status notifications and read receipts of what it
    accepts into the lab's mailbox on the IMAP server, which the configuration's ``[mailbox]``
    section points at (``crbio returns``, and ``crbio worker`` polls it).

    Args:
        directory: Where the PKI, the configuration, the outbox and what the servers received go.
        fault_rate: Share of requests each server answers with a random retryable fault.
        mssante: The MSSanté sender the configuration selects: ``smtp`` or ``operator-api``.
        seed: Seed of the random faults, for repeatable runs.
        known_patients: INS matricules the DMP knows (None: any INS).
        retry_delay: Initial retry delay written in the configuration (seconds).
        unknown_recipients: MSSanté addresses the SMTP server accepts, then bounces (5.1.1).
        request_mdn: Ask for read receipts (``[rules] request_mdn``).
        mdn_rate: The share of messages whose recipient sends the read receipt asked for.
        mdn_delay: Seconds before a read receipt arrives in the lab's mailbox.
        poll_seconds: How often ``crbio worker`` reads the lab's mailbox.
        retain: How many received messages each simulator keeps in memory (None: all, for
            tests that inspect them); everything is written under ``received/`` anyway.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        fault_rate: float = 0.0,
        mssante: str = "smtp",
        seed: int | None = None,
        known_patients: set[str] | None = None,
        retry_delay: float = 1.0,
        unknown_recipients: Iterable[str] = (),
        request_mdn: bool = True,
        mdn_rate: float = 1.0,
        mdn_delay: float = 0.0,
        poll_seconds: float = 2.0,
        retain: int | None = None,
    ) -> None:
        try:
            from crbio.simulators.smtp import SmtpSimulator
        except ImportError:
            raise ConfigurationError(
                "the simulators need the 'simulate' extra: pip install 'crbio[simulate]'", code="config.extra"
            ) from None
        from crbio.simulators.imap import ImapSimulator
        from crbio.simulators.mllp import MllpSimulator
        from crbio.simulators.operator_api import OperatorApiSimulator
        from crbio.simulators.xds import XdsSimulator

        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.mssante = mssante
        self.retry_delay = retry_delay
        self.request_mdn = request_mdn
        self.poll_seconds = poll_seconds
        self.pki = make_test_pki(self.directory / "pki")
        received = self.directory / "received"
        retryable = (Fault.BUSY, Fault.SERVER_ERROR, Fault.DROP)

        def faults(offset: int) -> FaultPlan:
            return FaultPlan(
                rate=fault_rate, random_faults=retryable, seed=None if seed is None else seed + offset
            )

        self.xds = XdsSimulator(
            self.pki,
            faults=faults(1),
            known_patients=known_patients,
            store_dir=received / "dmp",
            retain=retain,
        )
        self.imap_password = "simulation-mailbox-secret"
        self.imap = ImapSimulator(
            self.pki, user=SENDER_MAILBOX, password=self.imap_password, faults=faults(5), uidplus=True
        )
        self.smtp = SmtpSimulator(
            self.pki,
            faults=faults(2),
            store_dir=received / "mssante-smtp",
            report_mailbox=self.imap,
            unknown_recipients=unknown_recipients,
            mdn_rate=mdn_rate,
            mdn_delay=mdn_delay,
            seed=None if seed is None else seed + 6,
            retain=retain,
        )
        self.operator_secret = "simulation-secret"
        self.operator = OperatorApiSimulator(
            self.pki,
            client_id=OPERATOR_CLIENT_ID,
            client_secret=self.operator_secret,
            faults=faults(3),
            store_dir=received / "mssante-api",
            retain=retain,
        )
        self.mllp = MllpSimulator(
            pki=self.pki, tls=True, faults=faults(4), store_dir=received / "hl7v2", retain=retain
        )
        self.config_path = self.directory / "crbio.toml"
        self._started = False

    @property
    def fault_plans(self) -> list[FaultPlan]:
        """The fault plans of every simulator, to change the fault rate during a run."""
        return [self.xds.faults, self.smtp.faults, self.operator.faults, self.mllp.faults, self.imap.faults]

    def set_fault_rate(self, rate: float) -> None:
        """Make every simulator fail a share ``rate`` of requests with a retryable fault."""
        for plan in self.fault_plans:
            plan.set_rate(rate)

    def start(self) -> Simulation:
        """Start every server and write the configuration."""
        for server in (self.xds, self.imap, self.smtp, self.operator, self.mllp):
            server.start()
        self._started = True
        self.config_path.write_text(self.config_toml(), encoding="utf-8")
        return self

    def stop(self) -> None:
        """Stop every server."""
        if self._started:
            for server in (self.xds, self.smtp, self.imap, self.operator, self.mllp):
                server.stop()
            self._started = False

    def __enter__(self) -> Simulation:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def config(self) -> DispatchConfig:
        """The dispatch configuration pointing at the running simulators."""
        return DispatchConfig.load(self.config_path)

    def config_toml(self) -> str:
        """The configuration file's text."""
        secret_file = self.directory / "pki" / "operator-secret"
        secret_file.write_text(self.operator_secret, encoding="utf-8")
        mailbox_secret = self.directory / "pki" / "mailbox-password"
        mailbox_secret.write_text(self.imap_password, encoding="utf-8")
        pki = self.pki
        tls = (
            f"ca_file = {_toml_string(pki.ca_cert)}\n"
            f"client_cert = {_toml_string(pki.auth_cert)}\n"
            f"client_key = {_toml_string(pki.auth_key)}\n"
        )
        if self.mssante == "smtp":
            mssante = (
                'sender = "smtp"\n'
                f'host = "{self.smtp.host}"\nport = {self.smtp.port}\nstarttls = true\n'
                f'from = "{SENDER_MAILBOX}"\ntimeout = 10\n{tls}'
            )
        else:
            mssante = (
                'sender = "operator-api"\n'
                f'base_url = "{self.operator.base_url}"\ntoken_url = "{self.operator.token_url}"\n'
                f'client_id = "{OPERATOR_CLIENT_ID}"\nclient_secret_file = {_toml_string(secret_file)}\n'
                f'sender_address = "{SENDER_MAILBOX}"\ntimeout = 10\n'
                f"ca_file = {_toml_string(pki.ca_cert)}\n"
            )
        return f"""# crbio dispatch configuration for the local simulators (written by crbio simulate).
[laboratory]
finess = "920000015"
name = "Laboratoire de simulation"
oid = "1.2.250.1.999.77"
responsible_rpps = "10100012342"
responsible_name = "SIMULATION Responsable"

[software]
nil = "NIL-SIMULATION"
dmp_homologation = "HOMOLOGATION-SIMULATION"

[outbox]
path = {_toml_string(self.directory / "outbox.sqlite")}
lease_seconds = 30

[retry]
max_attempts = 30
initial_delay = {self.retry_delay}
max_delay = {max(self.retry_delay * 8, 1.0)}
multiplier = 2
jitter = 0.2

[rules]
request_mdn = {"true" if self.request_mdn else "false"}

[mailbox]
host = "{self.imap.host}"
port = {self.imap.port}
user = "{SENDER_MAILBOX}"
password_file = {_toml_string(mailbox_secret)}
folder = "INBOX"
processed_folder = "{PROCESSED_FOLDER}"
poll_seconds = {self.poll_seconds}
timeout = 10
{tls}
[destinations.dmp]
sender = "dmp"
url = "{self.xds.url}"
timeout = 10
sign_cert = {_toml_string(pki.sign_cert)}
sign_key = {_toml_string(pki.sign_key)}
{tls}
[destinations.mssante]
{mssante}
[destinations.hl7v2]
sender = "mllp"
name = "pfi-simulation"
host = "{self.mllp.host}"
port = {self.mllp.port}
tls = true
timeout = 10
receiving_application = "PFI"
receiving_facility = "CH-SIMULATION"
{tls}"""

    def describe(self) -> str:
        """A few lines for a human: where each simulator listens and where things are."""
        return "\n".join(
            [
                f"DMP (XDS.b)        {self.xds.url}",
                f"MSSanté (SMTP)     {self.smtp.host}:{self.smtp.port} (STARTTLS, client certificate)",
                f"MSSanté (IMAP)     {self.imap.host}:{self.imap.port} (the lab's mailbox: DSN and MDN)",
                f"MSSanté (API)      {self.operator.base_url}",
                f"HL7 v2 (MLLP/TLS)  {self.mllp.host}:{self.mllp.port}",
                f"configuration      {self.config_path}",
                f"received messages  {self.directory / 'received'}",
                f"try: crbio send --config {self.config_path} report.json",
                f"then: crbio returns --config {self.config_path}; crbio journal --config {self.config_path}",
            ]
        )
