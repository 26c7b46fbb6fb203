"""What an SMTP and an IMAP session share: phases, sockets, the wire.

:class:`Session` is the one phase helper both protocols use.  Around each
step, ``with session.phase(Phase.X, "bucket"):``

- tells the run's :class:`~.deadline.Deadline` which stage it is in (so the
  ``-t`` alarm can name it) and gives the socket the step's timeout;
- times the step into a bucket of :class:`PhaseTimes` (``connect``,
  ``auth``, ...), only when it completes;
- turns whatever the step raised (socket and TLS errors, the stdlib client's
  own exceptions through :meth:`Session.protocol_error`) into the one
  :class:`~.errors.ProbeError` naming the phase.

It also opens the connection (TCP, and TLS for implicit TLS through the one
handshake site in :mod:`.tls`), and owns the wire: :class:`Wire` is the file
object the stdlib client reads replies from, and :meth:`Session.sent` is
called with every line it sends, so the protocol trace at ``-vvv`` is written
here, the same way for both protocols, with what is sent while signing in
hidden.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .deadline import MIN_SOCKET_TIMEOUT, Deadline
from .errors import OverLimit, Phase, ProbeError, StepExpired
from .mask import mask
from .net import connect_tcp, connection_error
from .output import LOGGER
from .record import Record
from .settings import Endpoint, Security
from .tls import OldTlsOnly, TlsClient

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    import ssl
    from typing import BinaryIO, Callable, ClassVar

log = logging.getLogger(LOGGER)

if TYPE_CHECKING:
    Trace = Callable[[str], None]
# How long a plain-text client waits for a greeting before it looks whether
# the port speaks TLS (an implicit-TLS port spoken to in plain text stays
# silent, waiting for our handshake), and how long that look may take.
GREETING_PATIENCE = 3.0
TLS_LOOK = 3.0
# Longest line of the protocol trace; the rest is elided.
TRACE_LINE_LIMIT = 300


class Reach(Record):
    """How a run reaches its servers, the same for every connection it makes
    (both mail sessions and the token request): its time budget, the one TLS
    client, the protocol trace (-vvv), the address family (-4/-6)."""

    deadline: Deadline
    tls: TlsClient
    trace: Trace | None = None
    family: int = socket.AF_UNSPEC


class PhaseTimes:
    """Seconds per timing bucket; a bucket sums the phases timed into it."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    def add(self, bucket: str, seconds: float) -> None:
        self._seconds[bucket] = self._seconds.get(bucket, 0.0) + seconds

    def get(self, bucket: str) -> float | None:
        return self._seconds.get(bucket)

    def clear(self) -> None:
        """Forget what was timed: a connection begun again from the start."""
        self._seconds.clear()


class Wire:
    """The reading side of a connection as a socket file (``readline``,
    ``read``, ``close``), every line passing the session: for smtplib, which
    reads ``self.file`` directly."""

    def __init__(self, sock: socket.socket, session: Session):
        self._file = sock.makefile("rb")
        self._session = session

    def readline(self, limit: int = -1) -> bytes:
        # the session's line limit is below smtplib's (8193)
        return self._session.read_line(self._file)

    def read(self, size: int) -> bytes:
        return self._session.read_bytes(self._file, size)

    def close(self) -> None:
        self._file.close()


class Session:
    """One connection to one server, in phases.  Subclasses speak the protocol."""

    protocol: ClassVar[str] = "?"
    # the option that fixes a TLS mismatch on this protocol's port
    security_option: ClassVar[str] = "--?-security"
    # What a real server never exceeds (the client's own limits, in bytes): one
    # reply line, everything read in answer to one command, one literal.
    line_limit: ClassVar[int] = 8192
    reply_limit: ClassVar[int] = 64 * 1024
    literal_limit: ClassVar[int] = 4 * 1024 * 1024
    # Lines in answer to one command: each costs the stdlib client a parse, so
    # a flood of tiny lines is stopped by count long before its bytes add up.
    reply_line_limit: ClassVar[int] = 1000

    def __init__(self, endpoint: Endpoint, reach: Reach):
        self.endpoint = endpoint
        self.deadline, self.tls, self.trace = reach.deadline, reach.tls, reach.trace
        self.address_family = reach.family  # -4, -6, or either
        self.opened_at = time.monotonic()  # the session's total runs from here
        self.times = PhaseTimes()
        self.step_end = self.deadline.step_ends()  # when the current step must be over
        self.timeout = self.step_end - time.monotonic()  # the current step's length, for "no answer within"
        self.last_seconds = 0.0  # how long the last completed phase took
        self._hidden: str | None = None  # what the trace shows instead of sent lines
        self._reply_bytes = 0  # read since the last command was sent
        self._reply_lines = 0
        self._step_limit: float | None = None  # the current phase's cap on its steps

    # -- phases ---------------------------------------------------------------------
    @contextmanager
    def phase(
        self, phase: Phase, bucket: str | None = None, limit: float | None = None, names_stage: bool = True
    ) -> Iterator[None]:
        """One step: ``limit`` caps the step timeout (QUIT, LOGOUT);
        ``names_stage`` False for a step in a background thread."""
        if names_stage:
            self.deadline.enter(phase)
        self._step_limit = limit
        self._new_step()
        started, built = time.monotonic(), self.tls.spent_building
        try:
            yield
        except ProbeError:
            raise
        except Exception as exc:  # noqa: BLE001 - every cause becomes one ProbeError
            error = self.protocol_error(phase, exc)
            if error is None and isinstance(exc, (OSError, EOFError)):
                error = connection_error(phase, self.endpoint.host, self.endpoint.port, exc, self.timeout)
            if error is None:
                raise
            raise self._with_hint(phase, error) from None
        finally:
            self._step_limit = None
        # building the TLS context (the CA store) is our CPU, not the server's
        # time: it is not part of the phase
        self.last_seconds = time.monotonic() - started - (self.tls.spent_building - built)
        if bucket is not None:
            self.times.add(bucket, self.last_seconds)

    def _new_step(self) -> None:
        self.step_end = self.deadline.step_ends(self._step_limit)
        self.timeout = max(self.step_end - time.monotonic(), MIN_SOCKET_TIMEOUT)
        self._reply_bytes = self._reply_lines = 0
        _set_timeout(self.current_socket(), self.timeout)

    def protocol_error(self, phase: Phase, exc: Exception) -> ProbeError | None:
        """The stdlib client's exception as a ProbeError; None: not ours to map."""
        return None

    def current_socket(self) -> socket.socket | None:
        """The stdlib client's socket now (STARTTLS replaces it)."""
        return None

    def _with_hint(self, phase: Phase, error: ProbeError) -> ProbeError:
        """A server silent at greeting time, reached without TLS, is most often
        an implicit-TLS port waiting for our handshake: say so."""
        if (
            phase in (Phase.SMTP_CONNECT, Phase.IMAP_CONNECT)
            and self.endpoint.security is not Security.TLS
            and "no answer within" in error.reason
        ):
            error.reason += f" (an implicit-TLS port? try {self.security_option} tls)"
        return error

    # -- the connection -------------------------------------------------------------
    def open_socket(self, connect: Phase, handshake: Phase) -> socket.socket:
        """TCP to the endpoint; the TLS handshake for implicit TLS, or else the
        wait for the greeting, with a quick look whether a silent port speaks
        TLS.  Runs inside the caller's connect phase."""
        endpoint = self.endpoint
        sock = self._connect(connect)
        if endpoint.security is Security.TLS:
            self.deadline.enter(handshake)
            try:
                sock = self._handshake(sock, handshake)
            except OldTlsOnly:  # allowed now: once more, to see and say what it speaks
                sock = self._handshake(self._connect(connect), handshake)
            self.deadline.enter(connect)
        else:
            self._await_greeting(sock, connect)
        return sock

    def _connect(self, phase: Phase) -> socket.socket:
        endpoint = self.endpoint
        sock = connect_tcp(endpoint.host, endpoint.port, self.timeout, phase, self.address_family)
        log.info(
            "%s %s:%d: connected to %s", self.protocol, endpoint.host, endpoint.port, sock.getpeername()[0]
        )
        return sock

    def _handshake(self, sock: socket.socket, phase: Phase) -> socket.socket:
        endpoint = self.endpoint
        return self.tls.handshake(
            sock,
            self.protocol,
            endpoint.host,
            endpoint.port,
            phase,
            plain_text_hint=f"use {self.security_option} starttls",
            diagnose=self.fetch_certificate,
        )

    def starttls_context(self, phase: Phase) -> ssl.SSLContext:
        """What the stdlib client's starttls() gets: the one handshake site."""
        endpoint = self.endpoint
        return self.tls.for_starttls(
            self.protocol, endpoint.host, endpoint.port, phase, diagnose=self.fetch_certificate
        )

    # The plain-text steps before a STARTTLS handshake: (what to send, the
    # start of the answer that lets us go on); other answers end the look.
    starttls_dialogue: ClassVar[tuple[tuple[bytes, bytes], ...]] = ()

    def fetch_certificate(self) -> bytes | None:
        """The server's certificate, fetched again on a connection of its own
        without verification: to say why it was refused.  None if that fails."""
        endpoint = self.endpoint
        try:
            sock = connect_tcp(
                endpoint.host, endpoint.port, self.timeout, Phase.IMAP_CONNECT, self.address_family
            )
        except ProbeError:
            return None
        if endpoint.security is Security.STARTTLS:
            try:
                lines = sock.makefile("rb")
                for send, expect in self.starttls_dialogue:
                    if send:
                        sock.sendall(send)
                    if not _answered(lines, expect):
                        sock.close()
                        return None
            except OSError:
                sock.close()
                return None
        return self.tls.peek_certificate(sock, endpoint.host)

    def _await_greeting(self, sock: socket.socket, phase: Phase) -> None:
        """Servers greet at once; a port that stays silent and answers a TLS
        handshake on a second connection is an implicit-TLS port spoken to in
        plain text: say so within seconds rather than at the step timeout."""
        endpoint, started = self.endpoint, time.monotonic()
        if _readable(sock, min(GREETING_PATIENCE, self.step_end - started)):
            return
        left = self.step_end - time.monotonic()
        if left > TLS_LOOK and self.tls.speaks_tls(endpoint.host, endpoint.port, min(TLS_LOOK, left)):
            waited = time.monotonic() - started
            raise ProbeError(
                phase,
                f"to {endpoint.host}:{endpoint.port}: no {self.protocol} greeting within "
                f"{waited:.1f} s, and the port speaks TLS: an implicit-TLS port (use "
                f"{self.security_option} tls)",
            )
        if not _readable(sock, self.step_end - time.monotonic()):
            waited = time.monotonic() - started
            raise ProbeError(
                phase,
                f"to {endpoint.host}:{endpoint.port}: no {self.protocol} greeting within {waited:.1f} s",
            )

    # -- the wire: every reply line and literal passes here ---------------------------
    def read_line(self, file: BinaryIO) -> bytes:
        self._before_read()
        try:
            line = file.readline(self.line_limit + 1)
        except socket.timeout:
            raise self._timed_out() from None
        if len(line) > self.line_limit:
            raise OverLimit(f"a reply line from {self._where()}", self.line_limit)
        self._count(len(line))
        self._reply_lines += 1
        if self._reply_lines > self.reply_line_limit:
            raise OverLimit(f"the reply from {self._where()}", self.reply_line_limit, "lines")
        self.received(line)
        return line

    def read_bytes(self, file: BinaryIO, size: int) -> bytes:
        """A literal of ``size`` bytes, read in pieces so that the step limit
        holds for a server that drips it."""
        if size > self.literal_limit:
            raise OverLimit(f"a literal of {size} bytes announced by {self._where()}", self.literal_limit)
        chunks: list[bytes] = []
        left = size
        while left > 0:
            self._before_read()
            try:
                chunk = file.read1(min(left, 64 * 1024)) if hasattr(file, "read1") else file.read(left)
            except socket.timeout:
                raise self._timed_out() from None
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
            self._count(len(chunk))
        data = b"".join(chunks)
        self.received_literal(data)
        return data

    def _before_read(self) -> None:
        """The step's end holds for every read: what is left of it is the
        socket's timeout, and a reply still coming at the end is stopped."""
        left = self.step_end - time.monotonic()
        if left <= 0:
            raise self._timed_out()
        _set_timeout(self.current_socket(), max(left, MIN_SOCKET_TIMEOUT))

    def _timed_out(self) -> OSError:
        """Silence (no answer within the step) or a reply still coming at its end."""
        if self._reply_bytes:
            return StepExpired(self.timeout, f"the reply from {self._where()} did not end")
        return socket.timeout("timed out")

    def _count(self, size: int) -> None:
        self._reply_bytes += size
        if self._reply_bytes > self.reply_limit:
            raise OverLimit(f"the reply from {self._where()}", self.reply_limit)

    def _where(self) -> str:
        return f"{self.endpoint.host}:{self.endpoint.port}"

    # -- the trace ------------------------------------------------------------------
    @contextmanager
    def hiding_sent(self, placeholder: str) -> Iterator[None]:
        """What is sent inside is traced as ``placeholder`` (credentials)."""
        self._hidden = placeholder
        try:
            yield
        finally:
            self._hidden = None

    def sent(self, data: bytes) -> None:
        """Every command the client sends: a new step of its own (its reply
        gets the whole step limit), traced."""
        self._new_step()
        if self.trace is not None:
            text = self._hidden if self._hidden is not None else _printable(data)
            self.trace(f"{self.protocol} > {text}")

    def received(self, line: bytes) -> None:
        if self.trace is not None:
            self.trace(f"{self.protocol} < {mask(_printable(line))}")

    def received_literal(self, data: bytes) -> None:
        if self.trace is not None:
            self.trace(f"{self.protocol} < <literal of {len(data)} bytes>")


def _answered(lines: BinaryIO, expect: bytes) -> bool:
    """Read a reply up to its final line; whether that starts with ``expect``
    (SMTP "250-" lines and IMAP untagged "* " lines come before it)."""
    for _ in range(100):
        line = lines.readline(8192)
        if line.startswith(expect):
            return True
        if not line or not (line[3:4] == b"-" or (line.startswith(b"* ") and not expect.startswith(b"*"))):
            return False
    return False


def _set_timeout(sock: socket.socket | None, seconds: float) -> None:
    """The socket's timeout, if it is still open: a failed TLS handshake
    closes it, and the goodbye after that must end quietly, not in EBADF."""
    if sock is None:
        return
    try:
        sock.settimeout(seconds)
    except OSError:
        pass  # closed: the next read or write says so, as the step's error


def _readable(sock: socket.socket, seconds: float) -> bool:
    """Whether the server has sent something (or closed) within ``seconds``."""
    pending = getattr(sock, "pending", None)  # TLS: bytes decrypted already, not on the socket
    if pending is not None and pending():
        return True
    readable, _, _ = select.select([sock], [], [], max(seconds, 0.0))
    return bool(readable)


def _printable(data: bytes) -> str:
    text = data.decode("utf-8", "replace").rstrip("\r\n")
    text = "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in text)
    return (
        text if len(text) <= TRACE_LINE_LIMIT else text[:TRACE_LINE_LIMIT] + f"... ({len(text)} characters)"
    )
