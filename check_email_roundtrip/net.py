"""Name resolution and TCP, with every failure named for an admin.

Resolution is done here, separately from the connect, so that "the name does
not resolve" and "nothing listens on the port" are told apart in the output:
both are CRITICAL, but they send the admin to different places.
"""

from __future__ import annotations

import socket
import threading
import time

from .errors import OverLimit, Phase, ProbeError, StepExpired

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Any


def resolve(host: str, port: int, timeout: float, phase: Phase, family: int = socket.AF_UNSPEC) -> list[Any]:
    """getaddrinfo, bounded: the C resolver has no timeout of its own, so it
    runs in a thread we stop waiting for (a literal address needs none)."""

    def lookup() -> list[Any]:
        return socket.getaddrinfo(name, port, family, socket.SOCK_STREAM)

    name = wire_name(host)

    try:
        if _is_address(host):
            return lookup()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["addresses"] = lookup()
            except Exception as exc:  # noqa: BLE001 - handed to the caller below
                outcome["error"] = exc

        worker = threading.Thread(target=work, name="resolve", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise ProbeError(
                phase,
                f"failed: cannot resolve host name {host}: no answer from the resolver "
                f"within {timeout:.1f} s",
            )
        if "error" in outcome:
            raise outcome["error"]
        return list(outcome["addresses"])
    except socket.gaierror as exc:
        if family != socket.AF_UNSPEC and _resolves(host, port, min(timeout, 2.0), phase):
            version, flag = ("IPv4", "-4") if family == socket.AF_INET else ("IPv6", "-6")
            raise ProbeError(
                phase, f"failed: {host} has no {version} address ({flag} asks for one)"
            ) from None
        raise ProbeError(phase, f"failed: cannot resolve host name {host} ({exc.strerror})") from None
    except UnicodeError:
        raise ProbeError(phase, f"failed: invalid host name {host!r}") from None


def wire_name(host: str) -> str | bytes:
    """``host`` as getaddrinfo and ssl's server_hostname are given it.

    Given a str, both IDNA-encode it first, and loading that codec
    (stringprep, unicodedata) costs 1.5-2 ms of every run, on the way to the
    first connect; for an ASCII name the codec only checks the labels'
    lengths and returns the same bytes, so an ASCII name goes as those bytes.
    Any other name (an internationalized one, or one the codec refuses) goes
    as it is, for the codec to encode or refuse in its own words."""
    if host.isascii():
        try:
            return _ascii_name(host)
        except UnicodeError:
            pass
    return host


def _ascii_name(host: str) -> bytes:
    """What the IDNA codec makes of an ASCII host name: the same bytes, once
    no label is empty or over 63 characters (a trailing dot is fine)."""
    name = host.encode("ascii")
    labels = name.split(b".")
    if labels[-1] == b"" and len(labels) > 1:
        labels.pop()
    if not name or any(not 0 < len(label) < 64 for label in labels):
        raise UnicodeError("label empty or too long")
    return name


def _resolves(host: str, port: int, timeout: float, phase: Phase) -> bool:
    """Whether ``host`` has addresses of any family: asked after a lookup
    limited to one (-4, -6) failed, to say which is missing."""
    try:
        return bool(resolve(host, port, timeout, phase))
    except ProbeError:
        return False


def _is_address(host: str) -> bool:
    """A literal IPv4 or IPv6 address (with a zone, "fe80::1%eth0"), which
    needs no resolver.  inet_pton, not ipaddress: this is on every run's path
    and ipaddress costs a start-up 2 ms."""
    literal = host.split("%", 1)[0]
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, literal)
            return True
        except (OSError, ValueError):
            pass
    return False


def connect_tcp(
    host: str, port: int, timeout: float, phase: Phase, family: int = socket.AF_UNSPEC
) -> socket.socket:
    """Resolve ``host`` and connect to the first address that answers, all
    within ``timeout``."""
    ends = time.monotonic() + timeout
    addresses = resolve(host, port, timeout, phase, family)
    last_error: OSError | None = None
    for family_, socktype, proto, _, address in addresses:
        left = ends - time.monotonic()
        if left <= 0:
            last_error = socket.timeout("timed out")
            break
        sock = socket.socket(family_, socktype, proto)
        sock.settimeout(left)
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
    if isinstance(exc, (StepExpired, OverLimit)):
        return ProbeError(phase, f"{where} failed: {exc}")
    if isinstance(exc, ConnectionRefusedError):
        return ProbeError(phase, f"{where} refused (nothing listening?)")
    if isinstance(exc, socket.timeout):
        return ProbeError(phase, f"{where}: no answer within {timeout:.1f} s")
    import ssl  # loaded already when a handshake was made; a refused connect never gets here

    if isinstance(exc, ssl.SSLCertVerificationError):
        return ProbeError(phase, f"{where}: certificate not accepted: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return ProbeError(phase, f"{where}: TLS failed: {ssl_reason(exc) or exc}")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, EOFError)):
        return ProbeError(phase, f"{where}: connection closed by the server")
    if isinstance(exc, OSError) and exc.strerror:
        return ProbeError(phase, f"{where} failed: {exc.strerror}")
    return ProbeError(phase, f"{where} failed: {exc}")


def ssl_reason(exc: BaseException) -> str | None:
    """OpenSSL's reason as a name ("WRONG_VERSION_NUMBER").  Python sets
    ``reason`` only for the errors its build knows by name (Debian's 3.11.2
    has no name for "legacy sigalg disallowed or unsupported", 3.11.7 does):
    else it is read off the message, "[SSL] legacy sigalg ... (_ssl.c:992)"."""
    reason = getattr(exc, "reason", None)
    if reason and reason != "SSL":
        return str(reason)
    text = str(exc)
    if text.startswith("[") and "]" in text:
        text = text.split("]", 1)[1]
    text = text.split(" (_ssl.c", 1)[0].strip()
    return "_".join(text.upper().split()) or None
