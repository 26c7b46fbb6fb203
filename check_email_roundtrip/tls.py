"""The one place where a TLS handshake happens, for SMTP and IMAP alike.

Implicit TLS (465, 993) hands a connected socket to :meth:`TlsClient.handshake`;
STARTTLS goes through the stdlib clients' public ``starttls()``, which call
``wrap_socket`` on whatever context they are given: they get
:meth:`TlsClient.for_starttls`, whose ``wrap_socket`` is the same handshake.
So every handshake is verified the same way, fails with the same words, and
leaves what it taught (protocol version, cipher, the peer's certificate) in
one list, :attr:`TlsClient.handshakes`, whichever protocol did it.

The context is built on first use: loading the system's CA store costs ~30 ms,
which a run that fails before any TLS need not pay.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from .errors import Phase, ProbeError
from .net import connection_error
from .settings import TlsConfig

if TYPE_CHECKING:  # ssl is imported where a handshake needs it: a run that fails first never loads it
    import ssl

# OpenSSL's reasons when what came back is not TLS at all (a greeting in
# plain text: "220 ...", "* OK ...").
PLAIN_TEXT_ANSWERS = {
    "WRONG_VERSION_NUMBER",
    "UNKNOWN_PROTOCOL",
    "HTTP_REQUEST",
    "PACKET_LENGTH_TOO_LONG",
    "RECORD_LAYER_FAILURE",
    "UNEXPECTED_RECORD",
}


class Handshake(NamedTuple):
    """What one completed handshake taught about a server."""

    protocol: str  # "SMTP" or "IMAP"
    host: str
    port: int
    version: str  # "TLSv1.3"
    cipher: str
    seconds: float
    verified: bool
    certificate: bytes | None  # the peer's leaf certificate, DER


def load_system_trust(context: ssl.SSLContext) -> None:
    """The system's CA certificates.  Where the system keeps them as a hashed
    directory too (Debian, Ubuntu: /etc/ssl/certs), OpenSSL looks up only the
    issuer a handshake needs there (about 1 ms); the bundle file would be
    parsed whole first (140 certificates, 25 ms on every run).  With
    SSL_CERT_FILE set, or no hashed directory, the default load is used."""
    import ssl

    paths = ssl.get_default_verify_paths()
    capath = paths.capath
    if not os.environ.get(paths.openssl_cafile_env) and capath and _hashed(capath):
        context.load_verify_locations(capath=capath)
    else:
        context.load_default_certs()


def _hashed(directory: str) -> bool:
    """Whether ``directory`` has OpenSSL's subject-hash links (``1a2b3c4d.0``)."""
    try:
        with os.scandir(directory) as entries:
            return any(len(e.name) == 10 and e.name.endswith(".0") for e in entries)
    except OSError:
        return False


def load_ca_file(path: str) -> None:
    """Raise ssl.SSLError / OSError if ``path`` holds no usable CA certificate
    (cheap: no system store is loaded for this check)."""
    import ssl

    ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)


class TlsClient:
    """One per run: the context, the handshakes, what they taught."""

    def __init__(self, config: TlsConfig):
        self.config = config
        self._contexts: dict[bool, ssl.SSLContext] = {}
        self.handshakes: list[Handshake] = []
        # seconds spent building contexts (loading CA stores): our CPU, which
        # the phase timings leave out
        self.spent_building = 0.0

    def context(self, verify: bool = False) -> ssl.SSLContext:
        """The context for the mail servers (unverified with --insecure), or
        with ``verify`` one that always verifies (the token endpoint)."""
        import ssl

        verified = verify or not self.config.insecure
        if verified not in self._contexts:
            started = time.monotonic()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname checked, certificate required
            if verified:
                load_system_trust(context)
                if self.config.ca_file:
                    context.load_verify_locations(cafile=self.config.ca_file)
            else:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._contexts[verified] = context
            self.spent_building += time.monotonic() - started
        return self._contexts[verified]

    def handshake(
        self,
        sock: socket.socket,
        protocol: str,
        host: str,
        port: int,
        phase: Phase,
        verify: bool = False,
        plain_text_hint: str = "",
    ) -> ssl.SSLSocket:
        """TLS on a connected socket, verified against ``host``; a failure is a
        ProbeError naming ``phase`` and the cause (the socket is then closed).
        A server that answers in plain text gets ``plain_text_hint``."""
        import ssl

        started = time.monotonic()
        try:
            tls = self.context(verify).wrap_socket(sock, server_hostname=host)
        except (OSError, ssl.SSLError) as exc:
            timeout = sock.gettimeout() or 0.0
            sock.close()
            if isinstance(exc, ssl.SSLError) and exc.reason in PLAIN_TEXT_ANSWERS:
                hint = f" ({plain_text_hint})" if plain_text_hint else ""
                raise ProbeError(
                    phase,
                    f"to {host}:{port}: TLS failed: the server answered in plain text, "
                    f"not TLS: not an implicit-TLS port{hint}",
                ) from None
            raise connection_error(phase, host, port, exc, timeout) from None
        cipher = tls.cipher()
        self.handshakes.append(
            Handshake(
                protocol=protocol,
                host=host,
                port=port,
                version=tls.version() or "",
                cipher=cipher[0] if cipher else "",
                seconds=time.monotonic() - started,
                verified=verify or not self.config.insecure,
                certificate=tls.getpeercert(binary_form=True),
            )
        )
        return tls

    def speaks_tls(self, host: str, port: int, timeout: float) -> bool:
        """Whether a port answers a TLS handshake, on a connection of its own
        (nothing verified, nothing sent after it): for telling a silent
        implicit-TLS port from a server that is slow to greet."""
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        try:
            with socket.create_connection((host, port), timeout=timeout) as raw:
                with context.wrap_socket(raw, server_hostname=host):
                    return True
        except ssl.SSLError as exc:
            # an alert is TLS too (a server that wants SNI or a client certificate)
            return "ALERT" in str(exc.reason or "").upper()
        except OSError:
            return False

    def for_starttls(
        self, protocol: str, host: str, port: int, phase: Phase, verify: bool = False
    ) -> ssl.SSLContext:
        """A stand-in for an SSLContext, for smtplib's and imaplib's starttls()
        and http.client: they call nothing on it but wrap_socket."""
        return cast("ssl.SSLContext", _StarttlsContext(self, protocol, host, port, phase, verify))


class _StarttlsContext:
    """Has the one method smtplib/imaplib ``starttls`` call on a context."""

    def __init__(self, client: TlsClient, protocol: str, host: str, port: int, phase: Phase, verify: bool):
        self.client, self.protocol, self.host, self.port, self.phase = client, protocol, host, port, phase
        self.verify = verify

    def __getattr__(self, name: str) -> Any:
        # what http.client reads off a context (verify_mode, check_hostname):
        # the real one's
        return getattr(self.client.context(self.verify), name)

    def wrap_socket(self, sock: socket.socket, **_ignored: Any) -> ssl.SSLSocket:
        # server_hostname is ignored on purpose: the name verified is the one
        # the user gave, whatever the stdlib client remembers.
        return self.client.handshake(sock, self.protocol, self.host, self.port, self.phase, self.verify)
