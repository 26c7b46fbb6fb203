"""Hardening on the monitoring host's side: the state file and its lock,
password files that are not files, option values that overflow or carry
line breaks, the secrets filter, SIGTERM.  Each row a state and one line in
the user's terms, within -t plus at most 1 s.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import assert_state, run_plugin
from fakes import ImapFake, Mailbox, SmtpFake, fake_args, password_file
from test_roundtrip_stack import implicit_tls_args

from check_email_roundtrip import mask

NOBODY = 65534  # another user (Debian's nobody)
PASSWD = "root:x:0:0:root:/root:/bin/bash\n"


@pytest.fixture
def password(tmp_path):
    return password_file(tmp_path)


def _roundtrip(password, state, *extra):
    box = Mailbox()
    with SmtpFake(box) as smtp, ImapFake(box) as imap:
        return run_plugin(*fake_args(smtp, imap, password, "-t", "5", "--state-file", str(state), *extra))


# -- 1. the state file: never through a link, never over what is not ours ------------------------------
def test_a_state_file_that_is_not_ours_gets_no_lock_beside_it(password, tmp_path):
    victim = tmp_path / "passwd"  # a mistyped --state-file /etc/passwd
    victim.write_text(PASSWD)
    run = _roundtrip(password, victim)
    assert_state(run, 1, "WARNING", f"state file {victim} is not a state file of check_email_roundtrip")
    assert victim.read_text() == PASSWD
    # passwd.lock is the lock of shadow's tools: an empty one stops useradd and passwd
    assert sorted(path.name for path in tmp_path.iterdir()) == ["passwd", "password"]


def test_a_symlink_owned_by_another_user_is_never_followed(password, tmp_path):
    victim = tmp_path / "passwd"
    victim.write_text(PASSWD)
    link = tmp_path / "state.json"
    link.symlink_to(victim)
    os.lchown(link, NOBODY, NOBODY)
    run = _roundtrip(password, link)
    assert_state(run, 1, "WARNING", f"state file {link} belongs to another user: left alone")
    assert victim.read_text() == PASSWD and link.is_symlink() and os.lstat(link).st_uid == NOBODY
    assert not (tmp_path / "state.json.lock").exists()


def test_a_state_file_owned_by_another_user_is_left_alone(password, tmp_path):
    theirs = tmp_path / "state.json"
    content = json.dumps({"format": "check_email_roundtrip state", "version": 2, "pending": []})
    theirs.write_text(content)
    os.chown(theirs, NOBODY, NOBODY)
    run = _roundtrip(password, theirs)
    assert_state(run, 1, "WARNING", f"state file {theirs} belongs to another user: left alone")
    assert theirs.read_text() == content and theirs.stat().st_uid == NOBODY


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e308", '"soon"', "null"])
def test_a_state_entry_with_a_time_that_makes_no_sense_is_dropped(password, tmp_path, value):
    state = tmp_path / "state.json"
    entry = '{"marker": "emailrtprobe' + "c" * 24 + '", "sent_at": ' + value + "}"
    state.write_text('{"format": "check_email_roundtrip state", "version": 2, "pending": [' + entry + "]}")
    run = _roundtrip(password, state)
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
    assert f"state file {state}: dropped 1 entries that made no sense" in run.lines, run.stdout
    assert json.loads(state.read_text())["pending"] == []


# -- 6. a lock held by another process, a FIFO or /dev/zero as password file --------------------------
def test_a_state_lock_held_by_another_process_is_waited_for_one_step_only(stack, tmp_path):
    state = tmp_path / "state.json"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
            str(state) + ".lock",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        run = run_plugin(
            *implicit_tls_args(stack, "probe", "--state-file", str(state), "--step-timeout", "1")
        )
    finally:
        holder.kill()
        holder.wait()
    assert_state(
        run,
        1,
        "WARNING",
        f"state file {state} cannot be used (its lock is held by another run): no memory across runs",
    )
    assert run.seconds < 1 + 2, run.describe()  # one step of waiting, then the round trip


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "directory"])
def test_a_password_file_that_is_not_a_file_is_refused_at_once(tmp_path, kind):
    path = {"fifo": str(tmp_path / "fifo"), "/dev/zero": "/dev/zero", "directory": str(tmp_path)}[kind]
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    started = time.monotonic()
    run = run_plugin(
        "-H", "127.0.0.1", "--smtp-user", "probe@example.test", "--smtp-password-file", path, "-t", "5"
    )  # fmt: skip
    assert_state(run, 3, "UNKNOWN", f"cannot read SMTP password file {path}: is not a regular file")
    assert time.monotonic() - started < 2


def test_a_huge_password_file_is_refused(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * (1024 * 1024))
    big.chmod(0o600)
    run = run_plugin("-H", "127.0.0.1", "--smtp-user", "p@example.test", "--smtp-password-file", str(big))
    assert_state(run, 3, "UNKNOWN", f"cannot read SMTP password file {big}: is larger than 65536 bytes")


# -- 10, 11, 14. option values: overflow, line breaks, ranges that are no ranges --------------------------
@pytest.mark.parametrize(
    "args, says",
    [
        (["-t", "1e10"], "argument -t/--timeout: 1e10 s is more than a year"),
        (["--wait", "1e12"], "argument --wait: 1e12 s is more than a year"),
        (
            ["--mode", "poll", "--subject", "x", "--window", "1e11"],
            "argument --window: 1e11 s is more than a year",
        ),
        (
            ["--purge-older-than", "1e6"],
            "argument --purge-older-than: more days than the calendar can count back",
        ),
        (["-t", "nan"], "argument -t/--timeout: must be a positive number of seconds"),
        (["-w", "@"], "argument -w/--warning: invalid range '@'"),
        (["-w", ":"], "argument -w/--warning: invalid range ':'"),
        (["-c", "1e400"], "argument -c/--critical: invalid range '1e400'"),
        (
            ["--mode", "poll", "--subject", "Backup\r\nA1 DELETE INBOX"],
            "argument --subject: control characters",
        ),
        (["--mode", "poll", "--header", "X-Job:nightly\nA1 LOGOUT"], "argument --header: control characters"),
        (["--imap-user", "probe\r\nA1 DELETE INBOX"], "argument --imap-user: control characters"),
        (["--from", "probe@example.test\r\nRCPT TO:<x@y>"], "argument --from: control characters"),
        (["--imap-folder", "INBOX\x1b[2J"], "argument --imap-folder: control characters"),
    ],
)
def test_option_values_that_cannot_be_used_are_refused_in_one_line(password, args, says):
    run = run_plugin(
        "-H", "127.0.0.1", "--imap-user", "probe@example.test", "--imap-password-file", password,
        "--from", "probe@example.test", *args,
    )  # fmt: skip
    assert_state(run, 3, "UNKNOWN", says)
    assert len(run.lines) == 1 and run.first_line.isprintable() and run.first_line.endswith("(see --help)")


# -- 9. the secrets filter ------------------------------------------------------------------------------
@pytest.fixture
def secrets():
    saved = set(mask._secrets)
    mask._secrets.clear()
    mask._pattern = None
    yield mask.register_secret
    mask._secrets.clear()
    mask._secrets.update(saved)
    mask._pattern = None


def test_mask_every_form_a_secret_comes_back_in(secrets):
    secrets('ab"c\\d  e')
    assert mask.mask('NO LOGIN "u" "ab\\"c\\\\d  e"') == 'NO LOGIN "u" "********"'  # IMAP-quoted
    assert mask.mask('535 ab"c\\d e refused') == "535 ******** refused"  # whitespace collapsed
    assert mask.mask("x YWIiY1xkICBl y") == "x ******** y"  # base64
    assert mask.mask('ab"c\\d  e') == "********"


def test_mask_leaves_words_and_numbers_around_a_short_secret(secrets):
    secrets("0")
    secrets("OK")
    assert mask.mask("250 2.0.0 Ok: queued as 0A0, 0.105 s") == "250 2.0.0 Ok: queued as 0A0, 0.105 s"
    assert mask.mask("/nonexistent OKAY") == "/nonexistent OKAY"
    assert mask.mask("a1 NO password 0 is OK") == "a1 NO password ******** is ********"


# -- 13. SIGTERM during the wait ------------------------------------------------------------------------
@pytest.fixture
def held_queue(stack):
    yield
    stack.delete_held()


def test_sigterm_during_the_wait_is_unknown_and_the_probe_is_remembered(stack, tmp_path, held_queue):
    state = tmp_path / "state.json"
    args = implicit_tls_args(stack, "probe", "--state-file", str(state), "--to", "probe+hold@example.test")
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHECK_EMAIL_ROUNDTRIP")}
    plugin = subprocess.Popen(
        ["check_email_roundtrip", *args, "--wait", "30", "-t", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "XDG_STATE_HOME": str(tmp_path)},
    )
    ends = time.monotonic() + 20
    while not stack.queue_ids("hold") and time.monotonic() < ends:
        time.sleep(0.05)
    assert stack.queue_ids("hold"), "the probe never reached the queue"
    time.sleep(0.2)  # in the wait now
    plugin.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    out, err = plugin.communicate(timeout=10)
    assert time.monotonic() - stopped_at < 1, out
    assert plugin.returncode == 3 and err == "", out + err
    # the wait sleeps between rounds and, each round, searches the folder and
    # asks Junk's UIDNEXT (IMAP STATUS): the signal names one of them
    stages = "waiting for delivery|IMAP SEARCH|IMAP STATUS|IMAP FETCH"
    assert re.match(rf"EMAIL_ROUNDTRIP UNKNOWN - terminated by SIGTERM during ({stages})", out), out
    pending = json.loads(state.read_text())["pending"]
    assert len(pending) == 1 and re.fullmatch(r"emailrtprobe[0-9a-f]{24}", pending[0]["marker"]), pending
    stack.release_held()
    time.sleep(1)
    run = run_plugin(*implicit_tls_args(stack, "probe", "--state-file", str(state)))
    assert_state(run, 0, "OK")
    assert any("arrived late, after " in line for line in run.lines), run.stdout
    assert json.loads(state.read_text())["pending"] == [] and run.perfdata["late"] == 1
