"""The IMAP session: log in once, look into folders, find messages.

Knows nothing of Nagios.  One :class:`ImapSession` is one authenticated
connection; it can open (EXAMINE, or SELECT when the probe is to delete its
own messages) one folder after another, ask another folder's UIDNEXT without
leaving the current one (STATUS), and run bounded ``UID SEARCH`` and
header-only ``UID FETCH`` commands.  Every command runs in a phase of the
shared :class:`~.session.Session` helper; every failure is a ProbeError.

imaplib is used through its public API: ``open`` (which its documentation
invites us to override) takes the session's socket, replies are read from
the session's :class:`~.session.Wire`, ``send`` is traced, and extension
commands go through ``xatom``, ``uid`` and ``response``.  Everything put on a
command line comes from :mod:`.imapsyntax`.
"""

from __future__ import annotations

import base64
import datetime
import imaplib
import re
import socket

from . import sasl
from .credentials import Login, Mechanism, Secret
from .errors import Phase, ProbeError
from .imapsyntax import (
    FetchResponse,
    ImapSyntaxError,
    SearchKeys,
    decode_mailbox,
    fetch_responses,
    parse_internaldate,
    quote,
    quote_mailbox,
)
from .mask import register_secret
from .net import connection_error
from .session import Reach, Session
from .settings import Endpoint, Security
from .tls import OldTlsOnly

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Any, Callable

# Largest part of a message the probe reads whole (a bounce, to read its DSN).
BOUNCE_READ_LIMIT = 256 * 1024


def _text(data: Any) -> str:
    """The human part of an imaplib response: bytes or lists of bytes -> one line."""
    if isinstance(data, (list, tuple)):
        data = data[-1] if data else b""
    if isinstance(data, tuple):
        data = data[0]
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return " ".join(str(data if data is not None else "").split())


class _Client(imaplib.IMAP4):
    """imaplib on the session's socket; what it sends is traced."""

    def __init__(self, session: ImapSession):
        self.session = session
        super().__init__(session.endpoint.host, session.endpoint.port)

    def open(self, host: str = "", port: int = 143, timeout: float | None = None) -> None:
        self.host, self.port = host, port
        self.sock = self.session.open_socket(Phase.IMAP_CONNECT, Phase.IMAP_TLS)
        self.file = self.sock.makefile("rb")

    # imaplib reads every reply through these two (its documentation invites
    # overriding them): they pass the session, whatever socket is current.
    # self.file is always a socket file opened "rb" (here and in starttls());
    # typeshed also allows a text file, hence Any
    def readline(self) -> bytes:
        file: Any = self.file
        return self.session.read_line(file)

    def read(self, size: int) -> bytes:
        file: Any = self.file
        return self.session.read_bytes(file, size)

    def send(self, data: Any) -> None:  # imaplib's own signature: a buffer
        self.session.sent(data)
        super().send(data)


def _password(session: ImapSession, login: Login, secret: str) -> None:
    """LOGIN, with the user name quoted (imaplib sends it as given).  A user
    name or password that is not ASCII cannot go into LOGIN at all: it goes
    as AUTHENTICATE PLAIN, which is UTF-8 (RFC 4616), when the server offers it."""
    if login.user.isascii() and secret.isascii():
        session.client.login(quote(login.user), secret)
        return
    if not session.has("AUTH=PLAIN"):
        raise ProbeError(
            Phase.IMAP_LOGIN,
            "impossible: the user name or password is not ASCII, and the server "
            "offers no AUTHENTICATE PLAIN to send it in UTF-8",
        )
    response = f"\0{login.user}\0{secret}".encode()
    session.client.authenticate("PLAIN", lambda _challenge: response)


def _oauth2(session: ImapSession, login: Login, token: str) -> None:
    """XOAUTH2 or OAUTHBEARER through imaplib's public authenticate(): the
    response after the server's first (empty) continuation; a failure
    challenge is kept (for the error) and answered as the mechanism requires."""
    mechanism, name = login.mechanism, login.mechanism.value.upper()
    if not session.has(f"AUTH={name}"):
        offered = " ".join(cap[5:] for cap in session.client.capabilities if cap.startswith("AUTH="))
        raise ProbeError(
            Phase.IMAP_AUTHENTICATE,
            f"unavailable: the server offers no {name} (offers {offered or 'no SASL mechanism'})",
        )
    endpoint = session.endpoint
    response = sasl.initial_response(mechanism, login.user, token, endpoint.host, endpoint.port)
    register_secret(base64.b64encode(response.encode()).decode(), encoded=True)
    sent = False

    def answer(challenge: bytes) -> bytes:
        nonlocal sent
        if not sent and not challenge:
            sent = True
            return response.encode()
        session.challenge = challenge or b""
        return sasl.failure_answer(mechanism).encode()

    session.client.authenticate(name, answer)


# One entry per sign-in mechanism: how IMAP proves a login with its secret,
# the phase it is, and what the trace shows instead of what is sent.
SIGN_IN: dict[Mechanism, tuple[Callable[[ImapSession, Login, str], None], Phase, str]] = {
    Mechanism.PASSWORD: (_password, Phase.IMAP_LOGIN, "<LOGIN command hidden>"),
    Mechanism.XOAUTH2: (_oauth2, Phase.IMAP_AUTHENTICATE, "<AUTHENTICATE exchange hidden>"),
    Mechanism.OAUTHBEARER: (_oauth2, Phase.IMAP_AUTHENTICATE, "<AUTHENTICATE exchange hidden>"),
}


# Longest wait for the server's goodbye (LOGOUT); the grace after -t is shorter.
GOODBYE = 2.0


class ImapSession(Session):
    protocol = "IMAP"
    security_option = "--imap-security"
    starttls_dialogue = ((b"", b"* OK"), (b"c0 STARTTLS\r\n", b"c0 OK"))
    # A SEARCH answer for a big folder (purge, late probes) is one long line,
    # a LIST of many folders many lines; a header block or a bounce's first
    # 256 KiB a literal.  Far beyond that is a broken or hostile server.
    line_limit = 1024 * 1024
    reply_limit = 4 * 1024 * 1024
    literal_limit = 4 * 1024 * 1024
    reply_line_limit = 50_000  # a LIST of that many folders, a FETCH of 25,000 subjects

    def __init__(self, endpoint: Endpoint, reach: Reach):
        super().__init__(endpoint, reach)
        self._client: _Client | None = None
        self.selected: str | None = None  # the folder currently open
        self.writable = False  # ... with SELECT rather than EXAMINE
        self.select_seconds: dict[str, float] = {}  # folder -> its last SELECT/EXAMINE
        self.searches = 0
        # the last search's response announced new messages (* n EXISTS):
        # Dovecot syncs the folder at the end of a command, so a message that
        # arrived during a search is announced by it but found by the next
        self.announced_new = False
        self.challenge: bytes | None = None  # a token mechanism's failure challenge

    @property
    def client(self) -> _Client:
        if self._client is None:
            raise RuntimeError("IMAP session used before open()")
        return self._client

    def current_socket(self) -> socket.socket | None:
        return self._client.sock if self._client is not None else None

    def protocol_error(self, phase: Phase, exc: Exception) -> ProbeError | None:
        if isinstance(exc, imaplib.IMAP4.abort):
            cause = exc.__context__
            if isinstance(cause, OSError):
                return connection_error(phase, self.endpoint.host, self.endpoint.port, cause, self.timeout)
            if "EOF" in str(exc):
                return ProbeError(
                    phase, f"failed: connection closed by {self.endpoint.host}:{self.endpoint.port}"
                )
        if isinstance(exc, imaplib.IMAP4.error):
            return ProbeError(phase, "failed", server_text=_text(exc.args[0] if exc.args else ""))
        if isinstance(exc, ImapSyntaxError):
            return ProbeError(phase, f"failed: {exc}")
        return None

    # -- signing in -------------------------------------------------------------------
    def open(self, secret: Secret) -> None:
        """Connect, STARTTLS when asked, sign in with ``secret`` (the
        password, or the access token)."""
        try:
            self._connect_and_starttls()
        except OldTlsOnly:  # allowed now: once more from the start, to see and say what it speaks
            self._hang_up()
            self.times.clear()
            self._connect_and_starttls()
        login = self.endpoint.login
        if login is None:
            raise ProbeError(Phase.IMAP_LOGIN, "impossible: no IMAP user")
        sign_in, phase, hidden = SIGN_IN[login.mechanism]
        with self.phase(phase, "login"):
            if phase is Phase.IMAP_LOGIN and "LOGINDISABLED" in self.client.capabilities:
                raise ProbeError(phase, "unavailable: the server announces LOGINDISABLED")
            try:
                with self.hiding_sent(hidden):
                    sign_in(self, login, secret.reveal())
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                text = _text(exc.args[0] if exc.args else "")
                if self.challenge is not None:
                    text += sasl.challenge_note(login.mechanism, self.challenge)
                raise ProbeError(phase, f"rejected for {login.user}", server_text=text) from None
            self._refresh_capabilities()

    def _connect_and_starttls(self) -> None:
        with self.phase(Phase.IMAP_CONNECT, "connect"):
            self._client = _Client(self)
        if self.endpoint.security is Security.STARTTLS:
            with self.phase(Phase.IMAP_STARTTLS, "starttls"):
                if "STARTTLS" not in self.client.capabilities:
                    raise ProbeError(
                        Phase.IMAP_STARTTLS, "not offered by the server: refusing to continue without TLS"
                    )
                self.client.starttls(self.starttls_context(Phase.IMAP_STARTTLS))

    def _refresh_capabilities(self) -> None:
        """Servers announce more after LOGIN (UIDPLUS, SPECIAL-USE): take what
        they pushed with the LOGIN answer, or ask (imaplib keeps the old list)."""
        _, pushed = self.client.response("CAPABILITY")
        if not pushed or pushed[-1] is None:
            _, pushed = self.client.capability()
        if pushed and pushed[-1]:
            self.client.capabilities = tuple(_text(pushed[-1]).upper().split())

    def has(self, capability: str) -> bool:
        return capability.upper() in self.client.capabilities

    # -- folders ------------------------------------------------------------------------
    def open_folder(self, folder: str, writable: bool = False) -> int:
        """SELECT (writable) or EXAMINE ``folder``; return its UIDNEXT."""
        with self.phase(Phase.IMAP_SELECT):
            status, data = self.client.select(quote_mailbox(folder), readonly=not writable)
            if status != "OK":
                self.selected = None
                raise ProbeError(
                    Phase.IMAP_SELECT, f'failed: folder "{folder}" cannot be opened', server_text=_text(data)
                )
            self.selected, self.writable = folder, writable
            uid_next = self._selected_uid_next(folder)
        self.select_seconds[folder] = self.last_seconds
        return uid_next

    def _selected_uid_next(self, folder: str) -> int:
        _, data = self.client.response("UIDNEXT")
        if data and data[-1] is not None:
            text = _text(data[-1])
            if not text.isdigit():
                raise ProbeError(
                    Phase.IMAP_SELECT,
                    f'failed: UIDNEXT of folder "{folder}" is not a number',
                    server_text=text,
                )
            return int(text)
        # Not in the SELECT answer (allowed by RFC 3501): ask with STATUS.
        return self.uid_next_of(folder)

    def uid_next_of(self, folder: str) -> int:
        """UIDNEXT of a folder by STATUS: does not change the open folder."""
        with self.phase(Phase.IMAP_STATUS):
            status, data = self.client.status(quote_mailbox(folder), "(UIDNEXT)")
            joined = b" ".join(part for part in data if isinstance(part, bytes))
            match = re.search(rb"UIDNEXT (\d+)", joined)
            if status != "OK" or not match:
                raise ProbeError(
                    Phase.IMAP_STATUS, f'failed: no UIDNEXT for folder "{folder}"', server_text=_text(data)
                )
            return int(match.group(1))

    def special_use_folder(self, flag: str) -> str | None:
        """The mailbox carrying a special-use flag (RFC 6154), e.g. \\Junk, or None."""
        with self.phase(Phase.IMAP_SELECT):
            if not self.has("SPECIAL-USE"):
                return None
            status, _ = self.client.xatom("LIST", "(SPECIAL-USE)", '""', '"*"')
            _, lines = self.client.response("LIST")
            if status != "OK":
                return None
            for line in lines or []:
                attributes, name = _list_entry(line)
                if name is not None and flag.lower() in attributes.lower().split():
                    return decode_mailbox(name)
        return None

    # -- messages -----------------------------------------------------------------------
    def search(self, keys: SearchKeys) -> list[int]:
        """UIDs matching a UID SEARCH in the open folder."""
        data = self._uid(Phase.IMAP_SEARCH, "SEARCH", *keys.keys)
        self.searches += 1
        _, exists = self.client.response("EXISTS")  # taken, so that each search reports its own
        self.announced_new = any(item is not None for item in exists or ())
        words = b" ".join(part for part in data if isinstance(part, bytes)).split()
        return [int(word) for word in words if word.isdigit()]

    def fetch_header(self, uid: int) -> bytes:
        """The header block of one message (BODY.PEEK: leaves \\Seen alone)."""
        for response in self._fetch(str(uid), "(UID BODY.PEEK[HEADER])"):
            if response.literal is not None:
                return response.literal
        raise ProbeError(Phase.IMAP_FETCH, f"failed: no header returned for UID {uid}")

    def fetch_message(self, uid: int, limit: int = BOUNCE_READ_LIMIT) -> bytes:
        """A whole (small) message, at most ``limit`` bytes: for bounces only."""
        for response in self._fetch(str(uid), f"(UID BODY.PEEK[]<0.{limit}>)"):
            if response.literal is not None:
                return response.literal
        raise ProbeError(Phase.IMAP_FETCH, f"failed: no message returned for UID {uid}")

    def fetch_subjects(self, uids: list[int]) -> dict[int, str]:
        """The Subject header of each UID (header fields only)."""
        literals = self._fetch_literals(uids, "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        return {
            uid: " ".join(literal.decode("utf-8", "replace").split()) for uid, literal in literals.items()
        }

    def fetch_headers(self, uids: list[int]) -> dict[int, bytes]:
        """The header block of each UID, in one UID FETCH (BODY.PEEK: leaves \\Seen alone)."""
        return self._fetch_literals(uids, "(UID BODY.PEEK[HEADER])")

    def fetch_internaldates(self, uids: list[int]) -> dict[int, datetime.datetime]:
        """INTERNALDATE (when the server stored the message) of each UID."""
        if not uids:
            return {}
        dates = {}
        for response in self._fetch(",".join(map(str, uids)), "(UID INTERNALDATE)"):
            if response.uid is not None and response.internaldate is not None:
                try:
                    dates[response.uid] = parse_internaldate(response.internaldate)
                except ImapSyntaxError as exc:
                    raise ProbeError(Phase.IMAP_FETCH, f"failed: {exc}") from None
        return dates

    def delete(self, uids: list[int]) -> bool:
        """Flag ``uids`` \\Deleted and expunge exactly those (UID EXPUNGE).

        Without UIDPLUS a plain EXPUNGE would also remove what others flagged
        deleted, so the messages are only flagged; returns whether they are gone.
        """
        if not uids:
            return True
        uid_set = ",".join(map(str, uids))
        self._uid(Phase.IMAP_FETCH, "STORE", uid_set, "+FLAGS.SILENT", "(\\Deleted)")
        if not self.has("UIDPLUS"):
            return False
        self._uid(Phase.IMAP_FETCH, "EXPUNGE", uid_set)
        return True

    def close(self) -> None:
        """LOGOUT, briefly: the result is known, a slow (or endless) goodbye
        does not change it.  At most GOODBYE seconds, the grace after -t."""
        if self._client is None:
            return
        try:
            with self.phase(Phase.IMAP_LOGOUT, limit=GOODBYE):
                self._client.logout()
        except ProbeError:
            pass
        finally:
            self._hang_up()

    def _hang_up(self) -> None:
        """Close the connection without a word (the handshake broke it)."""
        if self._client is not None:
            try:
                self._client.shutdown()
            except (OSError, ValueError):
                pass
            self._client = None

    # -- helpers ---------------------------------------------------------------------------
    def _uid(self, phase: Phase, command: str, *args: str) -> list[Any]:
        """One UID command in the open folder; its data, or ProbeError."""
        with self.phase(phase):
            status, data = self.client.uid(command, *args)
            if status != "OK":
                raise ProbeError(phase, "failed", server_text=_text(data))
        return list(data)

    def _fetch(self, uid_set: str, items: str) -> list[FetchResponse]:
        """The responses of a UID FETCH, items in any order."""
        return fetch_responses(self._uid(Phase.IMAP_FETCH, "FETCH", uid_set, items))

    def _fetch_literals(self, uids: list[int], items: str) -> dict[int, bytes]:
        """UID -> the literal of one UID FETCH of ``uids`` (one item with a literal)."""
        if not uids:
            return {}
        literals = {}
        for response in self._fetch(",".join(map(str, uids)), items):
            if response.uid is not None and response.literal is not None:
                literals[response.uid] = response.literal
        return literals


def _list_entry(line: Any) -> tuple[str, str | None]:
    """(attributes, mailbox name as sent) of one LIST response: the name is an
    atom, a quoted string, or a literal (imaplib gives a tuple then)."""
    if isinstance(line, tuple):
        head, literal = line[0], line[1]
        match = re.match(rb"\(([^)]*)\)", head or b"")
        return (
            match.group(1).decode("ascii", "replace") if match else "",
            literal.decode("utf-8", "replace") if isinstance(literal, bytes) else None,
        )
    if not isinstance(line, bytes):
        return "", None
    match = re.match(rb'\(([^)]*)\)\s+(?:"(?:[^"\\]|\\.)*"|NIL)\s+(.+)$', line)
    if not match:
        return "", None
    attributes = match.group(1).decode("ascii", "replace")
    name = match.group(2).decode("utf-8", "replace").strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    return attributes, name
