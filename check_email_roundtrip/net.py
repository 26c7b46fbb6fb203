"""Name resolution and TCP, with every failure named for an admin.

Resolution is done here, separately from the connect, so that "the name does
not resolve" and "nothing listens on the port" are told apart in the output:
both are CRITICAL, but they send the admin to different places.
"""

from __future__ import annotations

import socket
import ssl

from .errors import Phase, ProbeError


def connect_tcp(host: str, port: int, timeout: float, phase: Phase) -> socket.socket:
    """Resolve ``host`` and connect to the first address that answers."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ProbeError(phase, f"failed: cannot resolve host name {host} ({exc.strerror})") from None
    except UnicodeError:
        raise ProbeError(phase, f"failed: invalid host name {host!r}") from None
    last_error: OSError | None = None
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


def connection_error(
    phase: Phase, host: str, port: int, exc: BaseException | None, timeout: float
) -> ProbeError:
    """A socket-level failure as a ProbeError that names the cause."""
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
