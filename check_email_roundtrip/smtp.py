"""The SMTP submission session: one message, every phase timed.

Knows nothing of Nagios.  :func:`submit_message` returns a frozen
:class:`Submission` or raises :class:`~.errors.ProbeError` naming the phase
and quoting the server; either way the session's phase times (which phases
completed) are left in the :class:`~.session.PhaseTimes` it is given.

Phases and what each timing bucket covers:

- ``connect``: name resolution, TCP connect, the TLS handshake for implicit
  TLS, the server's greeting and the first EHLO (until we know what the
  server offers);
- ``starttls``: the STARTTLS command, the handshake and the EHLO after it;
- ``auth``: the AUTH exchange;
- ``submit``: MAIL FROM up to the server's final reply to the message data;
- ``total``: from the start of ``connect`` until QUIT was answered (until the
  reply to the message when it never is).

smtplib is used through its public API: we hand it a connected socket and a
:class:`~.session.Wire` to read replies from, and it sends through ``send``.
"""

from __future__ import annotations

import base64
import functools
import socket
import sys
import threading
import time
from collections.abc import Sequence

from . import sasl
from .credentials import Login, Mechanism, Secret
from .deadline import GRACE
from .errors import Phase, ProbeError
from .facts import Submission
from .mask import register_secret
from .net import connection_error
from .session import PhaseTimes, Reach, Session, Wire
from .settings import Endpoint, Security
from .tls import OldTlsOnly

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    import smtplib
    from typing import Any, Callable


def parse_queue_id(reply: str) -> str | None:
    """Find the queue id in a final DATA reply ("250 2.0.0 Ok: queued as 4Xk3")."""
    words = reply.split()
    for index, word in enumerate(words[:-1]):
        if word.lower() == "as" and index > 0 and words[index - 1].lower() == "queued":
            return words[index + 1].strip("<>.,;()[]")
    for word in words:  # Exim: "250 OK id=1abcde-000123-AB"
        if word.lower().startswith("id="):
            return word[3:]
    return None


def refusal(code: int | None) -> str:
    """4xx is a temporary refusal (rate limit, greylisting, full queue), 5xx a
    permanent one: the admin reads which from the word, the code says it too."""
    return "refused temporarily" if 400 <= (code or 0) < 500 else "rejected"


def refused(
    phase: Phase, code: int | None, reply: bytes | str, expected: int, subject: str = ""
) -> ProbeError:
    """The server's refusal of a step, in the words the admin reads: 4xx
    "refused temporarily", 5xx "rejected" (of ``subject``: "message");
    anything else was not the answer to that step (``expected`` was)."""
    text = reply_text(reply)
    if code is None or not 400 <= code < 600:
        answer = f"{code}" if code is not None and code >= 100 else "something that is not an SMTP reply"
        return ProbeError(
            phase, f"failed: out of step: answered {answer} where {expected} was expected", server_text=text
        )
    return ProbeError(phase, f"{subject} {refusal(code)}".strip(), code, text)


def reply_text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace")
    return str(reply)


# Longest wait for the server's goodbye (QUIT): the message was accepted with
# DATA's 250, a server slow to say 221 changes nothing.
GOODBYE = 2.0


@functools.cache
def _client_class() -> Callable[[SmtpSession, str], smtplib.SMTP]:
    """smtplib on a socket the session opened; what it sends is traced.
    Defined when the first connection is open: a run that cannot connect
    never loads smtplib (and the email package it brings)."""
    import smtplib

    class Client(smtplib.SMTP):
        def __init__(self, session: SmtpSession, helo_name: str):
            super().__init__(local_hostname=helo_name)  # no host: no connect of its own
            self.session = session

        def send(self, s: Any) -> None:  # smtplib's own signature: str or a buffer
            data = s.encode(self.command_encoding) if isinstance(s, str) else s
            if data.endswith(b"\r\n.\r\n") and len(data) > 5:  # the message itself
                self.session.sent(f"<message data, {len(data)} bytes>".encode())
            else:
                self.session.sent(data)
            super().send(s)

    return Client


def _password(session: SmtpSession, login: Login, secret: str) -> None:
    session.client.login(login.user, secret)


def _oauth2(session: SmtpSession, login: Login, token: str) -> None:
    """XOAUTH2 or OAUTHBEARER through smtplib's public auth(): the initial
    response on the AUTH line when it fits, else after the server's empty
    334; a failure challenge is kept (for the error) and answered as the
    mechanism requires, so that the server's final reply arrives."""
    mechanism, name = login.mechanism, login.mechanism.value.upper()
    offered = session.client.esmtp_features.get("auth", "").upper().split()
    if name not in offered:
        raise ProbeError(
            Phase.SMTP_AUTH, f"unavailable: the server offers no {name} (offers {' '.join(offered)})"
        )
    endpoint = session.endpoint
    response = sasl.initial_response(mechanism, login.user, token, endpoint.host, endpoint.port)
    register_secret(base64.b64encode(response.encode()).decode(), encoded=True)
    sent = False

    def answer(challenge: bytes | None = None) -> str:
        nonlocal sent
        if not sent and not challenge:  # the AUTH line, or the server's empty 334
            sent = True
            return response
        session.challenge = challenge or b""
        return sasl.failure_answer(mechanism)

    session.client.auth(name, answer, initial_response_ok=sasl.fits_on_auth_line(mechanism, response))


# One entry per sign-in mechanism: how SMTP proves a login with its secret.
SIGN_IN: dict[Mechanism, Callable[[SmtpSession, Login, str], None]] = {
    Mechanism.PASSWORD: _password,
    Mechanism.XOAUTH2: _oauth2,
    Mechanism.OAUTHBEARER: _oauth2,
}

# Replies that mean "this account may not sign in with a password any more",
# and what to do instead.
PASSWORD_REFUSALS = (
    ("5.7.139", "basic authentication is off for this account: sign in with OAuth2, --smtp-auth xoauth2"),
    ("5.7.30", "basic authentication is off for this account: sign in with OAuth2, --smtp-auth xoauth2"),
    ("5.7.9", "the provider wants an app password or OAuth2 (--smtp-auth xoauth2)"),
)


class SmtpSession(Session):
    protocol = "SMTP"
    security_option = "--smtp-security"
    starttls_dialogue = (
        (b"", b"220 "),
        (b"EHLO check-email-roundtrip\r\n", b"250 "),
        (b"STARTTLS\r\n", b"220 "),
    )

    def __init__(self, endpoint: Endpoint, reach: Reach, helo_name: str):
        super().__init__(endpoint, reach)
        self.helo_name = helo_name
        self._client: smtplib.SMTP | None = None
        self.challenge: bytes | None = None  # a token mechanism's failure challenge

    @property
    def client(self) -> smtplib.SMTP:
        if self._client is None:
            raise RuntimeError("SMTP session used before connect()")
        return self._client

    def current_socket(self) -> socket.socket | None:
        return self._client.sock if self._client is not None else None

    def protocol_error(self, phase: Phase, exc: Exception) -> ProbeError | None:
        endpoint = self.endpoint
        smtplib = sys.modules.get("smtplib")
        if smtplib is None:  # nothing of smtplib ran yet
            return None
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            cause = exc.__context__ or exc.__cause__
            if isinstance(cause, OSError):
                return connection_error(phase, endpoint.host, endpoint.port, cause, self.timeout)
            return ProbeError(phase, f"failed: connection closed by {endpoint.host}:{endpoint.port}")
        if isinstance(exc, smtplib.SMTPResponseException):
            return ProbeError(phase, "failed", exc.smtp_code, reply_text(exc.smtp_error))
        if isinstance(exc, smtplib.SMTPException):
            return ProbeError(phase, f"failed: {exc}")
        return None

    # -- the steps ----------------------------------------------------------------
    def connect(self) -> None:
        with self.phase(Phase.SMTP_CONNECT, "connect"):
            sock = self.open_socket(Phase.SMTP_CONNECT, Phase.SMTP_TLS)
            self._client = _client_class()(self, self.helo_name)
            self._client.sock, self._client.file = sock, Wire(sock, self)
            code, text = self.client.getreply()
            if code != 220:
                raise (
                    ProbeError(Phase.SMTP_CONNECT, "greeting refused", code, reply_text(text))
                    if code >= 400
                    else refused(Phase.SMTP_CONNECT, code, text, 220)
                )
        with self.phase(Phase.SMTP_EHLO, "connect"):
            self._ehlo(Phase.SMTP_EHLO)

    def starttls(self) -> None:
        import smtplib

        with self.phase(Phase.SMTP_STARTTLS, "starttls"):
            if not self.client.has_extn("starttls"):
                raise ProbeError(
                    Phase.SMTP_STARTTLS, "not offered by the server: refusing to continue without TLS"
                )
            try:
                self.client.starttls(context=self.starttls_context(Phase.SMTP_STARTTLS))
            except smtplib.SMTPResponseException as exc:
                raise refused(Phase.SMTP_STARTTLS, exc.smtp_code, exc.smtp_error, 220) from None
            # smtplib forgot the old file with the old socket; RFC 3207: ask again
            sock = self.client.sock
            if sock is None:  # starttls() has just set it; typeshed allows None
                raise RuntimeError("smtplib left no socket after STARTTLS")
            self.client.file = Wire(sock, self)
            self._ehlo(Phase.SMTP_STARTTLS)

    def authenticate(self, login: Login, secret: Secret) -> None:
        import smtplib

        with self.phase(Phase.SMTP_AUTH, "auth"):
            if not self.client.has_extn("auth"):
                raise ProbeError(
                    Phase.SMTP_AUTH,
                    "unavailable: the server offers no AUTH"
                    + ("" if self.endpoint.security is not Security.NONE else " (it may require TLS first)"),
                )
            try:
                with self.hiding_sent("<AUTH exchange hidden>"):
                    SIGN_IN[login.mechanism](self, login, secret.reveal())
            except smtplib.SMTPAuthenticationError as exc:
                raise self._auth_refused(login, exc.smtp_code, reply_text(exc.smtp_error)) from None
            except smtplib.SMTPNotSupportedError:
                raise ProbeError(Phase.SMTP_AUTH, "unavailable: the server offers no AUTH") from None
            except smtplib.SMTPException as exc:
                if "No suitable authentication method" not in str(exc):
                    raise
                mechanisms = self.client.esmtp_features.get("auth", "").strip()
                raise ProbeError(
                    Phase.SMTP_AUTH, f"unavailable: no mechanism in common (server offers {mechanisms})"
                ) from None
            except UnicodeEncodeError:
                raise ProbeError(Phase.SMTP_AUTH, "impossible: user name or password is not ASCII") from None

    def _auth_refused(self, login: Login, code: int, text: str) -> ProbeError:
        """The refusal, with a token mechanism's decoded challenge, and for a
        password refused as such, what to do instead."""
        if not 400 <= code < 600:
            return refused(Phase.SMTP_AUTH, code, text, 235)
        reason = refusal(code)
        if self.challenge is not None:
            text += sasl.challenge_note(login.mechanism, self.challenge)
        elif not login.mechanism.is_oauth:
            hint = next((hint for marker, hint in PASSWORD_REFUSALS if marker in text), None)
            reason += f" ({hint})" if hint else ""
        return ProbeError(Phase.SMTP_AUTH, reason, code, text)

    def submit(
        self, envelope_from: str, recipients: Sequence[str], message: Callable[[], bytes]
    ) -> Submission:
        import smtplib

        client = self.client
        with self.phase(Phase.SMTP_MAIL, "submit"):
            # Non-ASCII addresses need SMTPUTF8 (RFC 6531); smtplib then sends
            # the commands as UTF-8.  Without it the server would mangle them.
            options = []
            if not all(address.isascii() for address in [envelope_from, *recipients]):
                if not client.has_extn("smtputf8"):
                    raise ProbeError(
                        Phase.SMTP_MAIL,
                        "impossible: the addresses are not ASCII and the server offers no SMTPUTF8",
                    )
                options.append("SMTPUTF8")
            mail_from_at, mail_from_wall = time.monotonic(), time.time()
            code, text = client.mail(envelope_from, options)
            if code != 250:
                raise refused(Phase.SMTP_MAIL, code, text, 250)
        with self.phase(Phase.SMTP_RCPT, "submit"):
            for recipient in recipients:
                code, text = client.rcpt(recipient)
                if code not in (250, 251):
                    raise refused(Phase.SMTP_RCPT, code, text, 250)
        with self.phase(Phase.SMTP_DATA, "submit"):
            data_wall = time.time()
            try:
                code, text = client.data(message())
            except smtplib.SMTPDataError as exc:  # the DATA command itself was refused
                raise refused(Phase.SMTP_DATA, exc.smtp_code, exc.smtp_error, 354) from None
            if code != 250:
                raise refused(Phase.SMTP_DATA, code, text, 250, "message")
        final_reply = " ".join(f"{code} {reply_text(text)}".split())
        return Submission(final_reply, parse_queue_id(final_reply), mail_from_at, mail_from_wall, data_wall)

    def quit(self) -> bool:
        """QUIT, at most GOODBYE seconds; whether the server answered it."""
        try:
            # in the background: the run's stage is what the main thread does
            with self.phase(Phase.SMTP_QUIT, limit=GOODBYE, names_stage=False):
                self.client.quit()
            return True
        except ProbeError:
            # The message is accepted once DATA got its 250; a server that
            # drops the line before answering QUIT has still taken it.
            return False

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def connect_and_starttls(self) -> None:
        try:
            self._connect_and_starttls()
        except OldTlsOnly:  # allowed now: once more from the start, to see and say what it speaks
            self.close()
            self.times.clear()
            self._connect_and_starttls()

    def _connect_and_starttls(self) -> None:
        self.connect()
        if self.endpoint.security is Security.STARTTLS:
            self.starttls()

    def _ehlo(self, phase: Phase) -> None:
        code, text = self.client.ehlo()
        if code != 250:
            raise refused(phase, code, text, 250)


def open_submission(
    endpoint: Endpoint, reach: Reach, helo_name: str, times: PhaseTimes, secret: Secret | None = None
) -> SmtpSession:
    """Connect, STARTTLS when asked, AUTH when there is a login: the session
    ready for MAIL FROM.  ProbeError on the first failing phase; ``times``
    gets each completed phase's bucket."""
    session = SmtpSession(endpoint, reach, helo_name)
    session.times = times
    try:
        session.connect_and_starttls()
        if endpoint.login is not None:
            if secret is None:
                raise RuntimeError("a login without its secret")
            session.authenticate(endpoint.login, secret)
    except BaseException:
        session.close()
        raise
    return session


def submit_message(
    session: SmtpSession,
    envelope_from: str,
    recipients: Sequence[str],
    message: Callable[[], bytes],  # built when DATA is sent
) -> tuple[Submission, Callable[[], None]]:
    """Submit one message on an open session; ProbeError on the first
    failing phase.  QUIT is said in the background: the message is the
    server's once DATA got its 250, and a round trip must not wait for a slow
    221.  The second value waits for that goodbye (at most GOODBYE seconds).
    ``total`` ends with the 221, or, when QUIT is never answered, with the
    reply to the message: our wait for a goodbye is not the server's time."""
    times = session.times
    try:
        submission = session.submit(envelope_from, recipients, message)
        accepted = time.monotonic()
    except BaseException:
        session.close()
        raise

    def goodbye() -> None:
        try:
            answered = session.quit()
            times.add("total", (time.monotonic() if answered else accepted) - session.opened_at)
        finally:
            session.close()

    worker = threading.Thread(target=goodbye, name="smtp-quit", daemon=True)
    worker.start()
    return submission, lambda: worker.join(GOODBYE + GRACE)
