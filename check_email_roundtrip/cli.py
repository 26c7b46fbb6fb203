"""Command line: options -> one Settings object -> the check.  Nothing else.

The options themselves are data (``options.py``); here they become
:class:`~.settings.Settings`, one concern per function.  Bad input ends with
exit 3 and one line in the user's terms (argparse's own exit 2 would read as
CRITICAL); nothing prints a traceback unless -vvv asks for diagnostics.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence

from .argv import build_parser
from .converters import nagios_range
from .credentials import Login, Mechanism, Password
from .errors import Stopped
from .logins import login_for, read_password, token_source
from .mask import mask, register_secret
from .memory import default_state_file, state_directory
from .options import (
    BOUNCE_PASSWORD_ENV,
    DEFAULT_CRITICAL,
    DEFAULT_WARNING,
    DEFAULT_WINDOW,
    IMAP_FAMILY,
    IMAP_PASSWORD_ENV,
    SMTP_FAMILY,
    SMTP_PASSWORD_ENV,
    TIMEOUT_PAST_WAIT,
    WAIT_PAST_CRITICAL,
    ServerFamily,
    UsageError,
)
from .output import LOGGER, configure_logging, log_lines
from .policy import AuthPolicy
from .render import RENDERERS, SERVICE, dump_json, json_document, one_line, requested_format
from .settings import (
    BounceWatch,
    CertDays,
    Elsewhere,
    Endpoint,
    Memory,
    Mode,
    Outputs,
    PollCriteria,
    Security,
    Settings,
    Thresholds,
    TlsConfig,
    Verdicts,
)
from .tls import load_ca_file

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from .credentials import TokenSource

UNKNOWN = 3
__all__ = [
    "UsageError",
    "build_parser",
    "main",
    "parse_settings",
    "SMTP_PASSWORD_ENV",
    "IMAP_PASSWORD_ENV",
    "BOUNCE_PASSWORD_ENV",
]


def _range(spec: str) -> Any:
    return nagios_range(spec)


def _no_range() -> Any:
    """No threshold: never alerts, prints as an empty perfdata field."""
    import nagiosplugin

    return nagiosplugin.Range("")


class _Secrets:
    """What the options and the environment say about signing in, read once."""

    def __init__(self, smtp_password: Password | None, token: TokenSource | None, warnings: list[str]):
        self.smtp_password = smtp_password
        self.token = token
        self.warnings = warnings  # accepted, but worth a WARNING on every run

    def login(
        self, option: str, args: argparse.Namespace, user: str, password: Password | None, password_help: str
    ) -> Login:
        # the bounce folder is read over IMAP: it signs in as --imap-auth says
        family = "imap" if option == "bounce" else option
        mechanism = getattr(args, f"{family}_auth") or args.auth or Mechanism.PASSWORD
        return login_for(option, user, mechanism, self.token, password, password_help)

    def second_login(self, option: str, args: argparse.Namespace, user: str, env_name: str) -> Login:
        """A second login: its own password file or variable, else the SMTP
        password when it is the same user (or the shared access token)."""
        what = option.upper() if option == "imap" else option
        password = read_password(getattr(args, f"{option}_password_file"), env_name, what, self.warnings)
        if password is None and user == args.smtp_user:
            password = self.smtp_password
        return self.login(option, args, user, password, f"--{option}-password-file or ${env_name}")


def _secrets(args: argparse.Namespace) -> _Secrets:
    warnings: list[str] = []
    smtp_password = read_password(args.smtp_password_file, SMTP_PASSWORD_ENV, "SMTP", warnings)
    state_dir = os.path.dirname(args.state_file) if args.state_file else state_directory()
    return _Secrets(smtp_password, token_source(args, state_dir, warnings), warnings)


# -- settings, one concern at a time -------------------------------------------------------------
def _endpoint(family: ServerFamily, args: argparse.Namespace, host: str, login: Login | None) -> Endpoint:
    port: int | None = getattr(args, f"{family.name}_port")
    security: Security | None = getattr(args, f"{family.name}_security")
    if security is None:
        security = (
            family.security_for_port(port)
            if port is not None
            else Security.STARTTLS
            if family is SMTP_FAMILY
            else Security.TLS
        )
    if port is None:
        port = family.default_ports[security]
    return Endpoint(host, port, security, login)


def _smtp(args: argparse.Namespace, secrets: _Secrets) -> tuple[Endpoint | None, str | None, str | None]:
    """The SMTP server, the sender and the recipient (not in poll mode)."""
    if args.mode is Mode.POLL:
        return None, None, None
    host = args.smtp_host or args.hostname
    if not host:
        raise UsageError("no SMTP server: give -H/--hostname or --smtp-host")
    login = None
    if args.smtp_user:
        login = secrets.login(
            "smtp",
            args,
            args.smtp_user,
            secrets.smtp_password,
            f"--smtp-password-file or ${SMTP_PASSWORD_ENV}",
        )
    elif args.smtp_auth not in (None, Mechanism.PASSWORD):
        raise UsageError(f"--smtp-auth {args.smtp_auth} needs --smtp-user (the mailbox to sign in as)")
    sender = args.envelope_from or (args.smtp_user if args.smtp_user and "@" in args.smtp_user else None)
    if not sender:
        raise UsageError("no sender: give --from (or an --smtp-user that is an address)")
    return _endpoint(SMTP_FAMILY, args, host, login), sender, args.recipient or sender


def _imap(args: argparse.Namespace, secrets: _Secrets) -> Endpoint | None:
    if args.mode is Mode.SUBMIT:
        return None
    host = args.imap_host or args.hostname or args.smtp_host
    if not host:
        raise UsageError("no IMAP server: give -H/--hostname or --imap-host")
    user = args.imap_user or args.smtp_user
    if not user:
        raise UsageError(f"{args.mode} mode needs an IMAP login: give --imap-user (or --smtp-user)")
    login = secrets.second_login("imap", args, user, IMAP_PASSWORD_ENV)
    return _endpoint(IMAP_FAMILY, args, host, login)


def _thresholds(args: argparse.Namespace) -> tuple[Thresholds, float, float]:
    """-w/-c, the phase budgets, --wait and -t."""
    from .check import DEFAULT_PHASE_WARNING

    phases = {label: [_range(spec), _no_range()] for label, spec in DEFAULT_PHASE_WARNING.items()}
    for label, spec in args.phase_warning:
        phases.setdefault(label, [_no_range(), _no_range()])[0] = spec
    for label, spec in args.phase_critical:
        phases.setdefault(label, [_no_range(), _no_range()])[1] = spec
    if args.mode is Mode.POLL:
        # on the age of the newest match: none unless given; "nothing in the
        # window" is CRITICAL on its own
        warning = args.warning if args.warning is not None else _no_range()
        critical = args.critical if args.critical is not None else _no_range()
        wait = 0.0
    else:
        warning = args.warning if args.warning is not None else _range(DEFAULT_WARNING)
        critical = args.critical if args.critical is not None else _range(DEFAULT_CRITICAL)
        wait = args.wait if args.wait is not None else _critical_end(critical, warning) + WAIT_PAST_CRITICAL
    timeout = args.timeout if args.timeout is not None else wait + TIMEOUT_PAST_WAIT
    pairs = {label: (pair[0], pair[1]) for label, pair in phases.items()}
    days = CertDays(*args.cert_days) if args.cert_days else None
    return Thresholds(warning, critical, pairs, days), wait, timeout


def _critical_end(critical: Any, warning: Any) -> float:
    for candidate in (critical, warning):
        if not candidate.invert and candidate.end != float("inf"):
            return float(candidate.end)
    return 300.0


def _poll(args: argparse.Namespace) -> PollCriteria | None:
    criteria = (args.subject, args.sender, args.header)
    if args.mode is Mode.POLL and not any(criteria):
        raise UsageError("poll mode needs at least one of --subject, --sender, --header")
    if args.mode is not Mode.POLL:
        if any(criteria + (args.window,)):
            raise UsageError("--subject, --sender, --header and --window are for --mode poll")
        return None
    for value in (args.subject, args.sender) + tuple(part for pair in args.header or () for part in pair):
        if value is not None and not value.isascii():
            raise UsageError(f"poll criteria must be ASCII: {value!r}")
    return PollCriteria(args.subject, args.sender, tuple(args.header or ()), args.window or DEFAULT_WINDOW)


def _verdicts(args: argparse.Namespace) -> Verdicts:
    if args.mode is not Mode.ROUNDTRIP and (args.dns_checks or args.authserv_id or args.auth_policy):
        raise UsageError("--dns-checks, --authserv-id and --auth-policy need --mode roundtrip")
    if args.nameserver and not args.dns_checks:
        raise UsageError("--nameserver is used by --dns-checks only")
    return Verdicts(
        args.authserv_id,
        AuthPolicy(args.auth_policy),
        args.dns_checks,
        args.nameserver,
        args.dns_finding_state,
    )


def _elsewhere(args: argparse.Namespace, imap: Endpoint | None, secrets: _Secrets) -> Elsewhere:
    roundtrip_only = (
        args.junk_folder,
        args.no_junk,
        args.cleanup,
        args.purge_older_than,
        args.bounce_user,
        args.bounce_folder,
    )
    if args.mode is not Mode.ROUNDTRIP or imap is None:
        if any(option not in (None, False) for option in roundtrip_only):
            raise UsageError(
                "--junk-folder, --no-junk, --cleanup, --purge-older-than and --bounce-* need --mode roundtrip"
            )
        return Elsewhere()
    bounce = None
    if args.bounce_folder:
        user = args.bounce_user or args.smtp_user
        if not user:
            raise UsageError("--bounce-folder needs a login: --bounce-user (or --smtp-user)")
        login = secrets.second_login("bounce", args, user, BOUNCE_PASSWORD_ENV)
        bounce = BounceWatch(Endpoint(imap.host, imap.port, imap.security, login), args.bounce_folder)
    return Elsewhere(
        args.junk_folder, not args.no_junk, args.junk_state, bounce, args.cleanup, args.purge_older_than
    )


def _memory(args: argparse.Namespace, imap: Endpoint | None) -> Memory:
    if args.mode is Mode.ROUNDTRIP and not args.no_state and imap is not None and imap.user:
        path = args.state_file or default_state_file(imap.user, imap.host, args.imap_folder)
        return Memory(path, args.lost_after, args.escalate_after)
    if args.state_file or args.escalate_after:
        raise UsageError("--state-file and --escalate-after need --mode roundtrip (and no --no-state)")
    return Memory(None, args.lost_after)


def _no_wait(args: argparse.Namespace) -> bool:
    if args.no_wait and (args.mode is not Mode.ROUNDTRIP or args.no_state):
        raise UsageError(
            "--no-wait needs --mode roundtrip and memory across runs (no --no-state): "
            "it judges the probes earlier runs remembered"
        )
    if args.no_wait and args.wait is not None:
        raise UsageError("--no-wait does not wait: leave --wait out")
    return bool(args.no_wait)


def _tls(args: argparse.Namespace) -> TlsConfig:
    if args.ca_file:  # load it now: a bad file is a usage error, not a failed probe
        import ssl

        try:
            load_ca_file(args.ca_file)
        except ssl.SSLError as exc:  # before OSError: it is one
            raise UsageError(
                f"cannot use --ca-file {args.ca_file}: no usable certificate in it ({exc.reason})"
            ) from None
        except OSError as exc:
            raise UsageError(f"cannot use --ca-file {args.ca_file}: {exc.strerror}") from None
    return TlsConfig(args.ca_file, args.insecure, str(args.tls_min))


def _address_family(args: argparse.Namespace) -> int:
    if args.use_ipv4 and args.use_ipv6:
        raise UsageError("-4 and -6 together: choose one address family")
    return socket.AF_INET if args.use_ipv4 else socket.AF_INET6 if args.use_ipv6 else socket.AF_UNSPEC


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Options and environment -> Settings, or UsageError with one line."""
    args = build_parser().parse_args(argv)
    secrets = _secrets(args)
    smtp, sender, recipient = _smtp(args, secrets)
    imap = _imap(args, secrets)
    thresholds, wait, timeout = _thresholds(args)
    return Settings(
        mode=args.mode,
        smtp=smtp,
        imap=imap,
        envelope_from=sender,
        recipient=recipient,
        imap_folder=args.imap_folder,
        helo_name=args.helo_name or socket.gethostname(),
        tls=_tls(args),
        thresholds=thresholds,
        wait=wait,
        timeout=timeout,
        verbose=min(args.verbose, 3),
        step_timeout=args.step_timeout,
        address_family=_address_family(args),
        no_wait=_no_wait(args),
        verdicts=_verdicts(args),
        memory=_memory(args, imap),
        elsewhere=_elsewhere(args, imap, secrets),
        poll=_poll(args),
        config_warnings=tuple(secrets.warnings),
        outputs=Outputs(args.output, args.prometheus_textfile),
    )


FAMILY_WORDS: dict[int, str] = {socket.AF_INET: "IPv4 (-4)", socket.AF_INET6: "IPv6 (-6)"}


# -- -vv: the effective settings ---------------------------------------------------------------
def effective_settings(settings: Settings) -> list[str]:
    """``option = value`` for what the run will use, secrets as where they came from."""
    rows: list[tuple[str, Any]] = [("--mode", settings.mode)]
    for family, endpoint in ((SMTP_FAMILY, settings.smtp), (IMAP_FAMILY, settings.imap)):
        if endpoint is None:
            continue
        rows += [
            (f"--{family.name}-host", endpoint.host),
            (f"--{family.name}-port", endpoint.port),
            (f"--{family.name}-security", endpoint.security),
        ]
        if endpoint.login is not None:
            rows += [
                (f"--{family.name}-user", endpoint.login.user),
                (f"--{family.name}-auth", endpoint.login.mechanism),
                (f"{family.name} credential", endpoint.login.credential.describe()),
            ]
    rows += [
        ("--from", settings.envelope_from),
        ("--to", settings.recipient),
        ("--imap-folder", settings.imap_folder),
        ("--helo", settings.helo_name),
        ("--ca-file", settings.tls.ca_file),
        ("--insecure", settings.tls.insecure),
        ("--tls-min", settings.tls.minimum),
        (
            "--cert-days",
            f"{days.warning:g},{days.critical:g}"
            if (days := settings.thresholds.cert_days)
            else "0 (no state)",
        ),
        (
            "address family",
            FAMILY_WORDS.get(settings.address_family, "any"),
        ),
        ("--warning", settings.thresholds.warning),
        ("--critical", settings.thresholds.critical),
    ]
    rows += [
        (f"phase {label}", f"warning {str(pair[0]) or '(none)'}, critical {str(pair[1]) or '(none)'}")
        for label, pair in settings.thresholds.phases.items()
    ]
    rows += [
        ("--wait", f"{settings.wait:g}"),
        ("--timeout", f"{settings.timeout:g}"),
        ("--step-timeout", f"{settings.step_timeout:g}"),
        ("--no-wait", settings.no_wait),
        ("--state-file", settings.memory.state_file),
        ("--lost-after", f"{settings.memory.lost_after:g}"),
        ("--escalate-after", settings.memory.escalate_after),
    ]
    elsewhere = settings.elsewhere
    rows += [
        (
            "--junk-folder",
            elsewhere.junk_folder or ("(the \\Junk folder)" if elsewhere.junk_detect else "(none)"),
        ),
        ("--junk-state", elsewhere.junk_state),
        ("--cleanup", elsewhere.cleanup),
        ("--purge-older-than", elsewhere.purge_days),
    ]
    if elsewhere.bounce is not None:
        rows += [
            ("--bounce-folder", elsewhere.bounce.folder),
            ("--bounce-user", elsewhere.bounce.endpoint.user),
        ]
    verdicts = settings.verdicts
    rows += [
        ("--authserv-id", verdicts.authserv_id),
        ("--dns-checks", verdicts.dns_checks),
        ("--nameserver", ":".join(map(str, verdicts.nameserver)) if verdicts.nameserver else None),
        ("--dns-finding-state", verdicts.dns_finding_state),
    ]
    if settings.poll is not None:
        rows += [("poll criteria", settings.poll.describe()), ("--window", f"{settings.poll.window:g}")]
    rows += [
        ("--output", settings.outputs.format),
        ("--prometheus-textfile", settings.outputs.prometheus_textfile),
    ]
    return [f"{option} = {'(not set)' if value is None else value}" for option, value in rows]


# -- main ------------------------------------------------------------------------------------------
def _emit(text: str, exit_code: int) -> NoReturn:
    """Print and exit.  UTF-8 whatever the locale (a receiver's header may
    carry any character); a reader gone away (``| head -1``, a killed
    scheduler) ends the run quietly with its exit code, no traceback."""
    try:
        sys.stdout.buffer.write(text.encode("utf-8", "replace"))
        sys.stdout.flush()
    except BrokenPipeError:
        # what Python would flush at exit would fail again: point stdout nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(exit_code)


def _unknown(text: str, details: str = "", output: str = "text", started: float | None = None) -> NoReturn:
    """A run that ended before it had a report: bad options, an interruption, a bug."""
    summary = " ".join(text.split())
    if output == "json":
        import time

        started_at = time.time() - (time.monotonic() - started) if started is not None else None
        document = json_document("UNKNOWN", UNKNOWN, summary, details.splitlines(), started_at or time.time())
        _emit(dump_json(document), UNKNOWN)
    _emit(f"{SERVICE} UNKNOWN - {one_line(summary)}\n" + (f"{details}\n" if details else ""), UNKNOWN)


def main(argv: list[str] | None = None, started: float | None = None) -> None:
    verbose, output = 0, None
    try:
        settings = parse_settings(argv)
        verbose, output = settings.verbose, str(settings.outputs.format)
        register_secret(*settings.secrets())
        configure_logging(verbose)
        log = logging.getLogger(LOGGER)
        for line in effective_settings(settings):
            log.debug("%s", line)
        from .run import run_check

        report = run_check(settings, started)
        _emit(RENDERERS[output](report, verbose, log_lines()), report.exit_code)
    except SystemExit:
        raise
    except BaseException as exc:
        if output is None:  # the options did not parse: what did they ask for?
            output = requested_format(sys.argv[1:] if argv is None else argv, _long_options())
        _fail(exc, verbose, output, started)


def _long_options() -> list[str]:
    return [flag for action in build_parser()._actions for flag in action.option_strings if flag[:2] == "--"]


def _fail(exc: BaseException, verbose: int, output: str, started: float | None) -> NoReturn:
    if isinstance(exc, UsageError):
        _unknown(f"{exc} (see --help)", output=output, started=started)
    if isinstance(exc, KeyboardInterrupt):
        _unknown("interrupted", output=output, started=started)
    if isinstance(exc, Stopped):  # -t or SIGTERM striking outside the probe
        _unknown(str(exc), output=output, started=started)
    details = ""  # a bug of ours
    if verbose >= 3:  # diagnostics, asked for
        import traceback

        details = mask(traceback.format_exc().rstrip())
    _unknown(mask(f"{exc.__class__.__name__}: {exc}"), details, output, started)
