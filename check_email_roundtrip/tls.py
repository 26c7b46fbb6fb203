"""The one place where a TLS handshake happens, for SMTP and IMAP alike.

Implicit TLS (465, 993) hands a connected socket to :meth:`TlsClient.handshake`;
STARTTLS goes through the stdlib clients' public ``starttls()``, which call
``wrap_socket`` on whatever context they are given: they get
:meth:`TlsClient.for_starttls`, whose ``wrap_socket`` is the same handshake;
the OAuth2 token request's HTTP connection calls it from its ``connect``.
So every handshake is verified the same way, fails with the same words, and
leaves what it taught (protocol version, cipher, the peer's certificate) in
one list, :attr:`TlsClient.handshakes`, whichever protocol did it.

The context is built on first use: loading the system's CA store costs ~30 ms,
which a run that fails before any TLS need not pay.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime

from .errors import Phase, ProbeError
from .net import connection_error, ssl_reason, wire_name
from .output import LOGGER
from .record import Record
from .settings import TlsConfig

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:  # ssl is imported where a handshake needs it: a run that fails first never loads it
    import ssl
    from typing import Any, Callable

    from .certinfo import CertificateFacts

log = logging.getLogger(LOGGER)

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


class Handshake(Record):
    """What one handshake taught about a server."""

    protocol: str  # "SMTP", "IMAP" or "HTTPS"
    host: str
    port: int
    address: str  # the address connected to
    version: str  # "TLSv1.3"; "" when verification failed
    cipher: str
    seconds: float
    verified: bool  # the certificate was checked and accepted
    certificate: bytes | None  # the peer's leaf certificate, DER (also when it was refused)

    def certificate_facts(self) -> CertificateFacts | None:
        """Its dates and names; None when there is none, or it does not parse."""
        from .certinfo import CertificateError, parse_certificate

        try:
            return parse_certificate(self.certificate) if self.certificate else None
        except CertificateError:
            return None

    def describe(self) -> str:
        """One line for -v: where, what was negotiated, whose certificate until when."""
        where = f"{self.protocol} {self.host}:{self.port} ({self.address})"
        facts = self.certificate_facts()
        certificate = (
            f"certificate for {facts.names()} from {facts.issuer_cn or '(no name)'}, valid until "
            f"{_date(facts.not_after)} ({facts.days_left():.1f} days)"
            if facts
            else "no certificate"
        )
        if not self.version:
            return f"{where}: handshake failed; {certificate}"
        checked = "verified" if self.verified else "NOT verified (--insecure)"
        return f"{where}: {self.version} {self.cipher}; {certificate}, {checked}"


# OpenSSL's reasons when the server speaks only TLS versions older than 1.2
# (which OpenSSL 3 refuses at its default security level).
OLD_PROTOCOL_ANSWERS = {
    "TLSV1_ALERT_PROTOCOL_VERSION",
    "UNSUPPORTED_PROTOCOL",
    "NO_PROTOCOLS_AVAILABLE",
    "LEGACY_SIGALG_DISALLOWED_OR_UNSUPPORTED",
    "VERSION_TOO_LOW",
    "WRONG_SSL_VERSION",
}
# X.509 verification codes the probe puts in words
_EXPIRED, _NOT_YET_VALID, _SELF_SIGNED, _SELF_SIGNED_IN_CHAIN = 10, 9, 18, 19
_UNKNOWN_ISSUER = (2, 20, 21)
_NAME_MISMATCH = (62, 64)


class OldTlsOnly(ProbeError):
    """The server speaks only TLS before 1.2: the session tries again with
    those versions allowed (to report it, with a WARNING)."""


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
    """One per run: the contexts, the handshakes, what they taught."""

    def __init__(self, config: TlsConfig):
        self.config = config
        self._contexts: dict[tuple[bool, bool], ssl.SSLContext] = {}
        self.handshakes: list[Handshake] = []
        self.old_tls: set[tuple[str, int]] = set()  # servers that speak only TLS before 1.2
        # seconds each thread spent building contexts (loading CA stores):
        # our CPU, which the phase timings leave out; per thread, since the
        # IMAP sign-in runs beside the SMTP one
        self._building: dict[int, float] = {}
        self._lock = threading.Lock()

    @property
    def spent_building(self) -> float:
        """Seconds the calling thread spent building contexts."""
        return self._building.get(threading.get_ident(), 0.0)

    def context(self, verify: bool = False, old_tls: bool = False) -> ssl.SSLContext:
        """The context for the mail servers (unverified with --insecure), or
        with ``verify`` one that always verifies (the token endpoint).  With
        ``old_tls``, TLS 1.0 and 1.1 are allowed too (OpenSSL security level
        0): only for a server that offered nothing newer, to report that.
        Built once per run, whichever thread asks first."""
        import ssl

        key = (verify or not self.config.insecure, old_tls)
        with self._lock:
            if key in self._contexts:
                return self._contexts[key]
            started = time.monotonic()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname checked, certificate required
            if key[0]:
                load_system_trust(context)
                if self.config.ca_file:
                    context.load_verify_locations(cafile=self.config.ca_file)
            else:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if old_tls:
                context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
                context.set_ciphers("DEFAULT:@SECLEVEL=0")
            self._contexts[key] = context
            thread = threading.get_ident()
            self._building[thread] = self._building.get(thread, 0.0) + time.monotonic() - started
            return context

    def handshake(
        self,
        sock: socket.socket,
        protocol: str,
        host: str,
        port: int,
        phase: Phase,
        verify: bool = False,
        plain_text_hint: str = "",
        diagnose: Callable[[], bytes | None] | None = None,
    ) -> ssl.SSLSocket:
        """TLS on a connected socket, verified against ``host``; a failure is a
        ProbeError naming ``phase`` and the cause in words (the socket is
        then closed).  A server that answers in plain text gets
        ``plain_text_hint``; a certificate refused is fetched again without
        verification by ``diagnose`` to say what is wrong with it."""
        import ssl

        started = time.monotonic()
        address = _peer_address(sock)
        old_tls = (host, port) in self.old_tls
        try:
            tls = self.context(verify, old_tls).wrap_socket(sock, server_hostname=wire_name(host))
        except (OSError, ssl.SSLError) as exc:
            timeout = sock.gettimeout() or 0.0
            sock.close()
            where = f"to {host}:{port}"
            reason = ssl_reason(exc)
            if isinstance(exc, ssl.SSLCertVerificationError):
                der = diagnose() if diagnose else None
                self._seen(
                    Handshake(protocol, host, port, address, "", "", time.monotonic() - started, False, der)
                )
                raise ProbeError(phase, f"{where}: {refusal_in_words(exc, host, der)}") from None
            if isinstance(exc, ssl.SSLError) and reason in PLAIN_TEXT_ANSWERS:
                hint = f" ({plain_text_hint})" if plain_text_hint else ""
                raise ProbeError(
                    phase,
                    f"{where}: TLS failed: the server answered in plain text, "
                    f"not TLS: not an implicit-TLS port{hint}",
                ) from None
            if isinstance(exc, ssl.SSLError) and reason in OLD_PROTOCOL_ANSWERS and not old_tls:
                self.old_tls.add((host, port))
                raise OldTlsOnly(
                    phase,
                    f"{where}: TLS failed: the server offers only TLS versions older than 1.2 ({reason})",
                ) from None
            raise connection_error(phase, host, port, exc, timeout) from None
        cipher = tls.cipher()
        self._seen(
            Handshake(
                protocol,
                host,
                port,
                address,
                tls.version() or "",
                cipher[0] if cipher else "",
                time.monotonic() - started,
                verify or not self.config.insecure,
                tls.getpeercert(binary_form=True),
            )
        )
        return tls

    def _seen(self, handshake: Handshake) -> None:
        self.handshakes.append(handshake)
        if log.isEnabledFor(logging.INFO):
            log.info("%s", handshake.describe())

    def speaks_tls(self, host: str, port: int, timeout: float) -> bool:
        """Whether a port answers a TLS handshake, on a connection of its own
        (nothing verified, nothing sent after it): for telling a silent
        implicit-TLS port from a server that is slow to greet."""
        import ssl

        try:
            with socket.create_connection((host, port), timeout=timeout) as raw:
                with self.peek_context().wrap_socket(raw, server_hostname=wire_name(host)):
                    return True
        except ssl.SSLError as exc:
            # an alert is TLS too (a server that wants SNI or a client certificate)
            return "ALERT" in (ssl_reason(exc) or "")
        except OSError:
            return False

    def peek_certificate(self, sock: socket.socket, host: str) -> bytes | None:
        """The certificate a server presents on ``sock`` (connected, at the
        point where the handshake starts), unverified; the socket is closed.
        For saying why a verified handshake refused it.  None if that fails."""
        try:
            with sock, self.peek_context().wrap_socket(sock, server_hostname=wire_name(host)) as tls:
                return tls.getpeercert(binary_form=True)
        except OSError:
            return None

    def peek_context(self) -> ssl.SSLContext:
        """Nothing verified, every version allowed: for looking, never for
        sending anything that matters."""
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        return context

    def for_starttls(
        self,
        protocol: str,
        host: str,
        port: int,
        phase: Phase,
        diagnose: Callable[[], bytes | None] | None = None,
    ) -> ssl.SSLContext:
        """A stand-in for an SSLContext, for smtplib's and imaplib's
        starttls(): they call nothing on it but wrap_socket."""
        # duck-typed: an SSLContext as far as those two callers can tell
        return _StarttlsContext(self, protocol, host, port, phase, diagnose)  # type: ignore[return-value]


def _peer_address(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return ""


def refusal_in_words(exc: ssl.SSLCertVerificationError, host: str, der: bytes | None) -> str:
    """Why the certificate was refused, in the admin's terms."""
    from .certinfo import CertificateError, parse_certificate

    code, message = exc.verify_code, exc.verify_message
    try:
        facts = parse_certificate(der) if der else None
    except CertificateError:
        facts = None
    if facts is None:
        return f"certificate not accepted: {message}"
    names = facts.names()
    if code == _EXPIRED:
        return f"certificate for {names} expired on {_date(facts.not_after)}"
    if code == _NOT_YET_VALID:
        return f"certificate for {names} not yet valid: valid from {_date(facts.not_before)}"
    if code in _NAME_MISMATCH:
        return f"certificate is for {names}, not {host}"
    if code == _SELF_SIGNED or (facts.self_issued and code in _UNKNOWN_ISSUER):
        return f"self-signed certificate (for {names}; trust it with --ca-file)"
    if code == _SELF_SIGNED_IN_CHAIN:
        root = facts.issuer_cn or "(no name)"
        return f"certificate for {names} chains to a root that is not trusted: {root} (use --ca-file?)"
    if code in _UNKNOWN_ISSUER:
        return f"unknown issuer: {facts.issuer_cn or '(no name)'} (use --ca-file?)"
    return f"certificate for {names} not accepted: {message}"


def _date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class _StarttlsContext:
    """Has the one method smtplib/imaplib ``starttls`` call on a context."""

    def __init__(
        self,
        client: TlsClient,
        protocol: str,
        host: str,
        port: int,
        phase: Phase,
        diagnose: Callable[[], bytes | None] | None,
    ):
        self.client, self.protocol, self.host, self.port, self.phase = client, protocol, host, port, phase
        self.diagnose = diagnose

    def wrap_socket(self, sock: socket.socket, **_ignored: Any) -> ssl.SSLSocket:
        # server_hostname is ignored on purpose: the name verified is the one
        # the user gave, whatever the stdlib client remembers.
        return self.client.handshake(
            sock, self.protocol, self.host, self.port, self.phase, diagnose=self.diagnose
        )
