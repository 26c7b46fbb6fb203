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

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, Callable, ClassVar

from .deadline import Deadline
from .errors import Phase, ProbeError
from .net import connect_tcp, connection_error
from .settings import Endpoint, Security
from .tls import TlsClient

Trace = Callable[[str], None]
# Longest line of the protocol trace; the rest is elided.
TRACE_LINE_LIMIT = 300


class PhaseTimes:
    """Seconds per timing bucket; a bucket sums the phases timed into it."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    def add(self, bucket: str, seconds: float) -> None:
        self._seconds[bucket] = self._seconds.get(bucket, 0.0) + seconds

    def get(self, bucket: str) -> float | None:
        return self._seconds.get(bucket)


class Wire:
    """The reading side of a connection as a socket file (``readline``,
    ``read``, ``close``), every line passing the session: for smtplib, which
    reads ``self.file`` directly."""

    def __init__(self, sock: socket.socket, session: Session):
        self._file = sock.makefile("rb")
        self._session = session

    def readline(self, limit: int = -1) -> bytes:
        return self._session.read_line(self._file, limit)

    def read(self, size: int) -> bytes:
        return self._session.read_bytes(self._file, size)

    def close(self) -> None:
        self._file.close()


class Session:
    """One connection to one server, in phases.  Subclasses speak the protocol."""

    protocol: ClassVar[str] = "?"
    # the option that fixes a TLS mismatch on this protocol's port
    security_option: ClassVar[str] = "--?-security"

    def __init__(self, endpoint: Endpoint, deadline: Deadline, tls: TlsClient, trace: Trace | None):
        self.endpoint = endpoint
        self.deadline = deadline
        self.tls = tls
        self.trace = trace
        self.times = PhaseTimes()
        self.timeout = deadline.socket_timeout()  # the current step's, for "no answer within"
        self.last_seconds = 0.0  # how long the last completed phase took
        self._hidden: str | None = None  # what the trace shows instead of sent lines

    # -- phases ---------------------------------------------------------------------
    @contextmanager
    def phase(self, phase: Phase, bucket: str | None = None) -> Iterator[None]:
        self.deadline.enter(phase)
        self.timeout = self.deadline.socket_timeout()
        sock = self.current_socket()
        if sock is not None:
            sock.settimeout(self.timeout)
        started = time.monotonic()
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
            raise self._with_hint(phase, exc, error) from None
        self.last_seconds = time.monotonic() - started
        if bucket is not None:
            self.times.add(bucket, self.last_seconds)

    def protocol_error(self, phase: Phase, exc: Exception) -> ProbeError | None:
        """The stdlib client's exception as a ProbeError; None: not ours to map."""
        return None

    def current_socket(self) -> socket.socket | None:
        """The stdlib client's socket now (STARTTLS replaces it)."""
        return None

    def _with_hint(self, phase: Phase, exc: BaseException, error: ProbeError) -> ProbeError:
        """A server silent at greeting time, reached without TLS, is most often
        an implicit-TLS port waiting for our handshake: say so."""
        if (
            self._is_greeting(phase)
            and self.endpoint.security is not Security.TLS
            and "no answer within" in error.reason
        ):
            error.reason += f" (an implicit-TLS port? try {self.security_option} tls)"
        return error

    def _is_greeting(self, phase: Phase) -> bool:
        return phase in (Phase.SMTP_CONNECT, Phase.IMAP_CONNECT)

    # -- the connection -------------------------------------------------------------
    def open_socket(self, connect: Phase, handshake: Phase) -> socket.socket:
        """TCP to the endpoint, and the TLS handshake for implicit TLS; runs
        inside the caller's connect phase."""
        endpoint = self.endpoint
        sock = connect_tcp(endpoint.host, endpoint.port, self.timeout, connect)
        if endpoint.security is Security.TLS:
            self.deadline.enter(handshake)
            sock = self.tls.handshake(sock, self.protocol, endpoint.host, endpoint.port, handshake)
            self.deadline.enter(connect)
        return sock

    # -- the wire -------------------------------------------------------------------
    def read_line(self, file: BinaryIO, limit: int = -1) -> bytes:
        line = file.readline(limit)
        self.received(line)
        return line

    def read_bytes(self, file: BinaryIO, size: int) -> bytes:
        data = file.read(size)
        self.received_literal(data)
        return data

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
        if self.trace is not None:
            text = self._hidden if self._hidden is not None else _printable(data)
            self.trace(f"{self.protocol} > {text}")

    def received(self, line: bytes) -> None:
        if self.trace is not None:
            self.trace(f"{self.protocol} < {_printable(line)}")

    def received_literal(self, data: bytes) -> None:
        if self.trace is not None:
            self.trace(f"{self.protocol} < <literal of {len(data)} bytes>")


def _printable(data: bytes) -> str:
    text = data.decode("utf-8", "replace").rstrip("\r\n")
    text = "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in text)
    return (
        text if len(text) <= TRACE_LINE_LIMIT else text[:TRACE_LINE_LIMIT] + f"... ({len(text)} characters)"
    )
