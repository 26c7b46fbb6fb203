"""The one error type the protocol code raises, and the phases it can name.

Protocol code (``smtp``, ``imap``) knows nothing of Nagios: it returns timings
and facts, or raises :class:`ProbeError`, which carries the phase, the server's
reply code and the server's own text.  The nagiosplugin layer turns a
ProbeError into a CRITICAL result whose text is ``str(error)``.

:class:`RunTimeout` is deliberately *not* an ``Exception``: it derives from
``BaseException`` so that no ``except Exception`` anywhere (ours, smtplib's or
imaplib's) can swallow the end of the ``-t`` budget.
"""

from __future__ import annotations

import enum

from .mask import mask


class Phase(enum.Enum):
    """Every stage a probe can fail in.  The value is how the output names it."""

    OAUTH_TOKEN = "OAuth token request"
    SMTP_CONNECT = "SMTP connect"
    SMTP_TLS = "SMTP TLS handshake"
    SMTP_EHLO = "SMTP EHLO"
    SMTP_STARTTLS = "SMTP STARTTLS"
    SMTP_AUTH = "SMTP AUTH"
    SMTP_MAIL = "SMTP MAIL FROM"
    SMTP_RCPT = "SMTP RCPT TO"
    SMTP_DATA = "SMTP DATA"
    SMTP_QUIT = "SMTP QUIT"
    IMAP_CONNECT = "IMAP connect"
    IMAP_TLS = "IMAP TLS handshake"
    IMAP_STARTTLS = "IMAP STARTTLS"
    IMAP_LOGIN = "IMAP LOGIN"
    IMAP_AUTHENTICATE = "IMAP AUTHENTICATE"
    IMAP_SELECT = "IMAP SELECT"
    IMAP_STATUS = "IMAP STATUS"
    IMAP_SEARCH = "IMAP SEARCH"
    IMAP_FETCH = "IMAP FETCH"
    IMAP_LOGOUT = "IMAP LOGOUT"
    DELIVERY = "waiting for delivery"

    def __str__(self) -> str:
        return self.value


class ProbeError(Exception):
    """A fact about the monitored service: the probe could not go on.

    ``reason`` is our short description ("rejected", "connection refused",
    "certificate not trusted"); ``code`` and ``server_text`` are the server's
    reply when there was one, quoted as the server sent it.
    """

    def __init__(
        self,
        phase: Phase,
        reason: str,
        code: int | None = None,
        server_text: str = "",
    ):
        self.phase = phase
        self.reason = reason
        self.code = code
        # one line, always; and whatever of ours the server quoted back, masked
        self.server_text = mask(" ".join(server_text.split()))
        super().__init__(str(self))

    @property
    def server_reply(self) -> str:
        return " ".join(part for part in (str(self.code) if self.code else "", self.server_text) if part)

    def __str__(self) -> str:
        text = f"{self.phase} {self.reason}"
        reply = self.server_reply
        return f"{text}: {reply}" if reply else text


class LocalError(Exception):
    """Something on the monitoring host's side failed, not the service: a
    token command that exits non-zero, a token file gone.  UNKNOWN, naming it."""

    def __init__(self, phase: Phase, text: str):
        self.phase = phase
        self.text = mask(" ".join(text.split()))  # a command's stderr may quote a token
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.phase}: {self.text}"


class Stopped(BaseException):
    """The run was stopped from outside before it finished: UNKNOWN, naming
    the stage.  A BaseException, so that no ``except Exception`` anywhere
    (ours, smtplib's or imaplib's) can swallow it."""

    def __init__(self, stage: Phase, text: str):
        self.stage = stage
        super().__init__(text)


class RunTimeout(Stopped):
    """The ``-t`` budget ran out; ``stage`` says what the probe was doing."""

    def __init__(self, stage: Phase, budget: float):
        self.budget = budget
        super().__init__(stage, f"timeout: -t {budget:g} s reached during {stage}")


class Interrupted(Stopped):
    """SIGTERM (a scheduler giving up on us): say so and keep what we know."""

    def __init__(self, stage: Phase, signal_name: str):
        super().__init__(stage, f"terminated by {signal_name} during {stage}")


class StepExpired(TimeoutError):
    """A step did not finish within its limit although the server kept
    talking (a reply that never ends, a dripping literal)."""

    def __init__(self, seconds: float, what: str = "the reply did not end"):
        self.seconds = seconds
        super().__init__(f"{what} within {seconds:.1f} s")


class OverLimit(OSError):
    """The server sent more than a real server ever needs: the client's own
    limit, said as ours, not as if the server had said it."""

    def __init__(self, what: str, limit: int, unit: str = "bytes"):
        super().__init__(f"{what} exceeded the client's limit of {limit} {unit}")
