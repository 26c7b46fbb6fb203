"""Every command-line option, as data.

``OPTION_GROUPS`` is the table: each :class:`Option` has its flags, its kind,
how its text becomes a value, and its help.  The SMTP and IMAP options are one
family written once (:data:`SERVER_FAMILIES`) and generated per protocol.
``argv.build_parser`` turns the table into argparse; the Icinga 2 template
generator reads the same table.  Converters raise ``argparse.ArgumentTypeError``
with the reason in the user's terms.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from .converters import (
    cert_days,
    choice,
    days,
    header_criterion,
    nagios_range,
    nameserver,
    phase_threshold,
    policy_rule,
    port,
    seconds,
    textfile_path,
    whole_number,
)
from .credentials import Mechanism
from .deadline import DEFAULT_STEP_TIMEOUT
from .providers import Provider
from .record import Record
from .settings import Level, Mode, OutputFormat, Security

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Any, Callable

SMTP_PASSWORD_ENV = "CHECK_EMAIL_ROUNDTRIP_SMTP_PASSWORD"
IMAP_PASSWORD_ENV = "CHECK_EMAIL_ROUNDTRIP_IMAP_PASSWORD"
BOUNCE_PASSWORD_ENV = "CHECK_EMAIL_ROUNDTRIP_BOUNCE_PASSWORD"
OAUTH_TOKEN_ENV = "CHECK_EMAIL_ROUNDTRIP_OAUTH_TOKEN"
OAUTH_CLIENT_SECRET_ENV = "CHECK_EMAIL_ROUNDTRIP_OAUTH_CLIENT_SECRET"
# Every variable that may carry a secret, for the Icinga template's env.
SECRET_ENVS = (
    SMTP_PASSWORD_ENV,
    IMAP_PASSWORD_ENV,
    BOUNCE_PASSWORD_ENV,
    OAUTH_TOKEN_ENV,
    OAUTH_CLIENT_SECRET_ENV,
)

DEFAULT_WARNING = "60"
DEFAULT_CRITICAL = "300"
DEFAULT_WINDOW = 90000.0  # poll mode: a daily report, and an hour of slack
DEFAULT_LOST_AFTER = 86400.0  # a probe not delivered after a day is lost, not late
# --wait defaults to this much past the end of the critical range, so that a
# message arriving just after the critical threshold is still reported with
# its round trip rather than as lost.
WAIT_PAST_CRITICAL = 5.0
# -t defaults to --wait plus this: room for the SMTP and IMAP sessions around
# the wait (each socket gives up 0.5 s before -t).
TIMEOUT_PAST_WAIT = 30.0


class TlsVersion(enum.Enum):
    V1_2 = "1.2"
    V1_3 = "1.3"

    def __str__(self) -> str:
        return self.value


class Kind(enum.Enum):
    VALUE = "value"  # --option VALUE
    FLAG = "flag"  # --option
    LIST = "list"  # --option VALUE, repeatable
    COUNT = "count"  # -v, -vv, -vvv


class Option(Record):
    flags: tuple[str, ...]
    help: str
    kind: Kind = Kind.VALUE
    convert: Callable[[str], Any] | None = None
    metavar: str | None = None
    default: Any = None
    dest: str | None = None
    env: str | None = None  # an environment variable that may give the value instead

    @property
    def long(self) -> str:
        return next(flag for flag in self.flags if flag.startswith("--"))

    @property
    def name(self) -> str:
        return self.dest or self.long[2:].replace("-", "_")


# -- the SMTP and IMAP family, written once ---------------------------------------------------------
class ServerFamily(Record):
    name: str  # "smtp": the option prefix
    title: str  # "SMTP"
    default_ports: Mapping[Security, int]
    # the security a port implies when only the port is given
    security_for_port: Callable[[int], Security]
    host_default: str  # what --<name>-host defaults to, in words
    security_default: str  # likewise for --<name>-security
    user_help: str
    password_env: str
    password_default: str = ""

    def ports_in_words(self) -> str:
        return ", ".join(f"{port} for {security}" for security, port in self.default_ports.items())

    def options(self) -> list[Option]:
        n, t = self.name, self.title
        return [
            Option((f"--{n}-host",), f"{t} server (default: {self.host_default})", metavar="HOST"),
            Option(
                (f"--{n}-port",), f"{t} port (default: {self.ports_in_words()})", convert=port, metavar="PORT"
            ),
            Option(
                (f"--{n}-security",),
                f"tls (implicit), starttls or none (default: {self.security_default})",
                convert=choice(Security),
                metavar="{tls,starttls,none}",
            ),
            Option((f"--{n}-user",), self.user_help, metavar="USER"),
            Option(
                (f"--{n}-password-file",),
                f"file whose first line is the {t} password (or set "
                f"{self.password_env}{self.password_default})",
                metavar="PATH",
                env=self.password_env,
            ),
            Option(
                (f"--{n}-auth",),
                f"how the {t} login proves itself: password, or an OAuth2 access token with xoauth2 "
                "(Microsoft 365, Google) or oauthbearer (RFC 7628) (default: --auth, else password)",
                convert=choice(Mechanism),
                metavar="{password,xoauth2,oauthbearer}",
            ),
        ]


SMTP_FAMILY = ServerFamily(
    "smtp",
    "SMTP",
    {Security.TLS: 465, Security.STARTTLS: 587, Security.NONE: 25},
    # the port's well-known protocol; any other port: submission is STARTTLS as a rule
    lambda number: Security.TLS if number == 465 else Security.STARTTLS,
    "--hostname",
    "tls on port 465, else starttls. With starttls the probe stops if the server does not "
    "offer it; AUTH is never sent in cleartext unless 'none' is chosen",
    "SMTP AUTH user (no AUTH when absent)",
    SMTP_PASSWORD_ENV,
)
IMAP_FAMILY = ServerFamily(
    "imap",
    "IMAP",
    {Security.TLS: 993, Security.STARTTLS: 143, Security.NONE: 143},
    # 143 is the STARTTLS port; implicit TLS is what clients use elsewhere
    lambda number: Security.STARTTLS if number == 143 else Security.TLS,
    "--hostname, else --smtp-host",
    "starttls on port 143, else tls",
    "IMAP user (default: --smtp-user)",
    IMAP_PASSWORD_ENV,
    "; default: the SMTP password when the user is the same",
)
SERVER_FAMILIES = (SMTP_FAMILY, IMAP_FAMILY)


class Group(Record):
    title: str | None
    options: tuple[Option, ...]


def _groups() -> tuple[Group, ...]:
    roundtrip_range = (
        "Nagios range for the round trip in seconds (submit mode: the whole SMTP session; poll "
        "mode: the age of the newest match, no default); default "
    )
    from .check import DEFAULT_PHASE_WARNING

    phase_defaults = ", ".join(f"{label}={spec}" for label, spec in DEFAULT_PHASE_WARNING.items())
    return (
        Group(
            None,
            (
                Option(
                    ("--mode",),
                    "roundtrip (default): submit, then wait for the message in IMAP; submit: the SMTP "
                    "transaction only; poll: assert that mail somebody else sends arrived",
                    convert=choice(Mode),
                    metavar="{roundtrip,submit,poll}",
                    default=Mode.ROUNDTRIP,
                ),
                Option(("-H", "--hostname"), "host name of both servers (SMTP and IMAP)", metavar="HOST"),
                Option(
                    ("--helo",),
                    "name to send in EHLO (default: this machine's host name)",
                    metavar="NAME",
                    dest="helo_name",
                ),
            ),
        ),
        *(Group(f"{family.title} server", tuple(family.options())) for family in SERVER_FAMILIES),
        Group(
            "TLS and the network",
            (
                Option(
                    ("--ca-file",),
                    "PEM file of CA certificates to trust in addition to the system store",
                    metavar="PATH",
                ),
                Option(
                    ("--insecure",),
                    "do not verify certificates or host names (said so in the output; certificate "
                    "expiry is still read and judged)",
                    kind=Kind.FLAG,
                ),
                Option(
                    ("--cert-days",),
                    "WARNING when a server's certificate has fewer than WARN days left, CRITICAL under "
                    "CRIT (default 21,7; CRIT left out: once expired; 0: report the days, judge nothing)",
                    convert=cert_days,
                    metavar="WARN[,CRIT]",
                    default="21,7",
                ),
                Option(
                    ("--tls-min",),
                    "oldest TLS version that is fine: a server negotiating an older one is a WARNING "
                    "(default 1.2)",
                    convert=choice(TlsVersion),
                    metavar="{1.2,1.3}",
                    default=TlsVersion.V1_2,
                ),
                Option(("-4", "--use-ipv4"), "connect over IPv4 only", kind=Kind.FLAG),
                Option(("-6", "--use-ipv6"), "connect over IPv6 only", kind=Kind.FLAG),
            ),
        ),
        Group(
            "OAuth2 sign-in (with --auth, --smtp-auth or --imap-auth xoauth2/oauthbearer)",
            (
                Option(
                    ("--auth",),
                    "sign-in mechanism of both logins: password (default), xoauth2 or oauthbearer",
                    convert=choice(Mechanism),
                    metavar="{password,xoauth2,oauthbearer}",
                ),
                Option(
                    ("--oauth-token-file",),
                    f"file whose first line is the access token, refreshed by something else (or set "
                    f"{OAUTH_TOKEN_ENV})",
                    metavar="PATH",
                    env=OAUTH_TOKEN_ENV,
                ),
                Option(
                    ("--oauth-token-command",),
                    "command that prints an access token on its first line; split like a shell's words, "
                    "run without a shell, inside -t",
                    metavar="CMD",
                ),
                Option(
                    ("--oauth-provider",),
                    "fill in the token URL and scope: microsoft (with --oauth-tenant) or google",
                    convert=choice(Provider),
                    metavar="{microsoft,google}",
                ),
                Option(
                    ("--oauth-tenant",),
                    "Microsoft Entra tenant (id or domain) for --oauth-provider microsoft",
                    metavar="TENANT",
                ),
                Option(
                    ("--oauth-token-url",),
                    "token endpoint of the built-in grant (https only): client credentials, or refresh "
                    "token with --oauth-refresh-token-file; the token is cached in the state directory",
                    metavar="URL",
                ),
                Option(
                    ("--oauth-client-id",), "client (application) id for the token endpoint", metavar="ID"
                ),
                Option(
                    ("--oauth-client-secret-file",),
                    f"file whose first line is the client secret (or set {OAUTH_CLIENT_SECRET_ENV})",
                    metavar="PATH",
                    env=OAUTH_CLIENT_SECRET_ENV,
                ),
                Option(
                    ("--oauth-scope",),
                    "scope to ask for (default: the provider's, else none)",
                    metavar="SCOPE",
                ),
                Option(
                    ("--oauth-refresh-token-file",),
                    "file holding the refresh token (delegated access, Google); a new one the provider "
                    "sends back is written to it",
                    metavar="PATH",
                ),
            ),
        ),
        Group(
            "message",
            (
                Option(
                    ("--from",),
                    "sender address (default: --smtp-user if it is an address)",
                    metavar="ADDRESS",
                    dest="envelope_from",
                ),
                Option(("--to",), "recipient address (default: --from)", metavar="ADDRESS", dest="recipient"),
                Option(
                    ("--imap-folder",),
                    "folder to look for the message in (default: INBOX)",
                    metavar="FOLDER",
                    default="INBOX",
                ),
            ),
        ),
        Group(
            "thresholds and time",
            (
                Option(
                    ("-w", "--warning"),
                    roundtrip_range + DEFAULT_WARNING,
                    convert=nagios_range,
                    metavar="RANGE",
                ),
                Option(
                    ("-c", "--critical"),
                    roundtrip_range + DEFAULT_CRITICAL,
                    convert=nagios_range,
                    metavar="RANGE",
                ),
                Option(
                    ("--phase-warning",),
                    f"warning range for one phase, repeatable (defaults: {phase_defaults})",
                    kind=Kind.LIST,
                    convert=phase_threshold,
                    metavar="LABEL=RANGE",
                    default=[],
                ),
                Option(
                    ("--phase-critical",),
                    "critical range for one phase, repeatable (default: none)",
                    kind=Kind.LIST,
                    convert=phase_threshold,
                    metavar="LABEL=RANGE",
                    default=[],
                ),
                Option(
                    ("--wait",),
                    "seconds to wait for the message to arrive (default: end of the critical range "
                    f"+ {WAIT_PAST_CRITICAL:g})",
                    convert=seconds,
                    metavar="SECONDS",
                ),
                Option(
                    ("-t", "--timeout"),
                    f"seconds for the whole run (default: --wait + {TIMEOUT_PAST_WAIT:g}); when "
                    "reached the plugin exits UNKNOWN naming the stage",
                    convert=seconds,
                    metavar="SECONDS",
                ),
                Option(
                    ("--no-wait",),
                    "roundtrip mode: send this run's probe and judge the probes of earlier runs (their "
                    "round trip from the server's delivery time), instead of waiting: for schedulers "
                    "that kill a check after 10-60 s",
                    kind=Kind.FLAG,
                ),
                Option(
                    ("--step-timeout",),
                    f"seconds for each network step (resolve, connect, TLS handshake, one command and its "
                    f"reply, the token request), never more than what is left of -t (default "
                    f"{DEFAULT_STEP_TIMEOUT:g})",
                    convert=seconds,
                    metavar="SECONDS",
                    default=DEFAULT_STEP_TIMEOUT,
                ),
            ),
        ),
        Group(
            "memory across runs (roundtrip mode)",
            (
                Option(
                    ("--state-file",),
                    "where to remember undelivered probes and slow streaks (default: "
                    "$XDG_STATE_HOME or ~/.local/state, /check_email_roundtrip/<user>@<host>-<hash>.json)",
                    metavar="PATH",
                ),
                Option(("--no-state",), "remember nothing across runs", kind=Kind.FLAG),
                Option(
                    ("--lost-after",),
                    "an undelivered probe still missing after SECONDS counts as lost "
                    f"(default {DEFAULT_LOST_AFTER:g})",
                    convert=seconds,
                    metavar="SECONDS",
                    default=DEFAULT_LOST_AFTER,
                ),
                Option(
                    ("--escalate-after",),
                    "CRITICAL when the round trip was not OK in N consecutive runs, this "
                    "one slow (default: never)",
                    convert=whole_number,
                    metavar="N",
                ),
            ),
        ),
        Group(
            "Junk, bounces and clean-up (roundtrip mode)",
            (
                Option(
                    ("--junk-folder",),
                    "also look for the probe in FOLDER (default: the \\Junk special-use "
                    "folder, if the server has one)",
                    metavar="FOLDER",
                ),
                Option(("--no-junk",), "do not look in a Junk folder", kind=Kind.FLAG),
                Option(
                    ("--junk-state",),
                    "state when the probe was delivered to Junk (default: warning)",
                    convert=choice(Level),
                    metavar="{ok,warning,critical}",
                    default=Level.WARNING,
                ),
                Option(
                    ("--bounce-folder",),
                    "watch FOLDER of the sender's mailbox for a bounce of the probe: "
                    "CRITICAL with its status at once",
                    metavar="FOLDER",
                ),
                Option(
                    ("--bounce-user",),
                    "IMAP login of the sender's mailbox (default: --smtp-user)",
                    metavar="USER",
                ),
                Option(
                    ("--bounce-password-file",),
                    f"its password (or set {BOUNCE_PASSWORD_ENV}; default: the SMTP password)",
                    metavar="PATH",
                    env=BOUNCE_PASSWORD_ENV,
                ),
                Option(
                    ("--cleanup",),
                    "delete this run's message once it was read (default: keep it)",
                    kind=Kind.FLAG,
                ),
                Option(
                    ("--purge-older-than",),
                    "delete probe messages (marker in the Subject) older than DAYS from "
                    "the folders the probe uses",
                    convert=days,
                    metavar="DAYS",
                ),
            ),
        ),
        Group(
            "poll mode: mail somebody else sends",
            (
                Option(("--subject",), "match messages whose Subject contains TEXT", metavar="TEXT"),
                Option(("--sender",), "match messages whose From contains TEXT", metavar="TEXT"),
                Option(
                    ("--header",),
                    "match messages with header NAME containing VALUE, repeatable",
                    kind=Kind.LIST,
                    convert=header_criterion,
                    metavar="NAME:VALUE",
                ),
                Option(
                    ("--window",),
                    f"look at messages received in the last SECONDS (default {DEFAULT_WINDOW:g}: a "
                    "daily report and an hour)",
                    convert=seconds,
                    metavar="SECONDS",
                ),
            ),
        ),
        Group(
            "receiver's verdicts and DNS checks (roundtrip mode)",
            (
                Option(
                    ("--authserv-id",),
                    "trust only Authentication-Results headers with this authserv-id "
                    "(default: the topmost header)",
                    metavar="ID",
                ),
                Option(
                    ("--auth-policy",),
                    "state for a non-pass verdict, repeatable; METHOD spf, dkim, dmarc, arc "
                    "or header; STATE ok, warning, critical or ignore (defaults: dmarc:fail=critical, "
                    "any other non-pass of spf, dkim, dmarc and a missing header: warning; "
                    "arc:fail=warning, other arc: ignore)",
                    kind=Kind.LIST,
                    convert=policy_rule,
                    metavar="METHOD[:RESULT]=STATE",
                    default=[],
                ),
                Option(
                    ("--dns-checks",),
                    "check the DKIM key, SPF record and DMARC record behind the verdicts in DNS",
                    kind=Kind.FLAG,
                ),
                Option(
                    ("--nameserver",),
                    "resolver for --dns-checks (default: the system's)",
                    convert=nameserver,
                    metavar="IP[:PORT]",
                ),
                Option(
                    ("--dns-finding-state",),
                    "state of each DNS finding (default: warning)",
                    convert=choice(Level),
                    metavar="{ok,warning,critical}",
                    default=Level.WARNING,
                ),
            ),
        ),
        Group(
            "output",
            (
                Option(
                    ("-v", "--verbose"),
                    "-v details and timings, -vv configuration, -vvv protocol trace (passwords hidden)",
                    kind=Kind.COUNT,
                    default=0,
                ),
                Option(
                    ("--output",),
                    "text (default): the Nagios plugin output; json: one JSON object on one line (schema "
                    "version 1, see the README), same exit code",
                    convert=choice(OutputFormat),
                    metavar="{text,json}",
                    default=OutputFormat.TEXT,
                ),
                Option(
                    ("--prometheus-textfile",),
                    "also write the run's metrics to PATH (ending in .prom) for node_exporter's textfile "
                    "collector, atomically; one file per check",
                    convert=textfile_path,
                    metavar="PATH",
                ),
            ),
        ),
    )


OPTION_GROUPS: tuple[Group, ...] = _groups()


def all_options() -> list[Option]:
    return [option for group in OPTION_GROUPS for option in group.options]


class UsageError(Exception):
    """Bad options: exit 3 with one line."""
