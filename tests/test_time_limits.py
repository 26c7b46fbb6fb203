"""Fitting every scheduler's time limit: each row a server that does not
answer as it should, each run ended within its own limit, naming the step.

Real servers where they can be made to misbehave (a TLS port spoken to in
plain text, the stock Dovecot connection limit), the fakes of fakes.py where
they cannot (silence after STARTTLS, after DATA, in the middle of a FETCH).
"""

import fcntl
import os
import re
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import assert_state, run_plugin
from fakes import ImapFake, Mailbox, SmtpFake, fake_args, password_file
from mailstack import APP_CLIENT, IMAP_PORT, IMAPS_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT
from test_roundtrip_stack import implicit_tls_args, starttls_args

STEP = 1  # --step-timeout of the fake-server rows
SLACK = 1.0  # Python's start, the output: what a run may take past its limit


# -- a TLS mismatch, default options: named within seconds, with the fix ---------------------------
def _on(stack, protocol, port, security):
    """The probe's options with one server's port and security replaced."""
    args = starttls_args(stack)
    args[args.index(f"--{protocol}-port") + 1] = str(port)
    args[args.index(f"--{protocol}-security") + 1] = security
    return args + (["--mode", "submit"] if protocol == "smtp" else [])


PLAIN_ON_TLS = (
    "no {P} greeting within 3.N s, and the port speaks TLS: an implicit-TLS port (use --{p}-security tls)"
)
TLS_ON_PLAIN = (
    "TLS failed: the server answered in plain text, not TLS: "
    "not an implicit-TLS port (use --{p}-security starttls)"
)


@pytest.mark.parametrize(
    "protocol, port, security, expected",
    [
        ("smtp", SUBMISSIONS_PORT, "starttls", "connect to localhost:{port}: " + PLAIN_ON_TLS),
        ("smtp", SUBMISSIONS_PORT, "none", "connect to localhost:{port}: " + PLAIN_ON_TLS),
        ("smtp", SUBMISSION_PORT, "tls", "TLS handshake to localhost:{port}: " + TLS_ON_PLAIN),
        ("imap", IMAPS_PORT, "starttls", "connect to localhost:{port}: " + PLAIN_ON_TLS),
        ("imap", IMAPS_PORT, "none", "connect to localhost:{port}: " + PLAIN_ON_TLS),
        ("imap", IMAP_PORT, "tls", "TLS handshake to localhost:{port}: " + TLS_ON_PLAIN),
    ],
    ids=[
        "smtp-465-starttls",
        "smtp-465-none",
        "smtp-587-tls",
        "imap-993-starttls",
        "imap-993-none",
        "imap-143-tls",
    ],
)
def test_tls_mismatch_is_named_within_10_s_with_the_fix(stack, protocol, port, security, expected):
    run = run_plugin(*_on(stack, protocol, port, security))  # no -t, no --step-timeout
    line = f"{protocol.upper()} " + expected.format(port=port, P=protocol.upper(), p=protocol)
    assert_state(run, 2, "CRITICAL")
    # the greeting wait (3 s) and the TLS look after it: "3.0 s", "3.1 s" on a busy machine
    pattern = re.escape(line).replace(r"3\.N", r"3\.\d")
    assert re.search(pattern, run.first_line), run.describe()
    assert run.seconds < 10, run.describe()


# -- silence where an answer is due: each within its --step-timeout ----------------------------------
@pytest.fixture
def password(tmp_path):
    return password_file(tmp_path)


def _stall(peer, *_):
    peer.stall()


def _say_then_stall(reply):
    def step(peer, *args):
        tag = args[0] if args and isinstance(args[0], str) else ""
        peer.send(reply.replace(b"TAG", tag.encode()))
        peer.stall()

    return step


def _timed(*args):
    run = run_plugin(*args, "--step-timeout", str(STEP), "-t", "20")
    assert run.seconds < STEP + SLACK, run.describe()
    return run


def test_smtp_server_that_never_greets(password):
    with SmtpFake(greeting=_stall) as smtp:
        run = _timed(*fake_args(smtp, None, password, "--mode", "submit"))
    assert_state(run, 2, "CRITICAL", f"SMTP connect to 127.0.0.1:{smtp.port}: no SMTP greeting within 1.0 s")


def test_imap_server_that_never_greets(password):
    with ImapFake(Mailbox(), greeting=_stall) as imap, SmtpFake() as smtp:
        run = _timed(*fake_args(smtp, imap, password))
    assert_state(run, 2, "CRITICAL", f"IMAP connect to 127.0.0.1:{imap.port}: no IMAP greeting within 1.0 s")


def test_smtp_server_that_stalls_after_starttls(password):
    ehlo = b"250-fake\r\n250 STARTTLS\r\n"
    with SmtpFake(ehlo=ehlo, starttls=_say_then_stall(b"220 2.0.0 Ready to start TLS\r\n")) as smtp:
        args = fake_args(smtp, None, password, "--mode", "submit")
        args[args.index("--smtp-security") + 1] = "starttls"
        run = _timed(*args)
    assert_state(run, 2, "CRITICAL", f"SMTP STARTTLS to 127.0.0.1:{smtp.port}: no answer within 1.0 s")


def test_imap_server_that_stalls_after_starttls(password):
    box = Mailbox()
    with ImapFake(box, "IMAP4rev1 STARTTLS", starttls=_say_then_stall(b"TAG OK Begin TLS now\r\n")) as imap:
        args = fake_args(None, imap, password, "--mode", "poll", "--subject", "x")
        args[args.index("--imap-security") + 1] = "starttls"
        run = _timed(*args)
    assert_state(run, 2, "CRITICAL", f"IMAP STARTTLS to 127.0.0.1:{imap.port}: no answer within 1.0 s")


def test_smtp_server_that_takes_the_message_and_never_answers(password):
    with SmtpFake(message=_stall) as smtp:
        run = _timed(*fake_args(smtp, None, password, "--mode", "submit"))
    assert_state(run, 2, "CRITICAL", f"SMTP DATA to 127.0.0.1:{smtp.port}: no answer within 1.0 s")
    assert len(smtp.messages) == 1  # it had the whole message


def _partial_literal(peer, tag, args):
    uid = args.split()[0]
    peer.send(f"* 1 FETCH (UID {uid} BODY[HEADER] {{5000}}\r\n".encode() + b"Subject: half a header" * 10)
    peer.stall()


def test_imap_server_that_stalls_in_the_middle_of_a_fetch(password):
    box = Mailbox()
    with SmtpFake(box) as smtp, ImapFake(box, fetch=_partial_literal) as imap:
        run = _timed(*fake_args(smtp, imap, password))
    assert_state(
        run,
        2,
        "CRITICAL",
        f"IMAP FETCH to 127.0.0.1:{imap.port} failed: "
        f"the reply from 127.0.0.1:{imap.port} did not end within 1.0 s",
    )


# -- eight probes on one mailbox, Dovecot's stock connection limit ---------------------------------
def _wait_until_no_sessions(stack, user="probe", seconds=10.0):
    ends = time.monotonic() + seconds
    while stack.imap_sessions(user) and time.monotonic() < ends:
        time.sleep(0.1)
    assert stack.imap_sessions(user) == 0, "earlier IMAP sessions still counted"


def test_eight_probes_at_once_within_dovecots_stock_connection_limit(stack, tmp_path):
    with stack.imap_connections_limited() as limit:
        assert limit == 10
        # the stock limit really is in force: ten sessions, and the eleventh refused
        _wait_until_no_sessions(stack)
        sessions = [stack.imap("probe") for _ in range(limit)]
        for session in sessions:
            session.__enter__()
        try:
            with pytest.raises(Exception, match=r"UNAVAILABLE.*mail_max_userip_connections=10"):
                with stack.imap("probe"):
                    pass
        finally:
            for session in sessions:
                session.__exit__(None, None, None)
        _wait_until_no_sessions(stack)
        args = implicit_tls_args(stack, "probe", "--state-file", str(tmp_path / "state.json"), "-t", "20")
        with ThreadPoolExecutor(8) as pool:
            runs = list(pool.map(lambda _: run_plugin(*args), range(8)))
    for run in runs:
        assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
    assert stack.imap_connection_limit() > 10  # the stack's own value is back


# -- a reader gone away, and the files the plugin writes ----------------------------------------------
@pytest.fixture
def held_queue(stack):
    yield
    stack.delete_held()


def test_head_1_leaves_no_traceback_and_the_exit_code_is_the_runs(stack, tmp_path, held_queue):
    state_dir = tmp_path / "state"  # not there yet: the plugin makes it
    args = [
        *implicit_tls_args(stack, "probe", "--state-file", str(state_dir / "probe.json"), "-vvv"),
        "--imap-password-file",
        stack.password_file("probe"),
        "--smtp-auth",
        "xoauth2",
        "--oauth-token-url",
        stack.oauth.token_url,
        "--oauth-client-id",
        APP_CLIENT,
        "--oauth-client-secret-file",
        stack.oauth.client_secret_file(APP_CLIENT),
        # held, never delivered: a second of searches every 10 ms makes a long trace
        "--to",
        "probe+hold@example.test",
        "--wait",
        "1",
    ]
    whole = run_plugin(*args)
    assert_state(whole, 2, "CRITICAL", "not delivered within 1 s")
    assert len(whole.stdout) > 3 * 4096  # past what head reads and the pipe holds
    plugin = subprocess.Popen(
        ["check_email_roundtrip", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg")},
    )
    fcntl.fcntl(plugin.stdout.fileno(), 1031, 4096)  # F_SETPIPE_SZ: the smallest pipe there is
    head = subprocess.Popen(["head", "-1"], stdin=plugin.stdout, stdout=subprocess.PIPE)
    plugin.stdout.close()  # head holds the only reading end
    first, _ = head.communicate(timeout=60)
    stderr = plugin.stderr.read().decode()
    assert plugin.wait(timeout=60) == whole.returncode, stderr
    assert stderr == "" and first.decode().startswith("EMAIL_ROUNDTRIP CRITICAL - not delivered within 1 s")
    # every file the plugin wrote is the monitoring user's alone
    written = list(state_dir.rglob("*"))
    names = {path.name for path in written}
    assert {"probe.json", "probe.json.lock"} <= names and any(n.startswith("oauth-") for n in names), names
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    for path in written:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} is {mode:o}"


def test_state_directory_made_for_the_default_state_file_is_private(stack, tmp_path):
    run = run_plugin(*implicit_tls_args(stack), env={"XDG_STATE_HOME": str(tmp_path)})
    assert_state(run, 0, "OK")
    directory = tmp_path / "check_email_roundtrip"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = list(directory.iterdir())
    assert files and all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in files), files
    assert re.search(r"probe@example\.test@localhost-\w+\.json", " ".join(p.name for p in files))
