"""The one settings object the CLI builds and every other layer reads.

Nothing below the CLI looks at ``argparse`` or the environment: the probe and
the nagiosplugin layer get a :class:`Settings` (or the part of it they need).
Everything here is frozen: a run cannot change its own configuration.

Each type is a :class:`~.record.Record`, a named tuple (record.py says why
not ``typing.NamedTuple`` itself).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import nagiosplugin

from .credentials import Login
from .policy import AuthPolicy
from .record import Record


class TlsConfig(Record):
    """What the user asked for: whom to trust, or not to verify at all, and
    the oldest TLS version that is fine (older is a WARNING, not a refusal)."""

    ca_file: str | None = None
    insecure: bool = False
    minimum: str = "1.2"  # --tls-min


class CertDays(Record):
    """--cert-days: days of certificate validity left below which the run is
    WARNING / CRITICAL; ``None`` (--cert-days 0): reported, never a state."""

    warning: float
    critical: float


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


class OutputFormat(enum.Enum):
    """What goes to stdout: the Nagios plugin text, or one JSON object (render.py)."""

    TEXT = "text"
    JSON = "json"

    def __str__(self) -> str:
        return self.value


class Level(enum.Enum):
    """A state the user may choose for a finding (--junk-state, ...)."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"

    def __str__(self) -> str:
        return self.value


class Endpoint(Record):
    """One server the probe talks to, how, and as whom."""

    host: str
    port: int
    security: Security
    login: Login | None = None

    @property
    def user(self) -> str | None:
        return self.login.user if self.login else None

    def __str__(self) -> str:
        return f"{self.host}:{self.port} ({self.security})"


class PollCriteria(Record):
    """Poll mode: what mail somebody else sends must look like, and since when."""

    subject: str | None
    sender: str | None
    headers: tuple[tuple[str, str], ...]
    window: float  # seconds back from now

    def describe(self) -> str:
        parts = [
            f'subject "{self.subject}"' if self.subject else "",
            f'sender "{self.sender}"' if self.sender else "",
        ]
        parts += [f'{name} "{value}"' for name, value in self.headers]
        return " and ".join(part for part in parts if part)


class BounceWatch(Record):
    """Where bounces of the probe arrive: the sender's mailbox and folder."""

    endpoint: Endpoint
    folder: str


class Thresholds(Record):
    """-w/-c on the mode's headline figure, and the per-phase budgets."""

    # on the round trip (roundtrip mode), the whole SMTP session (submit mode)
    # or the age of the newest matching message (poll mode)
    warning: nagiosplugin.Range
    critical: nagiosplugin.Range
    # per-phase, keyed by perfdata label: (warning, critical)
    phases: Mapping[str, tuple[nagiosplugin.Range, nagiosplugin.Range]]
    cert_days: CertDays | None = CertDays(21.0, 7.0)


class Memory(Record):
    """Memory across runs (roundtrip mode)."""

    state_file: str | None = None  # None: --no-state
    lost_after: float = 86400.0  # seconds until an undelivered probe counts as lost
    escalate_after: int | None = None  # consecutive not-OK round trips before CRITICAL


class Elsewhere(Record):
    """Where else the probe may land, and clean-up (roundtrip mode)."""

    junk_folder: str | None = None  # None: the \\Junk special-use folder, if any
    junk_detect: bool = True  # look in Junk at all
    junk_state: Level = Level.WARNING
    bounce: BounceWatch | None = None
    cleanup: bool = False  # delete this run's message once read
    purge_days: float | None = None  # delete probe messages older than this

    @property
    def writable(self) -> bool:
        """Deleting anything needs the folders opened read-write (SELECT)."""
        return self.cleanup or self.purge_days is not None


class Verdicts(Record):
    """The receiver's verdicts and the DNS behind them (roundtrip mode)."""

    authserv_id: str | None = None
    policy: AuthPolicy = AuthPolicy()
    dns_checks: bool = False
    nameserver: tuple[str, int] | None = None  # None: the system resolver
    dns_finding_state: Level = Level.WARNING


class Outputs(Record):
    """Where the run's result goes besides the exit code."""

    format: OutputFormat = OutputFormat.TEXT  # --output
    prometheus_textfile: str | None = None  # also written there (textfile.py)


class Settings(Record):
    mode: Mode
    smtp: Endpoint | None  # None in poll mode
    imap: Endpoint | None  # None in submit mode
    envelope_from: str | None  # None in poll mode
    recipient: str | None
    imap_folder: str
    helo_name: str
    tls: TlsConfig
    thresholds: Thresholds
    wait: float
    timeout: float
    verbose: int
    step_timeout: float = 30.0  # each network step: resolve, connect, one command and its reply
    address_family: int = 0  # socket.AF_INET (-4), AF_INET6 (-6), or AF_UNSPEC (0): either
    no_wait: bool = False  # roundtrip mode: send now, judge earlier runs' probes
    verdicts: Verdicts = Verdicts()
    memory: Memory = Memory()
    elsewhere: Elsewhere = Elsewhere()
    poll: PollCriteria | None = None  # poll mode only
    config_warnings: tuple[str, ...] = ()  # e.g. a password file every user can read
    outputs: Outputs = Outputs()

    def logins(self) -> tuple[Login, ...]:
        endpoints = (self.smtp, self.imap, self.elsewhere.bounce.endpoint if self.elsewhere.bounce else None)
        return tuple(endpoint.login for endpoint in endpoints if endpoint is not None and endpoint.login)

    def secrets(self) -> tuple[str, ...]:
        """Every secret text in every form it travels in, for the output filter."""
        return tuple(form for login in self.logins() for form in login.secret_forms() if form)
