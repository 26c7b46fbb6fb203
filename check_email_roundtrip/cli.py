"""Command line: options -> one Settings object -> the check.  Nothing else.

Every option is defined in ``build_parser``.  Bad input ends with exit 3 and
one line (argparse's own exit 2 would read as CRITICAL); nothing prints a
traceback unless -vvv asks for diagnostics.
"""

import argparse
import logging
import os
import socket
import ssl
import sys
import traceback
from typing import List, Optional, Sequence, Tuple

import nagiosplugin

from . import __version__
from .check import CHECK_NAME, DEFAULT_PHASE_WARNING, PHASE_LABELS, build_check
from .memory import default_state_file
from .net import TlsContext
from .policy import AuthPolicy, parse_policy_rule
from .probe import TRACE, log, run_poll, run_roundtrip, run_submit
from .settings import BounceWatch, Endpoint, Mode, PollCriteria, Secret, Security, Settings

UNKNOWN = 3
SMTP_PASSWORD_ENV = "CHECK_EMAIL_ROUNDTRIP_SMTP_PASSWORD"
IMAP_PASSWORD_ENV = "CHECK_EMAIL_ROUNDTRIP_IMAP_PASSWORD"
BOUNCE_PASSWORD_ENV = "CHECK_EMAIL_ROUNDTRIP_BOUNCE_PASSWORD"

# Ports and the security each implies when only one of the two is given.
SMTP_DEFAULT_PORT = {Security.TLS: 465, Security.STARTTLS: 587, Security.NONE: 25}
IMAP_DEFAULT_PORT = {Security.TLS: 993, Security.STARTTLS: 143, Security.NONE: 143}
# With a port and no --*-security: the port's well-known protocol, and for
# any other port the protocol's usual one: STARTTLS for SMTP (submission on
# 2525 and the like), implicit TLS for IMAP (IMAPS is what clients use; 143
# is the STARTTLS port).
SMTP_IMPLICIT_TLS_PORTS = {465}
IMAP_STARTTLS_PORTS = {143}

DEFAULT_WARNING = "60"
DEFAULT_CRITICAL = "300"
# poll mode: a daily report, and an hour of slack
DEFAULT_WINDOW = 90000.0
# a probe not delivered after a day is lost, not late
DEFAULT_LOST_AFTER = 86400.0

# --wait defaults to this much past the end of the critical range, so that a
# message arriving just after the critical threshold is still reported with
# its round trip rather than as lost.
WAIT_PAST_CRITICAL = 5.0
# -t defaults to --wait plus this: room for the SMTP and IMAP sessions around
# the wait (each socket gives up 0.5 s before -t).
TIMEOUT_PAST_WAIT = 30.0


class UsageError(Exception):
    """Bad options: exit 3 with one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _range(text: str) -> nagiosplugin.Range:
    try:
        return nagiosplugin.Range(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid range {text!r}: {exc}") from None


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _choice_of(values, convert=str):
    """An argparse type for a fixed set of words, with argparse-like wording."""
    def check(text: str):
        if text not in values:
            raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(values)})")
        return convert(text)

    return check


def _choice(enum_type):
    return _choice_of(tuple(member.value for member in enum_type), enum_type)


def _policy_rule(text: str):
    try:
        return parse_policy_rule(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}: {text!r}") from None


def _nameserver(text: str):
    from .dnscheck import parse_nameserver

    try:
        return parse_nameserver(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected IP[:PORT] or [IPv6]:PORT: {text!r}") from None


def _header_criterion(text: str) -> Tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or " " in name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME:VALUE: {text!r}")
    return name.strip(), value.strip()


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1: {text!r}")
    return int(text)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {text!r}")
    return value


def _phase_threshold(text: str):
    label, sep, spec = text.partition("=")
    if not sep or label not in PHASE_LABELS:
        raise argparse.ArgumentTypeError(
            f"expected LABEL=RANGE with LABEL one of {', '.join(PHASE_LABELS)}: {text!r}")
    return label, _range(spec)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="check_email_roundtrip",
        description="Prove that email is submitted and delivered: submit a marked message over "
        "SMTP and find it again over IMAP, timing every phase (Nagios/Icinga plugin).",
        epilog=f"Passwords: from --smtp-password-file/--imap-password-file or the environment "
        f"variables {SMTP_PASSWORD_ENV} / {IMAP_PASSWORD_ENV}; never on the command line, where "
        f"ps would show them.  Exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
    )
    add = parser.add_argument
    add("--mode", type=_choice(Mode), metavar="{roundtrip,submit,poll}", default=Mode.ROUNDTRIP,
        help="roundtrip (default): submit, then wait for the message in IMAP; "
        "submit: the SMTP transaction only; poll: assert that mail somebody else sends arrived")
    servers = parser.add_argument_group("servers")
    add = servers.add_argument
    add("-H", "--hostname", metavar="HOST", help="host name of both servers (SMTP and IMAP)")
    add("--smtp-host", metavar="HOST", help="SMTP server (default: --hostname)")
    add("--smtp-port", type=_port, metavar="PORT", help="SMTP port (default: 465 for tls, 587 for starttls, 25 for none)")
    add("--smtp-security", type=_choice(Security), metavar="{tls,starttls,none}",
        help="tls (implicit), starttls or none (default: tls on port 465, else starttls). "
        "With starttls the probe stops if the server does not offer it; AUTH is never sent "
        "in cleartext unless 'none' is chosen")
    add("--imap-host", metavar="HOST", help="IMAP server (default: --hostname, else --smtp-host)")
    add("--imap-port", type=_port, metavar="PORT", help="IMAP port (default: 993 for tls, 143 for starttls/none)")
    add("--imap-security", type=_choice(Security), metavar="{tls,starttls,none}",
        help="tls (implicit), starttls or none (default: starttls on port 143, else tls)")
    add("--helo", dest="helo_name", metavar="NAME", help="name to send in EHLO (default: this machine's host name)")

    tls = parser.add_argument_group("TLS")
    tls.add_argument("--ca-file", metavar="PATH", help="PEM file of CA certificates to trust in addition to the system store")
    tls.add_argument("--insecure", action="store_true",
                     help="do not verify certificates or host names (said so in the output)")

    account = parser.add_argument_group("accounts and message")
    add = account.add_argument
    add("--smtp-user", metavar="USER", help="SMTP AUTH user (no AUTH when absent)")
    add("--smtp-password-file", metavar="PATH", help=f"file whose first line is the SMTP password (or set {SMTP_PASSWORD_ENV})")
    add("--imap-user", metavar="USER", help="IMAP user (default: --smtp-user)")
    add("--imap-password-file", metavar="PATH",
        help=f"file whose first line is the IMAP password (or set {IMAP_PASSWORD_ENV}; "
        "default: the SMTP password when the user is the same)")
    add("--from", dest="envelope_from", metavar="ADDRESS", help="sender address (default: --smtp-user if it is an address)")
    add("--to", dest="recipient", metavar="ADDRESS", help="recipient address (default: --from)")
    add("--imap-folder", default="INBOX", metavar="FOLDER", help="folder to look for the message in (default: INBOX)")

    limits = parser.add_argument_group("thresholds and time")
    add = limits.add_argument
    add("-w", "--warning", type=_range, metavar="RANGE",
        help=f"Nagios range for the round trip in seconds (submit mode: the whole SMTP session; poll mode: "
        f"the age of the newest match, no default); default {DEFAULT_WARNING}")
    add("-c", "--critical", type=_range, metavar="RANGE",
        help=f"Nagios range for the round trip in seconds (submit mode: the whole SMTP session; poll mode: "
        f"the age of the newest match, no default); default {DEFAULT_CRITICAL}")
    defaults = ", ".join(f"{label}={spec}" for label, spec in DEFAULT_PHASE_WARNING.items())
    add("--phase-warning", type=_phase_threshold, action="append", default=[], metavar="LABEL=RANGE",
        help=f"warning range for one phase, repeatable (defaults: {defaults})")
    add("--phase-critical", type=_phase_threshold, action="append", default=[], metavar="LABEL=RANGE",
        help="critical range for one phase, repeatable (default: none)")
    add("--wait", type=_positive_seconds, metavar="SECONDS",
        help=f"seconds to wait for the message to arrive (default: end of the critical range + {WAIT_PAST_CRITICAL:g})")
    add("-t", "--timeout", type=_positive_seconds, metavar="SECONDS",
        help=f"seconds for the whole run (default: --wait + {TIMEOUT_PAST_WAIT:g}); when reached the "
        "plugin exits UNKNOWN naming the stage")

    memory = parser.add_argument_group("memory across runs (roundtrip mode)")
    add = memory.add_argument
    add("--state-file", metavar="PATH",
        help="where to remember undelivered probes and slow streaks (default: "
        "$XDG_STATE_HOME or ~/.local/state, /check_email_roundtrip/<user>@<host>-<hash>.json)")
    add("--no-state", action="store_true", help="remember nothing across runs")
    add("--lost-after", type=_positive_seconds, default=DEFAULT_LOST_AFTER, metavar="SECONDS",
        help=f"an undelivered probe still missing after SECONDS counts as lost (default {DEFAULT_LOST_AFTER:g})")
    add("--escalate-after", type=_positive_int, metavar="N",
        help="CRITICAL when the round trip was not OK in N consecutive runs, this one slow (default: never)")

    elsewhere = parser.add_argument_group("Junk, bounces and clean-up (roundtrip mode)")
    add = elsewhere.add_argument
    add("--junk-folder", metavar="FOLDER",
        help="also look for the probe in FOLDER (default: the \\Junk special-use folder, if the server has one)")
    add("--no-junk", action="store_true", help="do not look in a Junk folder")
    add("--junk-state", type=_choice_of(("ok", "warning", "critical")), default="warning",
        metavar="{ok,warning,critical}", help="state when the probe was delivered to Junk (default: warning)")
    add("--bounce-folder", metavar="FOLDER",
        help="watch FOLDER of the sender's mailbox for a bounce of the probe: CRITICAL with its status at once")
    add("--bounce-user", metavar="USER", help="IMAP login of the sender's mailbox (default: --smtp-user)")
    add("--bounce-password-file", metavar="PATH",
        help=f"its password (or set {BOUNCE_PASSWORD_ENV}; default: the SMTP password)")
    add("--cleanup", action="store_true", help="delete this run's message once it was read (default: keep it)")
    add("--purge-older-than", type=_positive_seconds, metavar="DAYS",
        help="delete probe messages (marker in the Subject) older than DAYS from the folders the probe uses")

    poll = parser.add_argument_group("poll mode: mail somebody else sends")
    add = poll.add_argument
    add("--subject", metavar="TEXT", help="match messages whose Subject contains TEXT")
    add("--sender", metavar="TEXT", help="match messages whose From contains TEXT")
    add("--header", metavar="NAME:VALUE", type=_header_criterion, action="append",
        help="match messages with header NAME containing VALUE, repeatable")
    add("--window", type=_positive_seconds, metavar="SECONDS",
        help=f"look at messages received in the last SECONDS (default {DEFAULT_WINDOW:g}: a daily report and an hour)")

    verdicts = parser.add_argument_group("receiver's verdicts and DNS checks (roundtrip mode)")
    add = verdicts.add_argument
    add("--authserv-id", metavar="ID",
        help="trust only Authentication-Results headers with this authserv-id (default: the topmost header)")
    add("--auth-policy", type=_policy_rule, action="append", default=[], metavar="METHOD[:RESULT]=STATE",
        help="state for a non-pass verdict, repeatable; METHOD spf, dkim, dmarc, arc or header; STATE ok, "
        "warning, critical or ignore (defaults: dmarc:fail=critical, any other non-pass of spf, dkim, dmarc "
        "and a missing header: warning; arc:fail=warning, other arc: ignore)")
    add("--dns-checks", action="store_true",
        help="check the DKIM key, SPF record and DMARC record behind the verdicts in DNS")
    add("--nameserver", type=_nameserver, metavar="IP[:PORT]",
        help="resolver for --dns-checks (default: the system's)")
    add("--dns-finding-state", type=_choice_of(("ok", "warning", "critical")), default="warning",
        metavar="{ok,warning,critical}", help="state of each DNS finding (default: warning)")

    general = parser.add_argument_group("output")
    general.add_argument("-v", "--verbose", action="count", default=0,
                         help="-v details and timings, -vv configuration, -vvv protocol trace (passwords hidden)")
    general.add_argument("-V", "--version", action="version", version=f"check_email_roundtrip {__version__}")
    return parser


def _read_password(path: Optional[str], env_name: str, what: str, warnings: List[str]) -> Optional[Secret]:
    if path:
        try:
            if os.stat(path).st_mode & 0o004:
                # accepted, but said on every run until it is fixed
                warnings.append(f"{what} password file {path} is readable by every user (chmod o-r)")
            with open(path, encoding="utf-8") as handle:
                first_line = handle.readline().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read {what} password file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{what} password file {path} is not UTF-8 text") from None
        if not first_line:
            raise UsageError(f"{what} password file {path} is empty")
        return Secret(first_line)
    value = os.environ.get(env_name)
    return Secret(value) if value else None


def _login_password(user: str, smtp_user: Optional[str], smtp_password: Optional[Secret], what: str,
                    env_name: str, password_file: Optional[str], warnings: List[str]) -> Secret:
    """A second login's password: its own file or variable, else the SMTP
    password when it is the same user."""
    password = _read_password(password_file, env_name, what.upper() if what == "imap" else what, warnings)
    if password is None and user == smtp_user:
        password = smtp_password
    if password is None:
        raise UsageError(f"--{what}-user needs a password: --{what}-password-file or ${env_name}")
    return password


def _endpoint(host, port, security, default_ports, default_security, user, password) -> Endpoint:
    if security is None:
        security = default_security(port)
    if port is None:
        port = default_ports[security]
    return Endpoint(host=host, port=port, security=security, user=user, password=password)


def _tls_context(ca_file: Optional[str], insecure: bool) -> TlsContext:
    context = TlsContext(ca_file, insecure)
    if ca_file:  # load it now: a bad file is a usage error, not a failed probe
        try:
            context.get()
        except ssl.SSLError as exc:  # before OSError: it is one
            raise UsageError(f"cannot use --ca-file {ca_file}: no usable certificate in it ({exc.reason})") from None
        except OSError as exc:
            raise UsageError(f"cannot use --ca-file {ca_file}: {exc.strerror}") from None
    return context


def _critical_end(critical: nagiosplugin.Range, warning: nagiosplugin.Range) -> float:
    for candidate in (critical, warning):
        if not candidate.invert and candidate.end != float("inf"):
            return float(candidate.end)
    return 300.0


def parse_settings(argv: Optional[Sequence[str]] = None) -> Settings:
    """Options and environment -> Settings, or UsageError with one line."""
    args = build_parser().parse_args(argv)

    warnings: List[str] = []  # accepted, but worth a WARNING on every run
    smtp_password = _read_password(args.smtp_password_file, SMTP_PASSWORD_ENV, "SMTP", warnings)
    smtp = envelope_from = recipient = None
    if args.mode in (Mode.SUBMIT, Mode.ROUNDTRIP):
        smtp_host = args.smtp_host or args.hostname
        if not smtp_host:
            raise UsageError("no SMTP server: give -H/--hostname or --smtp-host")
        if args.smtp_user and smtp_password is None:
            raise UsageError(f"--smtp-user needs a password: --smtp-password-file or ${SMTP_PASSWORD_ENV}")
        smtp = _endpoint(smtp_host, args.smtp_port, args.smtp_security, SMTP_DEFAULT_PORT,
                         lambda port: Security.TLS if port in SMTP_IMPLICIT_TLS_PORTS else Security.STARTTLS,
                         args.smtp_user, smtp_password)
        envelope_from = args.envelope_from or (args.smtp_user if args.smtp_user and "@" in args.smtp_user else None)
        if not envelope_from:
            raise UsageError("no sender: give --from (or an --smtp-user that is an address)")
        recipient = args.recipient or envelope_from

    imap = None
    if args.mode in (Mode.ROUNDTRIP, Mode.POLL):
        imap_host = args.imap_host or args.hostname or args.smtp_host
        if not imap_host:
            raise UsageError("no IMAP server: give -H/--hostname or --imap-host")
        imap_user = args.imap_user or args.smtp_user
        if not imap_user:
            raise UsageError(f"{args.mode} mode needs an IMAP login: give --imap-user (or --smtp-user)")
        imap_password = _login_password(imap_user, args.smtp_user, smtp_password, "imap", IMAP_PASSWORD_ENV,
                                        args.imap_password_file, warnings)
        imap = _endpoint(imap_host, args.imap_port, args.imap_security, IMAP_DEFAULT_PORT,
                         lambda port: Security.STARTTLS if port in IMAP_STARTTLS_PORTS else Security.TLS,
                         imap_user, imap_password)

    criteria = (args.subject, args.sender, args.header)
    if args.mode is Mode.POLL and not any(criteria):
        raise UsageError("poll mode needs at least one of --subject, --sender, --header")
    if args.mode is not Mode.POLL and any(criteria + (args.window,)):
        raise UsageError("--subject, --sender, --header and --window are for --mode poll")
    for value in (args.subject, args.sender) + tuple(part for pair in args.header or () for part in pair):
        if value is not None and not value.isascii():
            raise UsageError(f"poll criteria must be ASCII: {value!r}")

    phase_thresholds = {label: [_range(spec), _range("")] for label, spec in DEFAULT_PHASE_WARNING.items()}
    for label, spec in args.phase_warning:
        phase_thresholds.setdefault(label, [_range(""), _range("")])[0] = spec
    for label, spec in args.phase_critical:
        phase_thresholds.setdefault(label, [_range(""), _range("")])[1] = spec

    if args.mode is not Mode.ROUNDTRIP and (args.dns_checks or args.authserv_id or args.auth_policy):
        raise UsageError("--dns-checks, --authserv-id and --auth-policy need --mode roundtrip")
    if args.nameserver and not args.dns_checks:
        raise UsageError("--nameserver is used by --dns-checks only")

    bounce = None
    if args.bounce_folder:
        bounce_user = args.bounce_user or args.smtp_user
        if args.mode is not Mode.ROUNDTRIP or not bounce_user:
            raise UsageError("--bounce-folder needs --mode roundtrip and a login: --bounce-user (or --smtp-user)")
        bounce_password = _login_password(bounce_user, args.smtp_user, smtp_password, "bounce", BOUNCE_PASSWORD_ENV,
                                          args.bounce_password_file, warnings)
        bounce = BounceWatch(Endpoint(imap.host, imap.port, imap.security, bounce_user, bounce_password),
                             args.bounce_folder)
    roundtrip_only = (args.junk_folder, args.no_junk, args.cleanup, args.purge_older_than, args.bounce_user)
    if args.mode is not Mode.ROUNDTRIP and any(option not in (None, False) for option in roundtrip_only):
        raise UsageError("--junk-folder, --no-junk, --cleanup, --purge-older-than and --bounce-* need --mode roundtrip")

    state_file = None
    if args.mode is Mode.ROUNDTRIP and not args.no_state:
        state_file = args.state_file or default_state_file(imap.user, imap.host, args.imap_folder)
    elif args.state_file or args.escalate_after:
        raise UsageError("--state-file and --escalate-after need --mode roundtrip (and no --no-state)")

    if args.mode is Mode.POLL:
        # thresholds are on the age of the newest match: none unless given;
        # "nothing in the window" is CRITICAL on its own
        warning = args.warning if args.warning is not None else _range("")
        critical = args.critical if args.critical is not None else _range("")
        wait = 0.0
    else:
        warning = args.warning if args.warning is not None else _range(DEFAULT_WARNING)
        critical = args.critical if args.critical is not None else _range(DEFAULT_CRITICAL)
        wait = args.wait if args.wait is not None else _critical_end(critical, warning) + WAIT_PAST_CRITICAL
    timeout = args.timeout if args.timeout is not None else wait + TIMEOUT_PAST_WAIT
    return Settings(
        mode=args.mode,
        smtp=smtp,
        imap=imap,
        envelope_from=envelope_from,
        recipient=recipient,
        imap_folder=args.imap_folder,
        helo_name=args.helo_name or socket.gethostname(),
        tls_context=_tls_context(args.ca_file, args.insecure),
        insecure=args.insecure,
        warning=warning,
        critical=critical,
        phase_thresholds={label: tuple(pair) for label, pair in phase_thresholds.items()},
        wait=wait,
        timeout=timeout,
        verbose=min(args.verbose, 3),
        authserv_id=args.authserv_id,
        auth_policy=AuthPolicy(args.auth_policy),
        dns_checks=args.dns_checks,
        nameserver=args.nameserver,
        dns_finding_state=args.dns_finding_state,
        state_file=state_file,
        junk_folder=args.junk_folder,
        junk_detect=not args.no_junk,
        junk_state=args.junk_state,
        bounce=bounce,
        cleanup=args.cleanup,
        purge_days=args.purge_older_than,
        lost_after=args.lost_after,
        escalate_after=args.escalate_after,
        config_warnings=tuple(warnings),
        poll=PollCriteria(args.subject, args.sender, tuple(args.header or ()), args.window or DEFAULT_WINDOW)
        if args.mode is Mode.POLL else None,
    )


class MaskedOutput:
    """stdout, with every secret replaced: the one place all output passes.

    The protocol trace already hides AUTH and LOGIN, but a server may echo
    what it was sent in an error; whatever path a secret takes (status line,
    long output, log lines, a traceback at -vvv), it is masked here.
    """

    def __init__(self, stream, secrets: Sequence[str]):
        self.stream = stream
        # longest first, so a secret containing another is masked whole
        self.secrets = sorted((secret for secret in secrets if secret), key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "********")
        return text

    def write(self, text: str) -> int:
        return self.stream.write(self.mask(text))

    def flush(self) -> None:
        self.stream.flush()


def _configure_output(settings: Settings) -> None:
    """Route our log lines into nagiosplugin's output, at the level -v asks for."""
    runtime = nagiosplugin.Runtime()
    runtime.verbose = settings.verbose
    level = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}.get(settings.verbose, TRACE)
    runtime.logchan.setLevel(level)
    runtime.stdout = sys.stdout = MaskedOutput(sys.stdout, settings.secrets())
    log.setLevel(level)
    log.propagate = False
    log.addHandler(runtime.logchan)


def _print_unknown(text: str) -> None:
    print(f"{CHECK_NAME} UNKNOWN - {' '.join(text.split())}")


def main(argv: Optional[List[str]] = None) -> None:
    verbose = 0
    try:
        settings = parse_settings(argv)
        verbose = settings.verbose
        _configure_output(settings)
        log.debug("settings: %r", settings)
        run = {Mode.ROUNDTRIP: run_roundtrip, Mode.SUBMIT: run_submit, Mode.POLL: run_poll}[settings.mode]
        build_check(settings, run).main()  # prints and exits; -t is our own Deadline
    except UsageError as exc:
        _print_unknown(f"{exc} (see --help)")
        sys.exit(UNKNOWN)
    except KeyboardInterrupt:
        _print_unknown("interrupted")
        sys.exit(UNKNOWN)
    except SystemExit:
        raise
    except BaseException as exc:  # a bug of ours, or -t striking outside the probe
        _print_unknown(f"{exc.__class__.__name__}: {exc}" if not str(exc).startswith("timeout") else str(exc))
        if verbose >= 3:
            print(traceback.format_exc().rstrip())
        sys.exit(UNKNOWN)
