"""The one settings object the CLI builds and every other layer reads.

Nothing below the CLI looks at ``argparse`` or the environment: the probe and
the nagiosplugin layer get a :class:`Settings` (or the part of it they need).
"""

import base64
import enum
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import nagiosplugin

from .net import TlsContext
from .policy import AuthPolicy


class Security(enum.Enum):
    TLS = "tls"  # implicit TLS from the first byte (465, 993)
    STARTTLS = "starttls"  # plaintext greeting, then STARTTLS before anything else
    NONE = "none"  # no TLS at all: only when the user asks for it

    def __str__(self) -> str:
        return self.value


class Mode(enum.Enum):
    ROUNDTRIP = "roundtrip"
    SUBMIT = "submit"
    POLL = "poll"

    def __str__(self) -> str:
        return self.value


class Secret:
    """A password that does not print itself: repr/str show a placeholder."""

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other._value == self._value


@dataclass(frozen=True)
class Endpoint:
    """One server the probe talks to, and how."""

    host: str
    port: int
    security: Security
    user: Optional[str] = None
    password: Optional[Secret] = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"{self.host}:{self.port} ({self.security})"


@dataclass(frozen=True)
class PollCriteria:
    """Poll mode: what mail somebody else sends must look like, and since when."""

    subject: Optional[str]
    sender: Optional[str]
    headers: Tuple[Tuple[str, str], ...]
    window: float  # seconds back from now

    def describe(self) -> str:
        parts = [f'subject "{self.subject}"' if self.subject else "", f'sender "{self.sender}"' if self.sender else ""]
        parts += [f'{name} "{value}"' for name, value in self.headers]
        return " and ".join(part for part in parts if part)


@dataclass(frozen=True)
class BounceWatch:
    """Where bounces of the probe arrive: the sender's mailbox and folder."""

    endpoint: Endpoint
    folder: str


@dataclass(frozen=True)
class Settings:
    mode: Mode
    smtp: Optional[Endpoint]  # None in poll mode
    imap: Optional[Endpoint]  # None in submit mode
    envelope_from: Optional[str]  # None in poll mode
    recipient: Optional[str]
    imap_folder: str
    helo_name: str
    # from --ca-file and --insecure; built on first use (the CLI builds it at
    # once when --ca-file is given, so a bad CA file is a usage error)
    tls_context: "TlsContext" = field(repr=False)
    insecure: bool
    # -w/-c: on the round trip (roundtrip mode), the whole SMTP session (submit
    # mode) or the age of the newest matching message (poll mode)
    warning: nagiosplugin.Range
    critical: nagiosplugin.Range
    # per-phase thresholds, keyed by perfdata label: (warning, critical)
    phase_thresholds: Dict[str, Tuple[nagiosplugin.Range, nagiosplugin.Range]]
    wait: float
    timeout: float
    verbose: int
    # receiver's verdicts (roundtrip mode): whose header to trust, what each means
    authserv_id: Optional[str] = None
    auth_policy: "AuthPolicy" = field(default_factory=lambda: AuthPolicy())
    # DNS drift checks (--dns-checks)
    dns_checks: bool = False
    nameserver: Optional[Tuple[str, int]] = None  # None: the system resolver
    dns_finding_state: str = "warning"
    poll: Optional[PollCriteria] = None  # poll mode only
    config_warnings: Tuple[str, ...] = ()  # e.g. a password file every user can read
    # memory across runs (roundtrip mode): None when --no-state
    state_file: Optional[str] = None
    lost_after: float = 86400.0  # seconds until an undelivered probe counts as lost
    escalate_after: Optional[int] = None  # consecutive not-OK round trips before CRITICAL
    # where else the probe may land (roundtrip mode)
    junk_folder: Optional[str] = None  # None: the \\Junk special-use folder, if any
    junk_detect: bool = True  # look in Junk at all
    junk_state: str = "warning"
    bounce: Optional[BounceWatch] = None
    # clean-up (roundtrip mode)
    cleanup: bool = False  # delete this run's message once read
    purge_days: Optional[float] = None  # delete probe messages older than this

    def secrets(self) -> Tuple[str, ...]:
        """Every secret text, as typed and as it travels in SMTP AUTH (base64
        of the password for LOGIN, of NUL user NUL password for PLAIN), for
        the output filter that masks them."""
        values = []
        for endpoint in (self.smtp, self.imap, self.bounce.endpoint if self.bounce else None):
            if endpoint is not None and endpoint.password is not None:
                password = endpoint.password.reveal()
                values.append(password)
                values.append(_b64(password))
                values.append(_b64(f"\0{endpoint.user}\0{password}"))
        return tuple(value for value in values if value)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")
