"""The fault matrix: each fault injected into the real stack, the plugin must
give the right state and name the cause in line 1, within -t, at -vvv, with
no secret in its output.

`python3 tests/test_fault_matrix.py` runs the matrix and prints the README's
"What each failure looks like" table; test_readme_table_matches_the_matrix
checks the README against the rows below.
"""

import base64
import os
import pathlib
import re
import sys
from dataclasses import dataclass
from typing import Callable

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import run_plugin, scripted_peer  # noqa: E402
from mailstack import (  # noqa: E402
    IMAPS_EXPIRED_PORT,
    IMAPS_PORT,
    SUBMISSION_PORT,
    SUBMISSIONS_EXPIRED_PORT,
    SUBMISSIONS_PORT,
    MailStack,
)

README = pathlib.Path(__file__).parent.parent / "README.md"
TIMEOUT = 20  # -t for every row


def base_args(stack, user="probe", smtp_port=SUBMISSIONS_PORT, imap_port=IMAPS_PORT, security="tls"):
    return [
        "-H",
        "localhost",
        "--ca-file",
        stack.ca,
        "--smtp-port",
        str(smtp_port),
        "--smtp-security",
        security,
        "--imap-port",
        str(imap_port),
        "--imap-security",
        "tls",
        "--smtp-user",
        stack.address(user),
        "--smtp-password-file",
        stack.password_file(user),
        "--imap-user",
        stack.address("probe"),
        "--imap-password-file",
        stack.password_file("probe"),
        "-t",
        str(TIMEOUT),
        "--wait",
        "8",
    ]


def _drops_mid_data(line):
    verb = line.upper()[:4]
    if verb == b"EHLO":
        return b"250-scripted\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n"
    if verb == b"AUTH":
        return b"235 2.7.0 ok\r\n"
    if verb == b"DATA":
        return b"354 go ahead\r\n"
    if verb in (b"MAIL", b"RCPT"):
        return b"250 ok\r\n"
    if line.startswith(b"Subject:"):
        return None  # hang up in the middle of the message
    return b""


@dataclass
class Row:
    fault: str
    setup: Callable[[MailStack, pathlib.Path], tuple[list[str], Callable[[], None]]]
    exit_code: int
    first_line: str  # regex for line 1


def _args(*extra, user="probe", **kwargs):
    return lambda stack, tmp: (base_args(stack, user, **kwargs) + list(extra), lambda: None)


def _without_ca(*extra):
    """The stack's private CA not given: only the system store is trusted."""
    return lambda stack, tmp: (
        [a for a in base_args(stack) if a not in ("--ca-file", stack.ca)] + list(extra),
        lambda: None,
    )


def _wrong_password(stack, tmp):
    (tmp / "wrong").write_text("revoked-app-password\n")
    args = base_args(stack)
    args[args.index("--smtp-password-file") + 1] = str(tmp / "wrong")
    return args, lambda: None


def _with_listener(respond, security="none"):
    def setup(stack, tmp):
        server = scripted_peer(respond)
        port = server.getsockname()[1]
        return base_args(stack) + [
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            str(port),
            "--smtp-security",
            security,
            "--mode",
            "submit",
        ], server.close

    return setup


def _held(stack, tmp):
    return base_args(stack) + ["--to", "probe+hold@example.test", "--wait", "3"], stack.delete_held


def _greylisted(stack, tmp):
    stack.set_greylist_seconds(3)
    return base_args(stack) + [
        "--to",
        "probe+greylist@example.test",
        "-w",
        "2",
        "-c",
        "30",
        "--wait",
        "15",
    ], lambda: stack.set_greylist_seconds(3)


def _imap_wrong_password(stack, tmp):
    (tmp / "wrong").write_text("wrong\n")
    args = base_args(stack)
    args[args.index("--imap-password-file") + 1] = str(tmp / "wrong")
    return args, lambda: None


def _unresolvable(stack, tmp):
    return base_args(stack) + ["--smtp-host", "mail.does-not-exist.invalid"], lambda: None


def _silent(stack, tmp):
    server = scripted_peer()
    return base_args(stack) + [
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        str(server.getsockname()[1]),
        "--smtp-security",
        "starttls",
        "--mode",
        "submit",
        "-t",
        "4",
    ], server.close


MATRIX = [
    Row(
        "wrong SMTP password / revoked app password", _wrong_password, 2, r"SMTP AUTH rejected: 535 5\.7\.8 "
    ),
    Row(
        "AUTH not offered (before TLS)",
        _args("--smtp-security", "none", "--mode", "submit", smtp_port=SUBMISSION_PORT),
        2,
        r"SMTP AUTH unavailable: the server offers no AUTH",
    ),
    Row(
        "AUTH disabled for the user", _args("--mode", "submit", user="noauth"), 2, r"SMTP AUTH rejected: 535 "
    ),
    Row(
        "STARTTLS not offered where starttls was asked",
        _with_listener(
            lambda line: b"250-x\r\n250 AUTH PLAIN\r\n" if line[:4].upper() == b"EHLO" else None, "starttls"
        ),
        2,
        r"SMTP STARTTLS not offered by the server: refusing to continue without TLS",
    ),
    Row(
        "SMTP certificate untrusted",
        _without_ca("--mode", "submit"),
        2,
        r"SMTP TLS handshake to localhost:\d+: unknown issuer: Mailstack Test CA \(use --ca-file\?\)",
    ),
    Row(
        "SMTP certificate expired",
        _args("--mode", "submit", smtp_port=SUBMISSIONS_EXPIRED_PORT),
        2,
        r"SMTP TLS handshake to localhost:\d+: certificate for localhost expired on "
        r"\d{4}-\d\d-\d\d \d\d:\d\d UTC",
    ),
    Row(
        "SMTP certificate for another host name",
        _args("--smtp-host", "127.0.0.1", "--mode", "submit"),
        2,
        r"SMTP TLS handshake to 127\.0\.0\.1:\d+: certificate is for localhost, not 127\.0\.0\.1",
    ),
    Row(
        "IMAP certificate untrusted",
        _without_ca(),
        2,
        r"IMAP TLS handshake to localhost:\d+: unknown issuer: Mailstack Test CA \(use --ca-file\?\)",
    ),
    Row(
        "IMAP certificate expired",
        _args(imap_port=IMAPS_EXPIRED_PORT),
        2,
        r"IMAP TLS handshake to localhost:\d+: certificate for localhost expired on "
        r"\d{4}-\d\d-\d\d \d\d:\d\d UTC",
    ),
    Row(
        "IMAP certificate for another host name",
        _args("--imap-host", "127.0.0.1"),
        2,
        r"IMAP TLS handshake to 127\.0\.0\.1:\d+: certificate is for localhost, not 127\.0\.0\.1",
    ),
    Row(
        "rate limit 451 at RCPT",
        _args("--to", "probe+tempfail@example.test"),
        2,
        r"SMTP RCPT TO refused temporarily: 451 4\.7\.0 .*Rate limit exceeded",
    ),
    Row(
        "recipient rejected 550",
        _args("--to", "probe+reject@example.test"),
        2,
        r"SMTP RCPT TO rejected: 550 5\.7\.1 ",
    ),
    Row(
        "sender rejected 553",
        _args("--from", "probe+reject553@example.test"),
        2,
        r"SMTP MAIL FROM rejected: 553 5\.7\.1 ",
    ),
    Row(
        "mailbox over quota 552",
        _args("--to", "full@example.test"),
        2,
        r"SMTP RCPT TO rejected: 552 5\.2\.2 .*Mailbox is full",
    ),
    Row(
        "unknown user, bounced by the next hop",
        _args("--to", "nobody@example.test"),
        2,
        r"bounced after \d+\.\d s: 550 5\.1\.1 <nobody@example\.test>: Recipient address rejected",
    ),
    Row(
        "relay accepts (250 queued) but never delivers",
        _held,
        2,
        r"not delivered within 3 s \(queued as \w+\)",
    ),
    Row(
        "delivery delayed by greylisting",
        _greylisted,
        1,
        r"roundtrip \d+\.\d{3} s \(outside range 0:2\), "
        r"slowest hop: \d+ s before mx\.example\.test \(ESMTP\)",
    ),
    Row(
        "server accepts TCP but never sends a banner",
        _silent,
        2,
        r"SMTP connect to 127\.0\.0\.1:\d+: no SMTP greeting within \d+\.\d s",
    ),
    Row(
        "server drops the connection mid-DATA",
        _with_listener(_drops_mid_data),
        2,
        r"SMTP DATA failed: connection closed by 127\.0\.0\.1:\d+",
    ),
    Row(
        "IMAP login fails",
        _imap_wrong_password,
        2,
        r"IMAP LOGIN rejected for probe@example\.test: \[AUTHENTICATIONFAILED\]",
    ),
    Row(
        "IMAP folder missing",
        _args("--imap-folder", "Gone"),
        2,
        r'IMAP SELECT failed: folder "Gone" cannot be opened',
    ),
    Row(
        "DNS name does not resolve",
        _unresolvable,
        2,
        r"SMTP connect failed: cannot resolve host name mail\.does-not-exist\.invalid",
    ),
    Row(
        "-t shorter than the wait",
        _args("--to", "probe+hold@example.test", "--wait", "30", "-t", "3"),
        3,
        r"timeout: -t 3 s reached during waiting for delivery",
    ),
]


def run_row(stack, row, tmp_path):
    args, cleanup = row.setup(stack, tmp_path)
    try:
        return run_plugin(*args, "-vvv")
    finally:
        cleanup()


def secrets_of(stack):
    values = []
    for user in ("probe", "noauth"):
        password = open(stack.password_file(user)).read().strip()
        values += [
            password,
            base64.b64encode(password.encode()).decode(),
            base64.b64encode(f"\0{stack.address(user)}\0{password}".encode()).decode(),
        ]
    values.append("revoked-app-password")
    return values


@pytest.fixture
def held_queue(stack):
    yield
    stack.delete_held()


@pytest.mark.parametrize("row", MATRIX, ids=[row.fault for row in MATRIX])
def test_fault(stack, row, tmp_path, held_queue):
    run = run_row(stack, row, tmp_path)
    state = {1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}[row.exit_code]
    assert run.returncode == row.exit_code, run.describe()
    assert re.match(rf"EMAIL_ROUNDTRIP {state} - .*{row.first_line}", run.first_line), run.describe()
    assert run.stderr == "" and "Traceback" not in run.stdout, run.describe()
    limit = int(re.findall(r"-t (\d+)", " ".join(run.args))[-1])  # the last -t given wins
    assert run.seconds < limit + 1, run.describe()
    for secret in secrets_of(stack):
        assert secret not in run.stdout, f"secret leaked in: {row.fault}"


def test_readme_table_matches_the_matrix():
    text = README.read_text()
    table = text.split("## What each failure looks like", 1)[1].split("\n## ", 1)[0]
    rows = {
        cells[1].strip(): cells
        for cells in (line.split("|") for line in table.splitlines())
        if len(cells) > 4
    }
    for row in MATRIX:
        assert row.fault in rows, f"README lacks the row {row.fault!r}"
        example = rows[row.fault][3].strip().strip("`")
        assert re.search(row.first_line, example), (
            f"README example for {row.fault!r} does not match {row.first_line!r}"
        )


if __name__ == "__main__":  # print the README table from real runs
    import tempfile

    stack = MailStack(verbose=False)
    print("| fault | state | first line |\n|---|---|---|")
    for row in MATRIX:
        with tempfile.TemporaryDirectory() as tmp:
            run = run_row(stack, row, pathlib.Path(tmp))
        stack.delete_held()
        print(f"| {row.fault} | {run.state} | `{run.first_line}` |")


def test_twenty_probes_at_once_each_find_their_own_message(stack, tmp_path):
    import json
    from concurrent.futures import ThreadPoolExecutor

    state = tmp_path / "shared-state.json"
    args = base_args(stack) + ["--state-file", str(state), "-v", "--wait", "30", "-t", "60"]
    with ThreadPoolExecutor(20) as pool:
        runs = list(pool.map(lambda _: run_plugin(*args), range(20)))
    found = set()
    for run in runs:
        assert run.returncode == 0 and run.state == "OK", run.describe()
        marker = next(line.split()[-1] for line in run.lines if line.startswith("marker "))
        uid = int(re.search(r"found UID (\d+) in INBOX", run.stdout).group(1))
        found.add((marker, uid))
    assert len({marker for marker, _ in found}) == 20 and len({uid for _, uid in found}) == 20
    memory = json.loads(state.read_text())  # twenty concurrent writers, one valid file
    assert memory["slow_streak"] == 0 and memory["pending"] == []


def test_non_ascii_sender_goes_out_with_smtputf8(stack):
    # Postfix offers SMTPUTF8: the submission of a non-ASCII address is OK
    run = run_plugin(*base_args(stack), "--mode", "submit", "--from", "prüfung@example.test")
    assert run.returncode == 0 and run.state == "OK", run.describe()


def test_non_ascii_address_without_smtputf8_is_refused_clearly(stack, tmp_path):
    def respond(line):
        verb = line.upper()[:4]
        if verb == b"EHLO":
            return b"250-old\r\n250 AUTH PLAIN\r\n"
        return b"235 ok\r\n" if verb == b"AUTH" else None

    args, close = _with_listener(respond)(stack, tmp_path)
    try:
        run = run_plugin(*args, "--from", "prüfung@example.test")
    finally:
        close()
    assert run.returncode == 2, run.describe()
    assert run.first_line.split(" | ")[0] == (
        "EMAIL_ROUNDTRIP CRITICAL - SMTP MAIL FROM impossible: the addresses "
        "are not ASCII and the server offers no SMTPUTF8"
    )
