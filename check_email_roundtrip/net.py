"""TCP and TLS plumbing shared by the SMTP and IMAP code.

Name resolution is done here, separately from the connect, so that "the name
does not resolve" and "nothing listens on the port" are told apart in the
output: both are CRITICAL, but they send the admin to different places.
"""

import socket
import ssl
from typing import Optional

from .errors import Phase, ProbeError


def make_ssl_context(ca_file: Optional[str], insecure: bool) -> ssl.SSLContext:
    """Verified TLS by default: the system store, plus ``ca_file`` if given.

    ``insecure`` turns certificate and host name checks off; the caller is
    responsible for saying so in the output.
    """
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class TlsContext:
    """The SSL context, built on first use: loading the system's CA store
    costs ~30 ms, which a run that fails before any TLS need not pay."""

    def __init__(self, ca_file: Optional[str], insecure: bool):
        self.ca_file = ca_file
        self.insecure = insecure
        self._context: Optional[ssl.SSLContext] = None

    def get(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = make_ssl_context(self.ca_file, self.insecure)
        return self._context


def connect_tcp(host: str, port: int, timeout: float, phase: Phase) -> socket.socket:
    """Resolve ``host`` and connect to the first address that answers."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ProbeError(phase, f"failed: cannot resolve host name {host} ({exc.strerror})") from None
    except UnicodeError:
        raise ProbeError(phase, f"failed: invalid host name {host!r}") from None
    last_error: Optional[OSError] = None
    for family, socktype, proto, _, address in addresses:
        sock = socket.socket(family, socktype, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            last_error = exc
    raise connection_error(phase, host, port, last_error, timeout)


def connection_error(phase: Phase, host: str, port: int, exc: Optional[BaseException], timeout: float) -> ProbeError:
    """Turn a socket-level failure into a ProbeError that names the cause."""
    where = f"to {host}:{port}"
    if isinstance(exc, ConnectionRefusedError):
        return ProbeError(phase, f"{where} refused (nothing listening?)")
    if isinstance(exc, socket.timeout):
        return ProbeError(phase, f"{where}: no answer within {timeout:.1f} s")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ProbeError(phase, f"{where}: certificate not accepted: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return ProbeError(phase, f"{where}: TLS failed: {exc.reason or exc}")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, EOFError)):
        return ProbeError(phase, f"{where}: connection closed by the server")
    if isinstance(exc, OSError) and exc.strerror:
        return ProbeError(phase, f"{where} failed: {exc.strerror}")
    return ProbeError(phase, f"{where} failed: {exc}")


def wrap_tls(sock: socket.socket, context: TlsContext, host: str, port: int, phase: Phase) -> ssl.SSLSocket:
    """TLS handshake on a connected socket, with errors named for the admin."""
    try:
        return context.get().wrap_socket(sock, server_hostname=host)
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        raise connection_error(phase, host, port, exc, sock.gettimeout() or 0) from None


def hint_implicit_tls(error: ProbeError, plaintext_greeting_expected: bool, option: str) -> ProbeError:
    """A server silent at greeting time, reached without TLS, is most often an
    implicit-TLS port waiting for our handshake: say so."""
    if plaintext_greeting_expected and "no answer within" in error.reason:
        error.reason += f" (an implicit-TLS port? try {option} tls)"
    return error
