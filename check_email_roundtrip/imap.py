"""The IMAP side: log in, remember where new mail will start, find the marker.

Knows nothing of Nagios.  :class:`Mailbox` opens one session (connect, TLS,
LOGIN, EXAMINE) and returns the folder's UIDNEXT before anything is submitted;
``find_marker`` runs one bounded ``UID SEARCH`` per call: only UIDs
from that UID on are searched, so the cost of a search does not grow with
the size of the folder.  Only headers are ever fetched.
"""

import base64
import datetime
import imaplib
import re
import socket
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from .deadline import Deadline
from .errors import Phase, ProbeError
from .net import TlsContext, connect_tcp, connection_error, hint_implicit_tls, wrap_tls
from .settings import Endpoint, Security


@dataclass
class RetrievalTimings:
    """Seconds per IMAP step; ``cycle`` is what one look into the mailbox costs."""

    connect: Optional[float] = None  # TCP (+ TLS for implicit TLS) + greeting
    starttls: Optional[float] = None
    login: Optional[float] = None
    select: Optional[float] = None
    search: Optional[float] = None  # the search that found the message
    fetch: Optional[float] = None  # header fetch of the found message
    searches: int = 0

    @property
    def cycle(self) -> Optional[float]:
        steps = (self.connect, self.starttls, self.login, self.select, self.search, self.fetch)
        done = [step for step in steps if step is not None]
        return sum(done) if self.search is not None else None


class _TracedIMAP(imaplib.IMAP4):
    """imaplib with our socket set-up and a protocol trace that hides LOGIN."""

    def __init__(self, endpoint: Endpoint, open_socket: Callable[[], socket.socket], trace: Optional[Callable[[str], None]]):
        self._open_socket = open_socket
        self._trace = trace
        self.hiding_sent_lines = False
        super().__init__(endpoint.host, endpoint.port)

    # imaplib's __init__ resets self.debug from a module global; a property
    # keeps our level (4 = every line) whatever it assigns.
    @property
    def debug(self):
        return 4 if self._trace else 0

    @debug.setter
    def debug(self, value):
        pass

    def _create_socket(self, timeout=None):
        return self._open_socket()

    def _mesg(self, s, secs=None):
        if self._trace is None:
            return
        if self.hiding_sent_lines and s.lstrip().startswith("> "):
            s = "> <LOGIN command hidden>"
        self._trace("IMAP " + s)


def quote_mailbox(name: str) -> str:
    """A mailbox name as an IMAP quoted string, in modified UTF-7 (RFC 3501 5.1.3)."""
    out, pending = [], []

    def flush():
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    encoded = "".join(out)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(data) -> str:
    """The human part of an imaplib response: bytes or lists of bytes -> one line."""
    if isinstance(data, (list, tuple)):
        data = data[-1] if data else b""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return " ".join(str(data).split())


class Mailbox:
    """One IMAP session on one folder.  Use as a context manager."""

    def __init__(
        self,
        endpoint: Endpoint,
        tls_context: TlsContext,
        folder: str,
        deadline: Deadline,
        timings: RetrievalTimings,
        trace: Optional[Callable[[str], None]] = None,
        writable: bool = False,
    ):
        self.endpoint = endpoint
        self.tls_context = tls_context
        self.folder = folder
        self.deadline = deadline
        self.timings = timings
        self.trace = trace
        # EXAMINE (read-only) unless the probe is to delete its own messages
        self.writable = writable
        self._imap: Optional[_TracedIMAP] = None
        self._socket_timeout = deadline.socket_timeout()  # for "no answer within N s"

    # -- session -----------------------------------------------------------
    def open(self) -> int:
        """Connect, log in, EXAMINE the folder; return the folder's UIDNEXT."""
        endpoint = self.endpoint
        phase = Phase.IMAP_CONNECT
        try:
            self.deadline.enter(phase)
            step = time.monotonic()
            self._imap = _TracedIMAP(endpoint, self._open_socket, self.trace)
            self.timings.connect = time.monotonic() - step

            if endpoint.security is Security.STARTTLS:
                phase = self._enter(Phase.IMAP_STARTTLS)
                step = time.monotonic()
                if "STARTTLS" not in self._imap.capabilities:
                    raise ProbeError(phase, "not offered by the server: refusing to continue without TLS")
                try:
                    self._imap.starttls(self.tls_context.get())
                except OSError as exc:  # ssl.SSLError is an OSError
                    raise connection_error(phase, endpoint.host, endpoint.port, exc, self._socket_timeout) from None
                self.timings.starttls = time.monotonic() - step

            phase = self._enter(Phase.IMAP_LOGIN)
            step = time.monotonic()
            if "LOGINDISABLED" in self._imap.capabilities:
                raise ProbeError(phase, "unavailable: the server announces LOGINDISABLED")
            self._imap.hiding_sent_lines = True
            try:
                self._imap.login(endpoint.user, endpoint.password.reveal() if endpoint.password else "")
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                raise ProbeError(phase, f"rejected for {endpoint.user}", server_text=_text(exc.args[0] if exc.args else "")) from None
            finally:
                self._imap.hiding_sent_lines = False
            self._refresh_capabilities()
            self.timings.login = time.monotonic() - step

            phase = self._enter(Phase.IMAP_SELECT)
            step = time.monotonic()
            # EXAMINE (read-only) unless asked to clean up: the probe then
            # changes nothing in the mailbox.
            status, data = self._imap.select(quote_mailbox(self.folder), readonly=not self.writable)
            if status != "OK":
                raise ProbeError(phase, f'failed: folder "{self.folder}" cannot be opened', server_text=_text(data))
            uid_next = self._read_uid_next()
            self.timings.select = time.monotonic() - step
            return uid_next
        except ProbeError:
            raise
        except imaplib.IMAP4.error as exc:
            raise ProbeError(phase, "failed", server_text=_text(exc.args[0] if exc.args else "")) from None
        except (OSError, EOFError) as exc:
            error = connection_error(phase, endpoint.host, endpoint.port, exc, self._socket_timeout)
            raise hint_implicit_tls(error, phase is Phase.IMAP_CONNECT and endpoint.security is not Security.TLS,
                                    "--imap-security") from None

    def close(self) -> None:
        if self._imap is None:
            return
        try:
            self._imap.sock.settimeout(min(self.deadline.socket_timeout(), 2.0))
            self._imap.logout()
        except (imaplib.IMAP4.error, OSError, EOFError):
            pass  # the result is known; a slow goodbye does not change it
        self._imap = None

    def __enter__(self) -> "Mailbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- searching -----------------------------------------------------------
    def find_marker(self, marker: str, since_uid: int) -> List[int]:
        """One bounded search for ``marker``: the new UIDs whose text has it.

        TEXT is the header and the body: the probe's Subject and body, and a
        bounce's quoted copy of them (whose original headers BODY misses).
        """
        step = time.monotonic()
        uids = self.search("UID", f"{since_uid}:*", "TEXT", marker)
        elapsed = time.monotonic() - step
        # "n:*" always includes the highest UID, even when it is below n
        # (RFC 3501 6.4.8): keep only UIDs that really are new.
        new = sorted(uid for uid in uids if uid >= since_uid)
        if new:
            self.timings.search = elapsed
        return new

    def fetch_header(self, uid: int) -> bytes:
        """The header block of one message (BODY.PEEK: leaves \\Seen alone)."""
        step = time.monotonic()
        data = self._uid_command(Phase.IMAP_FETCH, "FETCH", str(uid), "(BODY.PEEK[HEADER])")
        self.timings.fetch = time.monotonic() - step
        for part in data:
            if isinstance(part, tuple) and len(part) == 2:
                return part[1]
        raise ProbeError(Phase.IMAP_FETCH, f"failed: no header returned for UID {uid}")

    def search(self, *criteria: str) -> List[int]:
        """UIDs matching a server-side UID SEARCH (criteria already quoted)."""
        data = self._uid_command(Phase.IMAP_SEARCH, "SEARCH", *criteria)
        self.timings.searches += 1
        return [int(word) for word in b" ".join(part for part in data if part).split() if word.isdigit()]

    def fetch_internaldates(self, uids: List[int]) -> Dict[int, datetime.datetime]:
        """INTERNALDATE (when the server received the message) of each UID."""
        if not uids:
            return {}
        data = self._uid_command(Phase.IMAP_FETCH, "FETCH", ",".join(map(str, uids)), "(UID INTERNALDATE)")
        dates = {}
        for line in data:
            line = line[0] if isinstance(line, tuple) else line
            uid = re.search(rb"UID (\d+)", line or b"")
            date = re.search(rb'INTERNALDATE "([^"]+)"', line or b"")
            if uid and date:
                dates[int(uid.group(1))] = datetime.datetime.strptime(date.group(1).decode(), "%d-%b-%Y %H:%M:%S %z")
        return dates

    def fetch_subjects(self, uids: List[int]) -> Dict[int, str]:
        """The Subject header of each UID (header fields only)."""
        if not uids:
            return {}
        data = self._uid_command(Phase.IMAP_FETCH, "FETCH", ",".join(map(str, uids)),
                                 "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = {}
        for part in data:
            if isinstance(part, tuple) and len(part) == 2:
                uid = re.search(rb"UID (\d+)", part[0])
                if uid:
                    subjects[int(uid.group(1))] = " ".join(part[1].decode("utf-8", "replace").split())
        return subjects

    def fetch_message(self, uid: int, limit: int = 256 * 1024) -> bytes:
        """A whole (small) message, at most ``limit`` bytes: for bounces only."""
        data = self._uid_command(Phase.IMAP_FETCH, "FETCH", str(uid), f"(BODY.PEEK[]<0.{limit}>)")
        for part in data:
            if isinstance(part, tuple) and len(part) == 2:
                return part[1]
        raise ProbeError(Phase.IMAP_FETCH, f"failed: no message returned for UID {uid}")

    def delete(self, uids: List[int]) -> bool:
        """Flag ``uids`` \\Deleted and expunge exactly those (UID EXPUNGE).

        Without UIDPLUS a plain EXPUNGE would also remove what others flagged
        deleted, so the messages are only flagged; returns whether they are gone.
        """
        if not uids:
            return True
        uid_set = ",".join(map(str, uids))
        self._uid_command(Phase.IMAP_FETCH, "STORE", uid_set, "+FLAGS.SILENT", "(\\Deleted)")
        if "UIDPLUS" not in self._imap.capabilities:
            return False
        self._uid_command(Phase.IMAP_FETCH, "EXPUNGE", uid_set)
        return True

    def special_use_folder(self, flag: str) -> Optional[str]:
        """The mailbox carrying a special-use flag (RFC 6154), e.g. \\Junk, or None."""
        self._enter(Phase.IMAP_SELECT)
        try:
            status, data = self._imap._simple_command("LIST", "(SPECIAL-USE)", '""', '"*"')
            _, data = self._imap._untagged_response(status, data, "LIST")
        except imaplib.IMAP4.error:
            return None  # no SPECIAL-USE extension
        except (OSError, EOFError) as exc:
            raise connection_error(Phase.IMAP_SELECT, self.endpoint.host, self.endpoint.port, exc, self._socket_timeout) from None
        for line in data or []:
            if isinstance(line, bytes) and flag.lower().encode() in line.lower():
                match = re.search(rb'\)\s+(?:"[^"]*"|NIL)\s+(.+)$', line)
                if match:
                    name = match.group(1).decode("utf-8", "replace").strip()
                    return name[1:-1] if name.startswith('"') and name.endswith('"') else name
        return None

    # -- helpers ----------------------------------------------------------------
    def _open_socket(self) -> socket.socket:
        endpoint = self.endpoint
        self._socket_timeout = self.deadline.socket_timeout()
        sock = connect_tcp(endpoint.host, endpoint.port, self._socket_timeout, Phase.IMAP_CONNECT)
        if endpoint.security is Security.TLS:
            self.deadline.enter(Phase.IMAP_TLS)
            sock = wrap_tls(sock, self.tls_context, endpoint.host, endpoint.port, Phase.IMAP_TLS)
            self.deadline.enter(Phase.IMAP_CONNECT)
        return sock

    def _refresh_capabilities(self) -> None:
        """Servers announce more after LOGIN (UIDPLUS, SPECIAL-USE): read what
        they pushed with the LOGIN answer, or ask (imaplib keeps the old list)."""
        _, pushed = self._imap._untagged_response("OK", [None], "CAPABILITY")
        if not pushed or pushed[-1] is None:
            _, pushed = self._imap.capability()
        if pushed and pushed[-1]:
            self._imap.capabilities = tuple(pushed[-1].decode("ascii", "replace").upper().split())

    def _uid_command(self, phase: Phase, command: str, *args: str) -> list:
        """One UID command in the selected folder; its data, or ProbeError."""
        self._enter(phase)
        try:
            status, data = self._imap.uid(command, *args)
        except imaplib.IMAP4.error as exc:
            raise ProbeError(phase, "failed", server_text=_text(exc.args[0] if exc.args else "")) from None
        except (OSError, EOFError) as exc:
            raise connection_error(phase, self.endpoint.host, self.endpoint.port, exc, self._socket_timeout) from None
        if status != "OK":
            raise ProbeError(phase, "failed", server_text=_text(data))
        return data

    def _enter(self, phase: Phase) -> Phase:
        self.deadline.enter(phase)
        self._socket_timeout = self.deadline.socket_timeout()
        if self._imap is not None and self._imap.sock is not None:
            self._imap.sock.settimeout(self._socket_timeout)
        return phase

    def _read_uid_next(self) -> int:
        _, data = self._imap.response("UIDNEXT")
        if data and data[0] is not None:
            return int(data[0])
        # Not in the SELECT answer (allowed by RFC 3501): ask with STATUS.
        status, data = self._imap.status(quote_mailbox(self.folder), "(UIDNEXT)")
        match = re.search(rb"UIDNEXT (\d+)", b" ".join(d for d in data if isinstance(d, bytes)))
        if status != "OK" or not match:
            raise ProbeError(Phase.IMAP_SELECT, f'failed: no UIDNEXT for folder "{self.folder}"', server_text=_text(data))
        return int(match.group(1))
