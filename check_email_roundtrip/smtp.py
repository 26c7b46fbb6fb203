"""The SMTP submission session: one message, every phase timed.

Knows nothing of Nagios.  ``submit_message`` fills a caller-owned
:class:`SubmissionTimings` as it goes (so a failure still reports the phases
that completed) and either returns a :class:`SubmissionReceipt` or raises
:class:`~.errors.ProbeError` naming the phase and quoting the server.

Phases and what each timing covers:

- ``connect``: name resolution, TCP connect, the TLS handshake for implicit
  TLS, the server's greeting and the first EHLO (until we know what the server
  offers);
- ``starttls``: the STARTTLS command, the handshake and the EHLO after it;
- ``auth``: the AUTH exchange;
- ``submit``: MAIL FROM up to the server's final reply to the message data;
- ``total``: from the start of ``connect`` until QUIT was answered.
"""

import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from .deadline import Deadline
from .errors import Phase, ProbeError
from .net import TlsContext, connect_tcp, connection_error, hint_implicit_tls, wrap_tls
from .settings import Endpoint, Security


@dataclass
class SubmissionTimings:
    connect: Optional[float] = None
    starttls: Optional[float] = None
    auth: Optional[float] = None
    submit: Optional[float] = None
    total: Optional[float] = None
    # monotonic clock reading when MAIL FROM was sent: the round trip starts here
    submit_started: Optional[float] = None


@dataclass
class SubmissionReceipt:
    final_reply: str
    # Postfix, Exim, Exchange and most others name the queue entry in the final
    # reply; quoting it lets the admin grep the relay's log for this probe.
    queue_id: Optional[str]


class _TracedSMTP(smtplib.SMTP):
    """smtplib with our own socket set-up and a trace that hides AUTH.

    smtplib's debug output goes to stderr and shows the AUTH line with the
    base64 credentials; ours goes to the trace callback, with every line sent
    during AUTH replaced.
    """

    def __init__(self, open_socket: Callable[[], socket.socket], trace: Optional[Callable[[str], None]], helo_name: str):
        self._open_socket = open_socket
        self._trace = trace
        self.hiding_sent_lines = False
        super().__init__(local_hostname=helo_name)
        if trace:
            self.set_debuglevel(1)

    def _get_socket(self, host, port, timeout):
        self._host = host  # smtplib's STARTTLS verifies the certificate against this name
        return self._open_socket()

    def _print_debug(self, *args):
        if self._trace is None:
            return
        if self.hiding_sent_lines and args and args[0] == "send:":
            args = ("send:", "<AUTH exchange hidden>")
        self._trace("SMTP " + " ".join(str(arg) for arg in args))


def parse_queue_id(reply: str) -> Optional[str]:
    """Find the queue id in a final DATA reply ("250 2.0.0 Ok: queued as 4Xk3")."""
    words = reply.split()
    for index, word in enumerate(words[:-1]):
        if word.lower() == "as" and index > 0 and words[index - 1].lower() == "queued":
            return words[index + 1].strip("<>.,;()[]")
    for word in words:  # Exim: "250 OK id=1abcde-000123-AB"
        if word.lower().startswith("id="):
            return word[3:]
    return None


def refusal(code: int) -> str:
    """4xx is a temporary refusal (rate limit, greylisting, full queue), 5xx a
    permanent one: the admin reads which from the word, the code says it too."""
    return "refused temporarily" if 400 <= (code or 0) < 500 else "rejected"


def _reply_text(resp) -> str:
    if isinstance(resp, bytes):
        return resp.decode("utf-8", "replace")
    return str(resp)


def _disconnect_error(phase: Phase, endpoint: Endpoint, exc: BaseException, timeout: float) -> ProbeError:
    cause = exc.__context__ or exc.__cause__
    if isinstance(cause, OSError):
        return connection_error(phase, endpoint.host, endpoint.port, cause, timeout)
    return ProbeError(phase, f"failed: connection closed by {endpoint.host}:{endpoint.port}")


def submit_message(
    endpoint: Endpoint,
    tls_context: TlsContext,
    helo_name: str,
    envelope_from: str,
    recipients: Sequence[str],
    message: Callable[[], bytes],  # built when DATA is sent
    deadline: Deadline,
    timings: SubmissionTimings,
    trace: Optional[Callable[[str], None]] = None,
) -> SubmissionReceipt:
    """Run one SMTP submission; raise ProbeError on the first failing phase."""
    phase = Phase.SMTP_CONNECT
    started = time.monotonic()

    # the timeout the socket currently has, for "no answer within N s"
    socket_timeout = deadline.socket_timeout()

    def open_socket() -> socket.socket:
        sock = connect_tcp(endpoint.host, endpoint.port, socket_timeout, Phase.SMTP_CONNECT)
        if endpoint.security is Security.TLS:
            deadline.enter(Phase.SMTP_TLS)
            sock = wrap_tls(sock, tls_context, endpoint.host, endpoint.port, Phase.SMTP_TLS)
        return sock

    def enter(next_phase: Phase) -> Phase:
        nonlocal socket_timeout
        deadline.enter(next_phase)
        socket_timeout = deadline.socket_timeout()
        if smtp.sock is not None:
            smtp.sock.settimeout(socket_timeout)
        return next_phase

    smtp = _TracedSMTP(open_socket, trace, helo_name)
    try:
        deadline.enter(phase)
        code, text = smtp.connect(endpoint.host, endpoint.port)
        phase = enter(Phase.SMTP_CONNECT)  # back from the TLS handshake, if any
        if code != 220:
            raise ProbeError(phase, "greeting refused", code, _reply_text(text))
        phase = enter(Phase.SMTP_EHLO)
        _ehlo(smtp, phase)
        timings.connect = time.monotonic() - started

        if endpoint.security is Security.STARTTLS:
            phase = enter(Phase.SMTP_STARTTLS)
            step = time.monotonic()
            if not smtp.has_extn("starttls"):
                raise ProbeError(phase, "not offered by the server: refusing to continue without TLS")
            code, text = smtp.docmd("STARTTLS")
            if code != 220:
                raise ProbeError(phase, refusal(code), code, _reply_text(text))
            try:
                smtp.sock = tls_context.get().wrap_socket(smtp.sock, server_hostname=endpoint.host)
            except (OSError, ssl.SSLError) as exc:
                raise connection_error(phase, endpoint.host, endpoint.port, exc, socket_timeout) from None
            # RFC 3207: forget everything learnt before TLS and ask again.
            smtp.file = None
            smtp.helo_resp = smtp.ehlo_resp = None
            smtp.esmtp_features = {}
            smtp.does_esmtp = False
            _ehlo(smtp, phase)
            timings.starttls = time.monotonic() - step

        if endpoint.user is not None:
            phase = enter(Phase.SMTP_AUTH)
            step = time.monotonic()
            if not smtp.has_extn("auth"):
                raise ProbeError(phase, "unavailable: the server offers no AUTH" + (
                    "" if endpoint.security is not Security.NONE else " (it may require TLS first)"))
            smtp.hiding_sent_lines = True
            try:
                smtp.login(endpoint.user, endpoint.password.reveal())
            except smtplib.SMTPAuthenticationError as exc:
                raise ProbeError(phase, refusal(exc.smtp_code), exc.smtp_code, _reply_text(exc.smtp_error)) from None
            except smtplib.SMTPNotSupportedError:
                raise ProbeError(phase, "unavailable: the server offers no AUTH") from None
            except smtplib.SMTPException as exc:
                if "No suitable authentication method" in str(exc):
                    mechanisms = smtp.esmtp_features.get("auth", "").strip()
                    raise ProbeError(phase, f"unavailable: no mechanism in common (server offers {mechanisms})") from None
                raise
            except UnicodeEncodeError:
                raise ProbeError(phase, "impossible: user name or password is not ASCII") from None
            finally:
                smtp.hiding_sent_lines = False
            timings.auth = time.monotonic() - step

        phase = enter(Phase.SMTP_MAIL)
        # Non-ASCII addresses need SMTPUTF8 (RFC 6531); smtplib then sends the
        # commands as UTF-8.  Without it the server would mangle or refuse them.
        mail_options = []
        if not all(address.isascii() for address in [envelope_from, *recipients]):
            if not smtp.has_extn("smtputf8"):
                raise ProbeError(phase, "impossible: the addresses are not ASCII and the server offers no SMTPUTF8")
            mail_options.append("SMTPUTF8")
        timings.submit_started = step = time.monotonic()
        code, text = smtp.mail(envelope_from, mail_options)
        if code != 250:
            raise ProbeError(phase, refusal(code), code, _reply_text(text))
        phase = enter(Phase.SMTP_RCPT)
        for recipient in recipients:
            code, text = smtp.rcpt(recipient)
            if code not in (250, 251):
                raise ProbeError(phase, refusal(code), code, _reply_text(text))
        phase = enter(Phase.SMTP_DATA)
        try:
            code, text = smtp.data(message())
        except smtplib.SMTPDataError as exc:  # the DATA command itself was refused
            raise ProbeError(phase, refusal(exc.smtp_code), exc.smtp_code, _reply_text(exc.smtp_error)) from None
        if code != 250:
            raise ProbeError(phase, "message " + refusal(code), code, _reply_text(text))
        timings.submit = time.monotonic() - step
        final_reply = f"{code} {_reply_text(text)}"

        phase = enter(Phase.SMTP_QUIT)
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            # The message is accepted once DATA got its 250; a server that
            # drops the line before answering QUIT has still taken it.
            pass
        timings.total = time.monotonic() - started
        return SubmissionReceipt(final_reply=" ".join(final_reply.split()), queue_id=parse_queue_id(final_reply))
    except ProbeError:
        raise
    except smtplib.SMTPServerDisconnected as exc:
        error = _disconnect_error(phase, endpoint, exc, socket_timeout)
        raise hint_implicit_tls(error, phase is Phase.SMTP_CONNECT and endpoint.security is not Security.TLS,
                                "--smtp-security") from None
    except smtplib.SMTPResponseException as exc:
        raise ProbeError(phase, "failed", exc.smtp_code, _reply_text(exc.smtp_error)) from None
    except smtplib.SMTPException as exc:
        raise ProbeError(phase, f"failed: {exc}") from None
    except OSError as exc:
        raise connection_error(phase, endpoint.host, endpoint.port, exc, socket_timeout) from None
    finally:
        smtp.close()


def _ehlo(smtp: smtplib.SMTP, phase: Phase) -> None:
    code, text = smtp.ehlo()
    if code != 250:
        raise ProbeError(phase, refusal(code), code, _reply_text(text))
