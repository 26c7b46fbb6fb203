"""The installed plugin signing in with OAuth2 against the real stack: every
way to a token (file, environment, command, client credentials, refresh
token), the token cache and its lock, a long token, and every fault of the
issue as a row of a table.

Each run is at -vvv and asserts the exit code, the whole first line, the
perfdata labels, and that no secret this module knows (access and refresh
tokens, client secrets, the base64 XOAUTH2/OAUTHBEARER initial responses)
is in stdout or stderr.  Failed token logins cost Dovecot 2 s each, so the
rows of FAULTS run all at once (one batch per module); the rows of
IDP_FAULTS turn the IdP's knobs or count its requests, so they run alone."""

import base64
import fcntl
import glob
import json
import os
import socket
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from conftest import all_at_once, assert_state, run_plugin, sasl_response, scripted_peer
from mailstack import (
    APP_CLIENT,
    IDP_PORT,
    IMAP_PORT,
    IMAPS_PORT,
    REFRESH_CLIENT,
    SUBMISSION_PORT,
    SUBMISSIONS_PORT,
    TLS_HOSTNAME,
    MailStack,
)
from test_oauth_stack import CHALLENGE, IMAP_REFUSED, MECHANISMS, PROBE, SMTP_REFUSED
from test_roundtrip_stack import IMPLICIT_TLS_LABELS, STARTTLS_LABELS, implicit_tls_args, starttls_args

pytestmark = pytest.mark.usefixtures("idp")  # the IdP as configured, before and after each test

SECURITY = {"starttls": (starttls_args, STARTTLS_LABELS), "tls": (implicit_tls_args, IMPLICIT_TLS_LABELS)}
STATES = {0: "OK", 2: "CRITICAL", 3: "UNKNOWN"}
OK_LINE = "EMAIL_ROUNDTRIP OK - round trip "
MEMORY = {"late", "lost"}  # the state file's counters: in every round trip's perfdata
TOKEN_ENV, SECRET_ENV = "CHECK_EMAIL_ROUNDTRIP_OAUTH_TOKEN", "CHECK_EMAIL_ROUNDTRIP_OAUTH_CLIENT_SECRET"
WRONG_SECRET = "not-the-probe-app-secret"
REJECTED = f"OAuth token request rejected by {TLS_HOSTNAME}"
HINT = {"invalid_grant": "the refresh token was revoked or has expired: sign in again for a new one",
        "invalid_client": "the client id or secret is wrong, or the secret has expired"}
AUTH_HIDDEN = "SMTP > <AUTH exchange hidden>"

# every secret the runs may know, in the forms it travels in; no run's output may hold one
SECRETS: set[str] = set()


def remember(*secrets):
    for secret in secrets:
        SECRETS.update({secret, base64.b64encode(secret.encode()).decode()})
        for mechanism in MECHANISMS:
            for port in (SUBMISSION_PORT, SUBMISSIONS_PORT, IMAP_PORT, IMAPS_PORT):
                SECRETS.add(base64.b64encode(sasl_response(mechanism, PROBE, secret, port).encode()).decode())


def check(run, exit_code, line, labels, exact=True):
    """Exit code and state, line 1 (exactly, or how it starts), the perfdata labels, no secret."""
    assert_state(run, exit_code, STATES[exit_code])
    first = run.first_line.split(" | ")[0]
    assert (first == line if exact else first.startswith(line)), run.describe()
    assert set(run.perfdata) == set(labels), run.describe()
    leaked = [secret[:8] for secret in SECRETS if secret in run.stdout or secret in run.stderr]
    assert not leaked, f"secrets (their first characters) in the output: {leaked}\n{run.describe()}"


def plugin(*args, state_home=None, env=None):
    """The plugin at -vvv; with its state directory (the token cache) where given."""
    env = dict(env or {})
    if state_home is not None:
        env["XDG_STATE_HOME"] = str(state_home)
    return run_plugin(*args, "-vvv", env=env)


def private_file(path, text, mode=0o600, owner=None):
    path.write_text(text + "\n")
    path.chmod(mode)
    if owner:
        os.chown(path, *owner)
    return str(path)


def mint(stack, **issue):
    token = stack.oauth.issue_token("probe", **issue)
    remember(token)
    return token


def token_file(stack, tmp_path, **issue):
    return private_file(tmp_path / "token", mint(stack, **issue))


def endpoint(stack, client_id=APP_CLIENT, secret_file=None, url=None):
    """The built-in grant at the stack's token endpoint (or url), the client's own secret file."""
    remember(stack.oauth.client_secret(client_id))
    return ["--oauth-token-url", url or stack.oauth.token_url, "--oauth-client-id", client_id,
            "--oauth-client-secret-file", secret_file or stack.oauth.client_secret_file(client_id)]


def refresh_token_file(stack, tmp_path, **mode):
    token = stack.oauth.issue_refresh_token("probe")
    remember(token)
    return private_file(tmp_path / "refresh", token, **mode), token


def refresh_args(stack, refresh_file):
    return [*endpoint(stack, REFRESH_CLIENT), "--oauth-refresh-token-file", refresh_file]


def cached(state_home):
    """The token cache files of a state directory; their access tokens become known secrets."""
    paths = glob.glob(os.path.join(state_home, "check_email_roundtrip", "oauth-*.json"))
    for path in paths:
        with open(path) as fh:
            remember(json.load(fh)["access_token"])
    return paths


def read_token(path):
    with open(path) as fh:
        token = fh.read().strip()
    remember(token)
    return token


def script(path, body):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o700)
    return str(path)


# -- a round trip with a token: both mechanisms, both protocols, both kinds of TLS ---------------
@pytest.mark.parametrize("security", SECURITY)
@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_round_trip_signs_in_with_the_token_on_both_protocols(stack, idp, tmp_path, mechanism, security):
    args, labels = SECURITY[security]
    path = token_file(stack, tmp_path)
    run = plugin(*args(stack, "probe", "--auth", mechanism, "--oauth-token-file", path))
    check(run, 0, OK_LINE, labels, exact=False)
    assert "(INBOX, queued as " in run.first_line
    assert idp.introspection_requests() == 2  # IMAP and SMTP each had the token checked
    assert "SMTP < 334" not in run.stdout  # a short token rides on the AUTH line


@pytest.mark.parametrize("token_side", ["smtp", "imap"])
def test_one_protocol_with_a_token_the_other_with_the_password(stack, idp, tmp_path, token_side):
    run = plugin(*starttls_args(stack, "probe", f"--{token_side}-auth", "xoauth2",
                                "--oauth-token-file", token_file(stack, tmp_path)))
    check(run, 0, OK_LINE, STARTTLS_LABELS, exact=False)
    assert idp.introspection_requests() == 1
    assert ("<LOGIN command hidden>" in run.stdout) == (token_side == "smtp")


# -- where the token comes from: (args, environment, token requests expected) -----------------
def from_environment(stack, tmp_path):
    return [], {TOKEN_ENV: mint(stack)}, 0


def from_command(stack, tmp_path):
    return ["--oauth-token-command", script(tmp_path / "get-token", f"echo {mint(stack)}\n")], {}, 0


def from_command_with_quoted_arguments(stack, tmp_path):
    """`print token` in a directory with a space prints the token only when
    called with --mailbox 'probe mailbox' --file <the token file>."""
    directory = tmp_path / "token helper"
    directory.mkdir()
    secret = private_file(directory / "secret token", mint(stack))
    helper = script(directory / "print token",
                    '[ "$#" = 4 ] && [ "$1" = --mailbox ] && [ "$2" = "probe mailbox" ] && [ "$3" = --file ] '
                    '|| { echo "bad arguments: $*" >&2; exit 64; }\nexec cat "$4"\n')
    return ["--oauth-token-command", f"'{helper}' --mailbox \"probe mailbox\" --file '{secret}'"], {}, 0


def from_client_credentials(stack, tmp_path):
    return endpoint(stack), {}, 1


def from_client_credentials_secret_in_environment(stack, tmp_path):
    secret = stack.oauth.client_secret(APP_CLIENT)
    remember(secret)
    args = ["--oauth-token-url", stack.oauth.token_url, "--oauth-client-id", APP_CLIENT]
    return args, {SECRET_ENV: secret}, 1


def from_refresh_token(stack, tmp_path):
    return refresh_args(stack, refresh_token_file(stack, tmp_path)[0]), {}, 1


SOURCES = [from_environment, from_command, from_command_with_quoted_arguments, from_client_credentials,
           from_client_credentials_secret_in_environment, from_refresh_token]


@pytest.mark.parametrize("source", SOURCES, ids=[source.__name__ for source in SOURCES])
def test_each_token_source_signs_in(stack, idp, tmp_path, source):
    args, env, requests = source(stack, tmp_path)
    run = plugin(*implicit_tls_args(stack, "probe", "--auth", "xoauth2", *args),
                 state_home=tmp_path / "state", env=env)
    cached(tmp_path / "state")
    asked = source not in (from_environment,)  # a command or an endpoint: oauth_token, how long it took
    check(run, 0, OK_LINE, IMPLICIT_TLS_LABELS | ({"oauth_token"} if asked else set()), exact=False)
    assert idp.token_requests()["total"] == requests and idp.introspection_requests() == 2


def test_refresh_token_grant_rewrites_the_file_keeping_mode_and_owner(stack, idp, tmp_path):
    path, first = refresh_token_file(stack, tmp_path, mode=0o640, owner=(65534, 65534))
    args = starttls_args(stack, "probe", "--auth", "oauthbearer", *refresh_args(stack, path))
    run = plugin(*args, state_home=tmp_path / "a")
    second = read_token(path)
    cached(tmp_path / "a")
    check(run, 0, OK_LINE, STARTTLS_LABELS | {"oauth_token"}, exact=False)
    info = os.stat(path)
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, 65534, 65534)
    assert [idp.token_state(token)["state"] for token in (first, second)] == ["used", "active"]
    # the old refresh token no longer works ...
    old = private_file(tmp_path / "old", first)
    run = plugin(*starttls_args(stack, "probe", "--auth", "oauthbearer", *refresh_args(stack, old)),
                 state_home=tmp_path / "b")
    check(run, 2, f"EMAIL_ROUNDTRIP CRITICAL - {REJECTED} ({HINT['invalid_grant']}): 400 invalid_grant: the "
                  "refresh token was already used (it is rotated at every refresh: use the one from the last "
                  "answer)", MEMORY)
    # ... and a run without the cache signs in with the new one, and keeps the next
    run = plugin(*args, state_home=tmp_path / "c")
    third = read_token(path)
    cached(tmp_path / "c")
    check(run, 0, OK_LINE, STARTTLS_LABELS | {"oauth_token"}, exact=False)
    assert third not in (first, second) and idp.token_state(second)["state"] == "used"
    assert idp.token_requests() == {"refresh_token": 3, "total": 3}


# -- the token cache ---------------------------------------------------------------------------
def test_a_good_cached_token_is_used_without_a_request(stack, idp, tmp_path):
    args = implicit_tls_args(stack, "probe", "--auth", "xoauth2", *endpoint(stack))
    first = plugin(*args, state_home=tmp_path)
    (cache,) = cached(tmp_path)
    check(first, 0, OK_LINE, IMPLICIT_TLS_LABELS | {"oauth_token"}, exact=False)
    assert os.path.dirname(cache) == str(tmp_path / "check_email_roundtrip")
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    second = plugin(*args, state_home=tmp_path)
    check(second, 0, OK_LINE, IMPLICIT_TLS_LABELS, exact=False)  # no oauth_token: nothing was asked
    assert idp.token_requests() == {"client_credentials": 1, "total": 1}


def test_a_stale_cached_token_makes_exactly_one_request(stack, idp, tmp_path):
    idp.set_expires_in(APP_CLIENT, 3)
    args = implicit_tls_args(stack, "probe", "--auth", "xoauth2", *endpoint(stack))
    first = plugin(*args, state_home=tmp_path)
    (cache,) = cached(tmp_path)
    check(first, 0, OK_LINE, IMPLICIT_TLS_LABELS | {"oauth_token"}, exact=False)
    with open(cache) as fh:
        stale = json.load(fh)["access_token"]
    time.sleep(3)
    run = plugin(*args, state_home=tmp_path)
    cached(tmp_path)
    check(run, 0, OK_LINE, IMPLICIT_TLS_LABELS | {"oauth_token"}, exact=False)
    assert idp.token_requests() == {"client_credentials": 2, "total": 2}
    with open(cache) as fh:
        assert json.load(fh)["access_token"] != stale


def test_two_runs_at_once_spend_the_refresh_token_once(stack, idp, tmp_path):
    """The token endpoint answers after 1 s, so both runs want a token while
    the first request is under way: the second waits for the lock, then finds
    the first one's token in the cache."""
    path, first = refresh_token_file(stack, tmp_path)
    idp.set_token_endpoint(delay=1.0)
    args = starttls_args(stack, "probe", "--auth", "xoauth2", *refresh_args(stack, path))
    runs = all_at_once(*[lambda: plugin(*args, state_home=tmp_path / "state")] * 2)
    newest = read_token(path)
    cached(tmp_path / "state")
    asked = ["oauth_token" in run.perfdata for run in runs]
    assert sorted(asked) == [False, True], [run.describe() for run in runs]
    for run, requested in zip(runs, asked):
        check(run, 0, OK_LINE, STARTTLS_LABELS | ({"oauth_token"} if requested else set()), exact=False)
    assert idp.token_requests() == {"refresh_token": 1, "total": 1}
    assert [idp.token_state(token)["state"] for token in (first, newest)] == ["used", "active"]


# -- a long token ------------------------------------------------------------------------------
def test_a_long_token_goes_after_the_empty_334_not_on_the_auth_line(stack, idp, tmp_path):
    path = token_file(stack, tmp_path, length=3000)
    run = plugin(*implicit_tls_args(stack, "probe", "--auth", "oauthbearer", "--oauth-token-file", path))
    check(run, 0, OK_LINE, IMPLICIT_TLS_LABELS, exact=False)
    start = run.lines.index(AUTH_HIDDEN)
    # a server asks with an empty 334 only when the AUTH line carried no initial response
    assert [line.rstrip() for line in run.lines[start:start + 4]] == [
        AUTH_HIDDEN, "SMTP < 334", AUTH_HIDDEN, "SMTP < 235 2.7.0 Authentication successful"]


# -- faults: each row's setup(lab) -> (arguments, line 1 after the state word) --------------------
@dataclass
class Lab:
    """What a row's setup gets: the stack, a directory of its own, a free port,
    and where to leave what must be closed after the run (peers, a lock)."""

    stack: MailStack
    tmp: Path
    free_port: int
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self):
        for close in self.closers:
            close()


@dataclass
class Fault:
    name: str
    setup: Callable[[Lab], tuple[list[str], str]]
    exit_code: int
    labels: set[str]


def revoked(mechanism, side):
    def setup(lab):
        token = mint(lab.stack)
        lab.stack.oauth.revoke_token(token)
        path = private_file(lab.tmp / "revoked", token)
        words = ", ".join(f"{key} {value}" for key, value in CHALLENGE[mechanism].items())
        note, source = f"({mechanism} challenge: {words})", ["--oauth-token-file", path]
        if side == "IMAP":
            args = implicit_tls_args(lab.stack, "probe", "--auth", mechanism.lower(), *source)
            return args, f"IMAP AUTHENTICATE rejected for {PROBE}: {IMAP_REFUSED} {note}"
        args = starttls_args(lab.stack, "probe", "--smtp-auth", mechanism.lower(), *source)
        return args, f"SMTP AUTH rejected: {SMTP_REFUSED[0]} {SMTP_REFUSED[1]} {note}"
    return setup


def with_token(lab, *args):
    return implicit_tls_args(lab.stack, "probe", "--auth", "xoauth2", *args)


def revoked_refresh_token(lab):
    path, token = refresh_token_file(lab.stack, lab.tmp)
    lab.stack.oauth.revoke_refresh_token(token)
    return (with_token(lab, *refresh_args(lab.stack, path)),
            f"{REJECTED} ({HINT['invalid_grant']}): 400 invalid_grant: the refresh token was revoked")


def wrong_client_secret(lab):
    remember(WRONG_SECRET)
    wrong = private_file(lab.tmp / "wrong.secret", WRONG_SECRET)
    return (with_token(lab, *endpoint(lab.stack, secret_file=wrong)),
            f"{REJECTED} ({HINT['invalid_client']}): 401 invalid_client: "
            f"wrong client secret for '{APP_CLIENT}'")


def endpoint_down(lab):
    url = f"https://{TLS_HOSTNAME}:{lab.free_port}/token"
    return (with_token(lab, *endpoint(lab.stack, url=url)),
            f"OAuth token request to {TLS_HOSTNAME}:{lab.free_port} refused (nothing listening?)")


def token_command(body, words):
    """A token command: a shell script of `body`, or (None) one that does not exist."""
    def setup(lab):
        command = "/nonexistent/get-token --user x" if body is None else script(lab.tmp / "get-token", body)
        args = with_token(lab, "--oauth-token-command", command)
        return args, f"OAuth token request: token command {words}"
    return setup


def token_file_fault(content, words):
    def setup(lab):
        if content is not None:
            private_file(lab.tmp / "token", content)
        return with_token(lab, "--oauth-token-file", str(lab.tmp / "token")), words.format(tmp=lab.tmp)
    return setup


def refresh_token_link(lab):
    path, _ = refresh_token_file(lab.stack, lab.tmp)
    os.symlink(path, lab.tmp / "link")
    return (with_token(lab, *refresh_args(lab.stack, str(lab.tmp / "link"))),
            f"--oauth-refresh-token-file {lab.tmp}/link is a symbolic link: give the file itself (a rotated "
            "refresh token is written in its place) (see --help)")


def no_auth_before_starttls(lab):
    return (starttls_args(lab.stack, "probe", "--smtp-auth", "xoauth2", "--oauth-token-file",
                          token_file(lab.stack, lab.tmp), "--smtp-security", "none", "--mode", "submit"),
            "SMTP AUTH unavailable: the server offers no AUTH (it may require TLS first)")


def scripted_server(protocol, offer):
    """A peer offering only `offer`: every port of the stack offers XOAUTH2 and
    OAUTHBEARER wherever it offers AUTH at all (IMAP on loopback even without TLS)."""
    def respond(line):
        if protocol == "smtp":
            ehlo = line[:4].upper() == b"EHLO"
            return b"250-scripted\r\n250 AUTH " + offer.encode() + b"\r\n" if ehlo else None
        tag, _, command = line.strip().partition(b" ")
        if command.upper() == b"CAPABILITY":
            return b"* CAPABILITY IMAP4rev1 AUTH=" + offer.encode() + b"\r\n" + tag + b" OK done\r\n"
        return b"* BYE\r\n" + tag + b" OK bye\r\n" if command.upper() == b"LOGOUT" else None

    def setup(lab):
        greeting = b"220 scripted ESMTP\r\n" if protocol == "smtp" else b"* OK scripted\r\n"
        peer = scripted_peer(respond, greeting)
        lab.closers.append(peer.close)
        where = [f"--{protocol}-host", "127.0.0.1", f"--{protocol}-port", str(peer.getsockname()[1]),
                 f"--{protocol}-security", "none", *(["--mode", "submit"] if protocol == "smtp" else [])]
        words = {"smtp": "SMTP AUTH", "imap": "IMAP AUTHENTICATE"}[protocol]
        return (with_token(lab, "--oauth-token-file", token_file(lab.stack, lab.tmp), *where),
                f"{words} unavailable: the server offers no XOAUTH2 (offers {offer})")
    return setup


# SMTP signs in beside IMAP: what each completed is in the perfdata, a
# handshake done leaves its certificate's days
IMAP_STARTED = MEMORY | {"imap_cert_days"}
SMTP_STARTED = IMAP_STARTED | {"smtp_connect", "smtp_starttls", "smtp_cert_days"}
SMTPS_STARTED = IMAP_STARTED | {"smtp_connect", "smtp_cert_days"}  # implicit TLS, the AUTH refused
FAULTS = [
    Fault("revoked token, IMAP, XOAUTH2", revoked("XOAUTH2", "IMAP"), 2, SMTPS_STARTED),
    Fault("revoked token, IMAP, OAUTHBEARER", revoked("OAUTHBEARER", "IMAP"), 2, SMTPS_STARTED),
    Fault("revoked token, SMTP, XOAUTH2", revoked("XOAUTH2", "SMTP"), 2, SMTP_STARTED),
    Fault("revoked token, SMTP, OAUTHBEARER", revoked("OAUTHBEARER", "SMTP"), 2, SMTP_STARTED),
    Fault("revoked refresh token", revoked_refresh_token, 2, MEMORY),
    Fault("wrong client secret", wrong_client_secret, 2, MEMORY),
    Fault("token endpoint down", endpoint_down, 2, MEMORY),
    Fault("token command fails", token_command(
        "echo starting >&2\necho 'vault: permission denied' >&2\nexit 7\n",
        "get-token failed with exit code 7: vault: permission denied"), 3, MEMORY),
    Fault("token command prints nothing", token_command("exit 0\n", "get-token printed no token"), 3, MEMORY),
    Fault("token command not found", token_command(None, "/nonexistent/get-token not found"), 3, MEMORY),
    Fault("token file missing", token_file_fault(
        None, "cannot read OAuth token file {tmp}/token: No such file or directory (see --help)"), 3, set()),
    Fault("token file empty", token_file_fault(
        "", "OAuth token file {tmp}/token is empty (see --help)"), 3, set()),
    Fault("refresh token file is a symbolic link", refresh_token_link, 3, set()),
    Fault("no AUTH before STARTTLS", no_auth_before_starttls, 2, {"smtp_connect"}),
    Fault("SMTP offers no XOAUTH2", scripted_server("smtp", "PLAIN LOGIN"), 2, {"smtp_connect"}),
    Fault(
        "IMAP offers no XOAUTH2",
        scripted_server("imap", "PLAIN"),
        2,
        MEMORY | {"smtp_connect", "smtp_auth", "smtp_cert_days"},  # the real SMTP side signed in
    ),
]


def unused_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def fault_runs(stack, tmp_path_factory):
    """Every row of FAULTS run at once: {name: (run, its line 1 after the state word)}."""
    stack.oauth.reset()
    labs = {fault.name: Lab(stack, tmp_path_factory.mktemp("fault"), unused_port()) for fault in FAULTS}
    prepared = {fault.name: fault.setup(labs[fault.name]) for fault in FAULTS}
    try:
        runs = all_at_once(*[lambda args=args: plugin(*args) for args, _ in prepared.values()])
    finally:
        for lab in labs.values():
            lab.close()
    return {name: (run, words) for (name, (_, words)), run in zip(prepared.items(), runs)}


@pytest.mark.parametrize("fault", FAULTS, ids=[fault.name for fault in FAULTS])
def test_fault(fault_runs, fault):
    run, words = fault_runs[fault.name]
    check(run, fault.exit_code, f"EMAIL_ROUNDTRIP {STATES[fault.exit_code]} - {words}", fault.labels)


# -- faults that turn the IdP's knobs or count its requests: one at a time ---------------------
def slow_endpoint(lab):
    lab.stack.oauth.set_token_endpoint(delay=6)
    return (with_token(lab, *endpoint(lab.stack), "--step-timeout", "2"),
            f"OAuth token request to {TLS_HOSTNAME}:{IDP_PORT}: no answer within 2.0 s")


def endpoint_answers_500(lab):
    lab.stack.oauth.set_token_endpoint(status=500, body="<html><h1>500 Internal Server Error</h1></html>",
                                       content_type="text/html")
    return (with_token(lab, *endpoint(lab.stack)),
            f"OAuth token request failed: {TLS_HOSTNAME} answered HTTP 500: "
            "<html><h1>500 Internal Server Error</h1></html>")


def plain_http_url(lab):
    url = f"http://{TLS_HOSTNAME}:{IDP_PORT}/token"
    return (with_token(lab, *endpoint(lab.stack, url=url)),
            f"--oauth-token-url must be an https:// URL (a client secret is never sent in clear): {url!r} "
            "(see --help)")


def token_lock_held(lab):
    """Another run holds the token cache's lock longer than a step."""
    args = with_token(lab, *endpoint(lab.stack), "--step-timeout", "1")
    check(plugin(*args, state_home=lab.tmp), 0, OK_LINE, IMPLICIT_TLS_LABELS | {"oauth_token"}, exact=False)
    (cache,) = cached(lab.tmp)
    os.unlink(cache)  # no token: this run must ask, under the lock
    lock = os.open(cache + ".lock", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)
    lab.closers.append(lambda: os.close(lock))
    lab.stack.oauth.reset_counters()
    return args, f"OAuth token request: the token cache {cache}: its lock is held by another run"


IDP_FAULTS = [  # + the token requests that reach the IdP, and the longest the run may take
    (Fault("token endpoint slower than --step-timeout", slow_endpoint, 2, MEMORY), 1, 3.5),
    (Fault("token endpoint answers 500, not JSON", endpoint_answers_500, 2, MEMORY), 1, 5),
    (Fault("plain http:// token URL", plain_http_url, 3, set()), 0, 5),
    (Fault("token cache locked by another run", token_lock_held, 3, MEMORY), 0, 3),
]


@pytest.mark.parametrize("fault, requests, seconds", IDP_FAULTS, ids=[row[0].name for row in IDP_FAULTS])
def test_idp_fault(stack, idp, tmp_path, fault, requests, seconds):
    lab = Lab(stack, tmp_path, unused_port())
    try:
        args, words = fault.setup(lab)
        run = plugin(*args, state_home=tmp_path)
    finally:
        lab.close()
    check(run, fault.exit_code, f"EMAIL_ROUNDTRIP {STATES[fault.exit_code]} - {words}", fault.labels)
    assert idp.token_requests()["total"] == requests
    assert run.seconds < seconds, run.describe()
