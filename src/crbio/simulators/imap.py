r"""The laboratory's MSSanté mailbox as an IMAP4rev1 server, for the tests and ``crbio simulate``.

A real IMAP server (RFC 3501) on 127.0.0.1 over implicit TLS with the test PKI's server
certificate; a client certificate, when presented, is verified against the test CA, and by
default one is required before ``LOGIN`` succeeds (as from an operator that authenticates a
BAL applicative by its ORG certificate). One account (``user``/``password``) owns the
folders; :meth:`ImapSimulator.append` fills them (the SMTP simulator puts its delivery and
read reports there), optionally after a delay.

Commands: ``CAPABILITY``, ``NOOP``, ``LOGOUT``, ``LOGIN``, ``SELECT``, ``EXAMINE``, ``CREATE``,
``SEARCH``, ``FETCH``, ``STORE``, ``COPY``, ``EXPUNGE``, ``CLOSE`` and their ``UID`` forms, with
``UID MOVE`` (RFC 6851) and ``UID EXPUNGE`` (RFC 4315, with ``COPYUID``) when those extensions
are switched on. Search keys: ``ALL``, sequence and ``UID`` sets, ``SEEN``/``UNSEEN``,
``DELETED``/``UNDELETED``, ``FLAGGED``/``UNFLAGGED``, ``ANSWERED``/``UNANSWERED``,
``KEYWORD``/``UNKEYWORD``, ``LARGER``/``SMALLER``, ``NOT``, ``OR`` and parenthesised groups.
Fetch items: ``UID``, ``FLAGS``, ``RFC822.SIZE``, ``INTERNALDATE``, ``RFC822``,
``RFC822.HEADER``, ``RFC822.TEXT``, ``BODY[]``, ``BODY[HEADER]``, ``BODY[TEXT]`` and their
``BODY.PEEK`` forms, message data sent as literals. Client literals (``{n}`` with a
continuation, ``{n+}`` without) are accepted anywhere an argument may be one.

A simplification: sessions do not tell each other about expunged messages, so a test that
expunges in one connection should not rely on sequence numbers in another one opened before.

Faults are drawn once per connection: DROP closes it before the greeting, SERVER_ERROR, BUSY
and REJECT greet with ``* BYE [UNAVAILABLE]``, LATENCY delays the greeting.
"""

from __future__ import annotations

import itertools
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from crbio.simulators.base import Fault, FaultPlan, LocalServer, server_tls_context
from crbio.simulators.pki import TestPki

__all__ = ["ImapSimulator", "StoredMessage"]

log = logging.getLogger("crbio.simulators.imap")

_MAX_LINE = 64 * 1024
_MAX_LITERAL = 1024 * 1024
_LITERAL_AT_END = re.compile(rb"\{(\d{1,10})(\+?)\}\r?\n\Z")
_LITERAL = re.compile(rb"\{(\d{1,10})\+?\}\r?\n")
_SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")}
_ATOM = re.compile(r"[!#$&'+-Z^-z|}~]+")  # RFC 3501 ATOM-CHAR, without "]" for flags
_MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
}
_SECTIONS = {
    "RFC822": ("RFC822", "", False),
    "RFC822.HEADER": ("RFC822.HEADER", "HEADER", True),
    "RFC822.TEXT": ("RFC822.TEXT", "TEXT", False),
    "BODY[]": ("BODY[]", "", False),
    "BODY.PEEK[]": ("BODY[]", "", True),
    "BODY[HEADER]": ("BODY[HEADER]", "HEADER", False),
    "BODY.PEEK[HEADER]": ("BODY[HEADER]", "HEADER", True),
    "BODY[TEXT]": ("BODY[TEXT]", "TEXT", False),
    "BODY.PEEK[TEXT]": ("BODY[TEXT]", "TEXT", True),
}


@dataclass
class StoredMessage:
    """One message of a folder: its UID, flags, bytes and arrival time."""

    uid: int
    data: bytes
    flags: set[str] = field(default_factory=set)
    internal_date: datetime = field(default_factory=lambda: datetime.now(UTC))

    def has_flag(self, flag: str) -> bool:
        """Whether the message carries ``flag`` (flags compare without regard to case)."""
        return flag.lower() in {f.lower() for f in self.flags}


@dataclass
class _Folder:
    name: str
    uidvalidity: int
    uidnext: int = 1
    messages: list[StoredMessage] = field(default_factory=list)


class _Quoted(str):
    """A quoted string or a literal, as opposed to an atom."""

    __slots__ = ()


Token = str | list["Token"]


class _Bad(Exception):
    """A command this server cannot parse: answered BAD."""


class _No(Exception):
    """A command refused: answered NO."""


def _tokens(raw: bytes) -> list[Token]:
    """The arguments of a command line (its literals inline, as on the wire)."""
    stack: list[list[Token]] = [[]]
    pos, end = 0, len(raw)
    while pos < end:
        char = raw[pos : pos + 1]
        if char in (b" ", b"\r", b"\n"):
            pos += 1
        elif char == b"(":
            inner: list[Token] = []
            stack[-1].append(inner)
            stack.append(inner)
            pos += 1
        elif char == b")":
            if len(stack) == 1:
                raise _Bad("unbalanced parentheses")
            stack.pop()
            pos += 1
        elif char == b'"':
            pos += 1
            value = bytearray()
            while pos < end and raw[pos : pos + 1] != b'"':
                if raw[pos : pos + 1] == b"\\":
                    pos += 1
                if pos < end:
                    value += raw[pos : pos + 1]
                pos += 1
            if pos >= end:
                raise _Bad("unterminated quoted string")
            pos += 1
            stack[-1].append(_Quoted(value.decode("utf-8", "replace")))
        elif char == b"{":
            found = _LITERAL.match(raw, pos)
            if found is None:
                raise _Bad("invalid literal")
            size = int(found.group(1))
            start = found.end()
            stack[-1].append(_Quoted(raw[start : start + size].decode("utf-8", "replace")))
            pos = start + size
        else:
            start, depth = pos, 0
            while pos < end:
                char = raw[pos : pos + 1]
                if depth == 0 and char in (b" ", b"(", b")", b"\r", b"\n"):
                    break
                depth += (char == b"[") - (char == b"]")
                pos += 1
            stack[-1].append(raw[start:pos].decode("utf-8", "replace"))
    if len(stack) != 1:
        raise _Bad("unbalanced parentheses")
    return stack[0]


def _atom(token: Token, what: str) -> str:
    if not isinstance(token, str) or isinstance(token, _Quoted):
        raise _Bad(f"{what}: an atom is expected")
    return token


def _astring(token: Token, what: str) -> str:
    if not isinstance(token, str):
        raise _Bad(f"{what}: a string is expected")
    return token


def _number_set(text: str, largest: int) -> list[tuple[int, int]]:
    """An IMAP sequence set as ranges; ``*`` is the largest number in use."""
    ranges = []
    for part in text.split(","):
        low, colon, high = part.partition(":")
        try:
            a = largest if low == "*" else int(low)
            b = (largest if high == "*" else int(high)) if colon else a
        except ValueError:
            raise _Bad(f"invalid sequence set {text[:40]!r}") from None
        if (low != "*" and a < 1) or (colon and high != "*" and b < 1):
            raise _Bad("sequence numbers start at 1")
        ranges.append((min(a, b), max(a, b)))
    return ranges


def _in(ranges: list[tuple[int, int]], value: int) -> bool:
    return any(low <= value <= high for low, high in ranges)


def _is_set(token: Token) -> bool:
    return (
        isinstance(token, str) and not isinstance(token, _Quoted) and bool(re.fullmatch(r"[0-9*:,]+", token))
    )


def _split(data: bytes) -> tuple[bytes, bytes]:
    """A message's header (with the blank line that ends it) and text."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        index = data.find(separator)
        if index >= 0:
            return data[: index + len(separator)], data[index + len(separator) :]
    return data, b""


def _flag_list(flags: Iterable[str]) -> str:
    return "(" + " ".join(sorted(flags)) + ")"


def _canonical_flag(token: Token) -> str:
    flag = _atom(token, "flag")
    if flag.startswith("\\"):
        canonical = _SYSTEM_FLAGS.get(flag.lower())
        if canonical is None:
            raise _Bad(f"{flag[:20]} is not a flag that can be stored")
        return canonical
    if not _ATOM.fullmatch(flag):
        raise _Bad("invalid keyword")
    return flag


class ImapSimulator:
    r"""A local IMAP4rev1 server holding the laboratory's mailbox (see the module docstring).

    Args:
        pki: The test PKI: server certificate, and the CA client certificates must chain to.
        user: The login of the mailbox (the lab's MSSanté address).
        password: Its password.
        require_client_cert: Refuse ``LOGIN`` on a connection without a client certificate.
        faults: Faults to inject per connection (a new empty plan by default).
        move: Offer ``MOVE`` (RFC 6851).
        uidplus: Offer ``UIDPLUS`` (RFC 4315): ``UID EXPUNGE`` and ``COPYUID``.
        keywords: Let clients store keywords (``\*`` in ``PERMANENTFLAGS``).
        idle_timeout: Seconds a connection may stay silent before it is closed.
    """

    def __init__(
        self,
        pki: TestPki,
        *,
        user: str = "laboratoire@labo-simulation.mssante.fr",
        password: str = "imap-secret",
        require_client_cert: bool = True,
        faults: FaultPlan | None = None,
        move: bool = False,
        uidplus: bool = False,
        keywords: bool = True,
        idle_timeout: float = 120.0,
    ) -> None:
        self.pki = pki
        self.user = user
        self.password = password
        self.require_client_cert = require_client_cert
        self.faults = faults if faults is not None else FaultPlan()
        self.move = move
        self.uidplus = uidplus
        self.keywords = keywords
        self.idle_timeout = idle_timeout
        self.host = "127.0.0.1"
        self.commands: list[str] = []
        self.failed_logins = 0
        self._lock = threading.RLock()
        self._validity = itertools.count(int(time.time()))
        self._folders: dict[str, _Folder] = {"INBOX": _Folder("INBOX", next(self._validity))}
        self._pending: list[tuple[float, str, bytes, tuple[str, ...]]] = []
        self._server: LocalServer | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> ImapSimulator:
        """Start listening on 127.0.0.1 (an ephemeral port: see :attr:`port`)."""
        if self._server is None:
            server = LocalServer(
                self,
                self._serve,
                name="crbio-imap-simulator",
                tls=server_tls_context(self.pki, client_certificate="optional"),
                on_handshake_error=lambda error: log.info("IMAP simulator: TLS handshake failed (%s)", error),
            )
            server.start()
            self._server = server
            log.info("IMAP simulator listening on %s:%s", self.host, server.port)
        return self

    def stop(self) -> None:
        """Close every connection and stop the server."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> ImapSimulator:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (0 before :meth:`start`)."""
        return self._server.port if self._server is not None else 0

    @property
    def capabilities(self) -> list[str]:
        """What the server announces."""
        return [
            "IMAP4rev1",
            "LITERAL+",
            *(["MOVE"] if self.move else []),
            *(["UIDPLUS"] if self.uidplus else []),
        ]

    # -- the mailbox ----------------------------------------------------------------------------

    @staticmethod
    def _name(name: str) -> str:
        return "INBOX" if name.upper() == "INBOX" else name

    def _folder(self, name: str) -> _Folder | None:
        return self._folders.get(self._name(name))

    def _add(self, folder: _Folder, data: bytes, flags: Iterable[str]) -> StoredMessage:
        message = StoredMessage(folder.uidnext, data, set(flags))
        folder.uidnext += 1
        folder.messages.append(message)
        return message

    def _deliver_due(self) -> None:
        # UIDs are given on arrival, so they grow in the order messages become visible.
        now = time.monotonic()
        due = [p for p in self._pending if p[0] <= now]
        if due:
            self._pending = [p for p in self._pending if p[0] > now]
            for _, name, data, flags in sorted(due, key=lambda p: p[0]):
                folder = self._folders.setdefault(name, _Folder(name, next(self._validity)))
                self._add(folder, data, flags)

    def append(
        self, data: bytes, *, mailbox: str = "INBOX", flags: Iterable[str] = (), delay: float = 0.0
    ) -> int | None:
        """Put a message in a folder (created if needed), now or after ``delay`` seconds.

        Returns its UID, or None for a delayed message (its UID is given when it arrives).
        """
        name = self._name(mailbox)
        with self._lock:
            if delay > 0:
                self._pending.append((time.monotonic() + delay, name, bytes(data), tuple(flags)))
                return None
            folder = self._folders.setdefault(name, _Folder(name, next(self._validity)))
            return self._add(folder, bytes(data), flags).uid

    def create(self, name: str) -> None:
        """Create a folder (nothing happens if it exists)."""
        with self._lock:
            self._folders.setdefault(self._name(name), _Folder(self._name(name), next(self._validity)))

    def messages(self, mailbox: str = "INBOX") -> list[StoredMessage]:
        """The messages of a folder now (copies), oldest first; an unknown folder has none."""
        with self._lock:
            self._deliver_due()
            folder = self._folder(mailbox)
            if folder is None:
                return []
            return [StoredMessage(m.uid, m.data, set(m.flags), m.internal_date) for m in folder.messages]

    @property
    def pending(self) -> int:
        """How many delayed messages have not arrived yet."""
        with self._lock:
            self._deliver_due()
            return len(self._pending)

    @property
    def folders(self) -> list[str]:
        """The folder names."""
        with self._lock:
            return sorted(self._folders)

    # -- serving ------------------------------------------------------------------------------

    def _serve(self, connection: socket.socket, address: Any) -> None:
        connection.settimeout(self.idle_timeout)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _Session(self, connection).run()


class _Session:
    """One client connection: the command loop and the handlers."""

    def __init__(self, simulator: ImapSimulator, connection: socket.socket) -> None:
        self.sim = simulator
        self.connection = connection
        self.reader = connection.makefile("rb")
        self.authenticated = False
        self.folder: _Folder | None = None
        self.readonly = False
        self.known_exists = 0
        self.output = bytearray()

    def send(self, data: bytes) -> None:
        # Written out once per command: many small TLS records cost round trips.
        self.output += data

    def flush(self) -> None:
        if self.output:
            self.connection.sendall(self.output)
            self.output.clear()

    def line(self, text: str) -> None:
        self.send(text.encode("utf-8") + b"\r\n")

    def run(self) -> None:
        try:
            fault = self.sim.faults.draw()
            if fault is Fault.DROP:
                return
            if fault is not None:
                self.line("* BYE [UNAVAILABLE] Service temporarily unavailable, try again later")
                return
            self.line(
                f"* OK [CAPABILITY {' '.join(self.sim.capabilities)}] crbio MSSante IMAP simulator ready"
            )
            while True:
                self.flush()
                raw = self.read_command()
                if raw is None:
                    return
                if not self.execute(raw):
                    return
        finally:
            try:
                self.flush()
            finally:
                self.reader.close()

    def read_command(self) -> bytes | None:
        """One command with its literals, as received; None when the client has gone."""
        raw = b""
        while True:
            line = self.reader.readline(_MAX_LINE + 1)
            if not line or len(line) > _MAX_LINE or len(raw) > 8 * _MAX_LINE:
                if line:
                    self.line("* BYE Command line too long")
                return None
            raw += line
            found = _LITERAL_AT_END.search(line)
            if found is None:
                return raw
            size = int(found.group(1))
            if size > _MAX_LITERAL:
                self.line("* BYE Literal too large")
                return None
            if not found.group(2):
                self.line("+ Ready for literal data")
                self.flush()
            data = self.reader.read(size)
            if len(data) < size:
                return None
            raw += data

    def execute(self, raw: bytes) -> bool:
        """Run one command; False when the connection must end (LOGOUT)."""
        # The tag is known before the rest is parsed, so that a BAD answer carries it.
        first = raw.split(b" ", 1)[0].decode("ascii", "replace")
        tag = first if _ATOM.fullmatch(first) and "+" not in first else "*"
        try:
            tokens = _tokens(raw)
            if len(tokens) < 2 or not isinstance(tokens[0], str) or not isinstance(tokens[1], str):
                raise _Bad("a tag and a command are expected")
            tag = _atom(tokens[0], "tag")
            name = _atom(tokens[1], "command").upper()
            args = tokens[2:]
            uid = name == "UID"
            if uid:
                if not args:
                    raise _Bad("UID needs a command")
                name = _atom(args[0], "command").upper()
                args = args[1:]
            with self.sim._lock:
                self.sim.commands.append(f"UID {name}" if uid else name)
                self.sim._deliver_due()
                handler = self.handler(name, uid)
                result = handler(args, uid)
                if name == "LOGOUT":
                    self.line(f"{tag} OK {result}")
                    return False
                self.tell_exists()
            self.line(f"{tag} OK {result}")
        except _No as refusal:
            self.line(f"{tag} NO {refusal}")
        except _Bad as error:
            self.line(f"{tag} BAD {error}")
        return True

    def handler(self, name: str, uid: bool) -> Callable[[list[Token], bool], str]:
        anywhere = {"CAPABILITY": self.capability, "NOOP": self.noop, "LOGOUT": self.logout}
        before = {"LOGIN": self.login}
        authenticated = {"SELECT": self.select, "EXAMINE": self.examine, "CREATE": self.create}
        selected = {
            "SEARCH": self.search,
            "FETCH": self.fetch,
            "STORE": self.store,
            "COPY": self.copy,
            "EXPUNGE": self.expunge,
            "CLOSE": self.close,
            **({"MOVE": self.move} if self.sim.move else {}),
        }
        if uid and name not in {"SEARCH", "FETCH", "STORE", "COPY", "MOVE", "EXPUNGE"}:
            raise _Bad(f"UID {name} is not a command")
        if uid and name == "EXPUNGE" and not self.sim.uidplus:
            raise _Bad("UID EXPUNGE needs UIDPLUS")
        if name in anywhere:
            found = anywhere[name]
        elif name in before:
            if self.authenticated:
                raise _Bad(f"{name} is not valid once logged in")
            found = before[name]
        elif name in authenticated or name in selected:
            if not self.authenticated:
                raise _Bad(f"{name} needs LOGIN first")
            if name in selected and self.folder is None:
                raise _Bad(f"{name} needs a selected folder")
            found = authenticated.get(name) or selected[name]
        else:
            raise _Bad(f"unknown command {name[:20]}")
        return found

    def tell_exists(self) -> None:
        if self.folder is not None and len(self.folder.messages) > self.known_exists:
            self.known_exists = len(self.folder.messages)
            self.line(f"* {self.known_exists} EXISTS")

    # -- any state ------------------------------------------------------------------------------

    def capability(self, args: list[Token], uid: bool) -> str:
        self.line(f"* CAPABILITY {' '.join(self.sim.capabilities)}")
        return "CAPABILITY completed"

    def noop(self, args: list[Token], uid: bool) -> str:
        return "NOOP completed"

    def logout(self, args: list[Token], uid: bool) -> str:
        self.line("* BYE crbio MSSante IMAP simulator logging out")
        return "LOGOUT completed"

    def login(self, args: list[Token], uid: bool) -> str:
        if len(args) != 2:
            raise _Bad("LOGIN needs a user name and a password")
        user, password = _astring(args[0], "user"), _astring(args[1], "password")
        certificate = getattr(self.connection, "getpeercert", lambda **_: None)(binary_form=True)
        if self.sim.require_client_cert and not certificate:
            self.sim.failed_logins += 1
            raise _No("[AUTHENTICATIONFAILED] A client certificate is required (IGC Sante ORG certificate)")
        if user != self.sim.user or password != self.sim.password:
            self.sim.failed_logins += 1
            raise _No("[AUTHENTICATIONFAILED] Authentication failed")
        self.authenticated = True
        return f"[CAPABILITY {' '.join(self.sim.capabilities)}] LOGIN completed"

    # -- authenticated --------------------------------------------------------------------------

    def select(self, args: list[Token], uid: bool, *, readonly: bool = False) -> str:
        if len(args) != 1:
            raise _Bad("SELECT needs a folder name")
        self.folder = None
        folder = self.sim._folder(_astring(args[0], "folder"))
        if folder is None:
            raise _No("[NONEXISTENT] No such folder")
        self.folder, self.readonly = folder, readonly
        permanent = [*_SYSTEM_FLAGS.values(), *(["\\*"] if self.sim.keywords else [])]
        self.line(f"* FLAGS {_flag_list(_SYSTEM_FLAGS.values())}")
        self.line(f"* OK [PERMANENTFLAGS ({' '.join(permanent)})] Flags permitted")
        self.line(f"* {len(folder.messages)} EXISTS")
        self.line("* 0 RECENT")
        unseen = next((n for n, m in enumerate(folder.messages, 1) if not m.has_flag("\\Seen")), None)
        if unseen is not None:
            self.line(f"* OK [UNSEEN {unseen}] First unseen message")
        self.line(f"* OK [UIDVALIDITY {folder.uidvalidity}] UIDs valid")
        self.line(f"* OK [UIDNEXT {folder.uidnext}] Predicted next UID")
        self.known_exists = len(folder.messages)
        return "[READ-ONLY] EXAMINE completed" if readonly else "[READ-WRITE] SELECT completed"

    def examine(self, args: list[Token], uid: bool) -> str:
        return self.select(args, uid, readonly=True)

    def create(self, args: list[Token], uid: bool) -> str:
        if len(args) != 1:
            raise _Bad("CREATE needs a folder name")
        name = _astring(args[0], "folder").rstrip("/")
        if not name or self.sim._folder(name) is not None:
            raise _No("[ALREADYEXISTS] Folder already exists")
        self.sim.create(name)
        return "CREATE completed"

    # -- selected -------------------------------------------------------------------------------

    @property
    def selected(self) -> _Folder:
        assert self.folder is not None
        return self.folder

    def matching(self, text: Token, uid: bool) -> list[tuple[int, StoredMessage]]:
        """The (sequence number, message) pairs a sequence or UID set names."""
        messages = self.selected.messages
        if uid:
            ranges = _number_set(_atom(text, "UID set"), messages[-1].uid if messages else 0)
            return [(n, m) for n, m in enumerate(messages, 1) if _in(ranges, m.uid)]
        given = _atom(text, "sequence set")
        ranges = _number_set(given, len(messages))
        if any(int(n) > len(messages) for n in re.findall(r"[0-9]+", given)):
            raise _Bad("no such message sequence number")
        return [(n, m) for n, m in enumerate(messages, 1) if _in(ranges, n)]

    def criterion(self, tokens: list[Token], index: int) -> tuple[Callable[[int, StoredMessage], bool], int]:
        if index >= len(tokens):
            raise _Bad("incomplete search")
        token = tokens[index]
        if isinstance(token, list):
            tests = self.criteria(token)
            return (lambda n, m: all(t(n, m) for t in tests)), index + 1
        key = _atom(token, "search key").upper()
        flags = {
            "SEEN": ("\\Seen", True),
            "UNSEEN": ("\\Seen", False),
            "DELETED": ("\\Deleted", True),
            "UNDELETED": ("\\Deleted", False),
            "FLAGGED": ("\\Flagged", True),
            "UNFLAGGED": ("\\Flagged", False),
            "ANSWERED": ("\\Answered", True),
            "UNANSWERED": ("\\Answered", False),
            "DRAFT": ("\\Draft", True),
            "UNDRAFT": ("\\Draft", False),
        }
        if key == "ALL":
            return (lambda n, m: True), index + 1
        if key in flags:
            flag, present = flags[key]
            return (lambda n, m: m.has_flag(flag) is present), index + 1
        if key in {"KEYWORD", "UNKEYWORD", "UID", "LARGER", "SMALLER"}:
            if index + 1 >= len(tokens):
                raise _Bad(f"{key} needs an argument")
            value = _astring(tokens[index + 1], key)
            if key in {"KEYWORD", "UNKEYWORD"}:
                present = key == "KEYWORD"
                return (lambda n, m: m.has_flag(value) is present), index + 2
            if key == "UID":
                messages = self.selected.messages
                ranges = _number_set(value, messages[-1].uid if messages else 0)
                return (lambda n, m: _in(ranges, m.uid)), index + 2
            if not value.isdigit():
                raise _Bad(f"{key} needs a number")
            size = int(value)
            if key == "LARGER":
                return (lambda n, m: len(m.data) > size), index + 2
            return (lambda n, m: len(m.data) < size), index + 2
        if key == "NOT":
            inner, after = self.criterion(tokens, index + 1)
            return (lambda n, m: not inner(n, m)), after
        if key == "OR":
            left, middle = self.criterion(tokens, index + 1)
            right, after = self.criterion(tokens, middle)
            return (lambda n, m: left(n, m) or right(n, m)), after
        if _is_set(token):
            ranges = _number_set(key, len(self.selected.messages))
            return (lambda n, m: _in(ranges, n)), index + 1
        raise _Bad(f"unsupported search key {key[:20]}")

    def criteria(self, tokens: list[Token]) -> list[Callable[[int, StoredMessage], bool]]:
        tests, index = [], 0
        while index < len(tokens):
            test, index = self.criterion(tokens, index)
            tests.append(test)
        return tests

    def search(self, args: list[Token], uid: bool) -> str:
        if len(args) >= 2 and isinstance(args[0], str) and args[0].upper() == "CHARSET":
            if _astring(args[1], "charset").upper() not in {"US-ASCII", "UTF-8"}:
                raise _No("[BADCHARSET (US-ASCII UTF-8)] Unsupported charset")
            args = args[2:]
        if not args:
            raise _Bad("SEARCH needs a criterion")
        tests = self.criteria(args)
        found = [
            m.uid if uid else n
            for n, m in enumerate(self.selected.messages, 1)
            if all(test(n, m) for test in tests)
        ]
        self.line("* SEARCH" + "".join(f" {v}" for v in found))
        return "SEARCH completed"

    def fetch(self, args: list[Token], uid: bool) -> str:
        if len(args) != 2:
            raise _Bad("FETCH needs a set and data items")
        wanted = args[1]
        if isinstance(wanted, list):
            items = [_atom(t, "fetch item").upper() for t in wanted]
        else:
            item = _atom(wanted, "fetch item").upper()
            items = list(_MACROS.get(item, [item]))
        for item in items:
            if item not in _SECTIONS and item not in {"UID", "FLAGS", "RFC822.SIZE", "INTERNALDATE"}:
                raise _Bad(f"unsupported fetch item {item[:30]}")
        if uid and "UID" not in items:
            items.insert(0, "UID")
        for number, message in self.matching(args[0], uid):
            marks_seen = any(i in _SECTIONS and not _SECTIONS[i][2] for i in items)
            changed = marks_seen and not self.readonly and not message.has_flag("\\Seen")
            if changed:
                message.flags.add("\\Seen")
            parts: list[bytes] = []
            for item in items:
                if item == "UID":
                    parts.append(b"UID %d" % message.uid)
                elif item == "FLAGS":
                    parts.append(f"FLAGS {_flag_list(message.flags)}".encode())
                elif item == "RFC822.SIZE":
                    parts.append(b"RFC822.SIZE %d" % len(message.data))
                elif item == "INTERNALDATE":
                    when = message.internal_date.strftime("%d-%b-%Y %H:%M:%S +0000")
                    parts.append(f'INTERNALDATE "{when}"'.encode())
                else:
                    label, section, _ = _SECTIONS[item]
                    header, text = _split(message.data)
                    data = {"": message.data, "HEADER": header, "TEXT": text}[section]
                    parts.append(label.encode() + b" {%d}\r\n" % len(data) + data)
            if changed and "FLAGS" not in items:
                parts.append(f"FLAGS {_flag_list(message.flags)}".encode())
            self.send(b"* %d FETCH (" % number + b" ".join(parts) + b")\r\n")
        return "FETCH completed"

    def store(self, args: list[Token], uid: bool) -> str:
        if len(args) != 3:
            raise _Bad("STORE needs a set, an item and flags")
        item = _atom(args[1], "store item").upper()
        mode, _, silent = item.partition(".")
        if mode not in {"FLAGS", "+FLAGS", "-FLAGS"} or silent not in {"", "SILENT"}:
            raise _Bad(f"unsupported store item {item[:20]}")
        given = args[2] if isinstance(args[2], list) else [args[2]]
        flags = {_canonical_flag(f) for f in given}
        if not self.sim.keywords:
            flags = {f for f in flags if f.startswith("\\")}  # not permanent: not kept
        if self.readonly:
            raise _No("The folder is read-only")
        for number, message in self.matching(args[0], uid):
            if mode == "FLAGS":
                message.flags = set(flags)
            elif mode == "+FLAGS":
                message.flags |= {f for f in flags if not message.has_flag(f)}
            else:
                message.flags = {f for f in message.flags if f.lower() not in {g.lower() for g in flags}}
            if not silent:
                extra = f" UID {message.uid}" if uid else ""
                self.line(f"* {number} FETCH (FLAGS {_flag_list(message.flags)}{extra})")
        return "STORE completed"

    def copy(self, args: list[Token], uid: bool, *, move: bool = False) -> str:
        if len(args) != 2:
            raise _Bad("COPY needs a set and a folder")
        target = self.sim._folder(_astring(args[1], "folder"))
        if target is None:
            raise _No("[TRYCREATE] No such folder")
        if move and self.readonly:
            raise _No("The folder is read-only")
        chosen = self.matching(args[0], uid)
        pairs = []
        for _, message in chosen:
            copy = self.sim._add(target, message.data, message.flags)
            pairs.append((message.uid, copy.uid))
        code = ""
        if self.sim.uidplus and pairs:
            source = ",".join(str(a) for a, _ in pairs)
            copied = ",".join(str(b) for _, b in pairs)
            code = f"[COPYUID {target.uidvalidity} {source} {copied}] "
        if not move:
            return f"{code}COPY completed"
        if code:
            self.line(f"* OK {code}Moved")
        self.remove([m for _, m in chosen])
        return "MOVE completed"

    def move(self, args: list[Token], uid: bool) -> str:
        return self.copy(args, uid, move=True)

    def remove(self, doomed: list[StoredMessage]) -> None:
        """Take messages out of the selected folder, telling the client (highest number first)."""
        messages = self.selected.messages
        numbers = sorted((messages.index(m) + 1 for m in doomed), reverse=True)
        for number in numbers:
            del messages[number - 1]
            self.line(f"* {number} EXPUNGE")
        self.known_exists = len(messages)

    def expunge(self, args: list[Token], uid: bool) -> str:
        if self.readonly:
            raise _No("The folder is read-only")
        if uid:
            if len(args) != 1:
                raise _Bad("UID EXPUNGE needs a UID set")
            chosen = [m for _, m in self.matching(args[0], uid=True)]
        else:
            chosen = list(self.selected.messages)
        self.remove([m for m in chosen if m.has_flag("\\Deleted")])
        return "EXPUNGE completed"

    def close(self, args: list[Token], uid: bool) -> str:
        folder = self.selected
        if not self.readonly:
            folder.messages[:] = [m for m in folder.messages if not m.has_flag("\\Deleted")]
        self.folder = None
        return "CLOSE completed"
