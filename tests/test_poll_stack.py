"""Poll mode against the real stack: mail somebody else sends."""

import secrets
import smtplib
import ssl
import time
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage

from conftest import assert_state, run_plugin
from mailstack import IMAPS_PORT, SUBMISSION_PORT


def poll_args(stack, *extra):
    return [
        "--mode",
        "poll",
        "-H",
        "localhost",
        "--ca-file",
        stack.ca,
        "--imap-port",
        str(IMAPS_PORT),
        "--imap-user",
        stack.address("probe"),
        "--imap-password-file",
        stack.password_file("probe"),
        *extra,
    ]


def deliver_report(stack, subject, sender="backup@example.test"):
    """Somebody else's mail: a report sent by the test through the real relay."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, stack.address("probe"), subject
    message.set_content("backup finished\n")
    with smtplib.SMTP("localhost", SUBMISSION_PORT, timeout=10) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=stack.ca))
        smtp.login(stack.address("probe"), open(stack.password_file("probe")).read().strip())
        smtp.send_message(message, from_addr=stack.address("probe"))


def wait_until_polled_ok(stack, *args):
    deadline = time.monotonic() + 10
    while True:
        run = run_plugin(*poll_args(stack, *args))
        if run.returncode == 0 or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def test_poll_finds_a_delivered_report(stack):
    subject = f"Nightly backup report {secrets.token_hex(4)}"
    deliver_report(stack, subject)
    run = wait_until_polled_ok(
        stack, "--subject", subject, "--sender", "backup@example.test", "-w", "3600", "-c", "7200"
    )
    assert_state(
        run,
        0,
        "OK",
        f'EMAIL_ROUNDTRIP OK - newest message matching subject "{subject}" and sender '
        f'"backup@example.test" arrived ',
    )
    assert run.perfdata["matches"] == 1 and 0 <= run.perfdata["age"] < 60
    assert set(run.perfdata) == {"age", "matches", "imap_cert_days"}


def test_poll_age_over_threshold(stack):
    subject = f"Weekly report {secrets.token_hex(4)}"
    deliver_report(stack, subject)
    wait_until_polled_ok(stack, "--subject", subject)
    time.sleep(1.1)
    run = run_plugin(*poll_args(stack, "--subject", subject, "-w", "1", "-c", "3600"))
    assert_state(run, 1, "WARNING", "EMAIL_ROUNDTRIP WARNING - age ")


def test_poll_with_no_match_is_critical(stack):
    run = run_plugin(*poll_args(stack, "--subject", f"never sent {secrets.token_hex(4)}", "--window", "3600"))
    assert_state(run, 2, "CRITICAL", 'EMAIL_ROUNDTRIP CRITICAL - no message matching subject "never sent ')
    assert " since 20" in run.first_line and set(run.perfdata) == {"matches", "imap_cert_days"}
    assert run.perfdata["matches"] == 0


def test_poll_ignores_matches_older_than_the_window(stack):
    subject = f"Old report {secrets.token_hex(4)}"
    raw = f"From: backup@example.test\r\nTo: probe@example.test\r\nSubject: {subject}\r\n\r\nold\r\n".encode()
    stack.append_message("probe", "INBOX", raw, datetime.now(timezone.utc) - timedelta(hours=3))
    run = run_plugin(*poll_args(stack, "--subject", subject, "--window", "3600"))
    assert_state(run, 2, "CRITICAL", "no message matching")
    run = run_plugin(*poll_args(stack, "--subject", subject, "--window", str(4 * 3600)))
    assert_state(run, 0, "OK")
    assert 3 * 3600 - 60 < run.perfdata["age"] < 3 * 3600 + 60


def test_poll_header_criterion(stack):
    marker = secrets.token_hex(4)
    raw = (
        f"From: saas@example.net\r\nTo: probe@example.test\r\nSubject: Notification\r\n"
        f"X-Saas-Job: job-{marker}\r\n\r\nhello\r\n"
    ).encode()
    stack.append_message("probe", "INBOX", raw, datetime.now(timezone.utc))
    run = run_plugin(*poll_args(stack, "--header", f"X-Saas-Job: job-{marker}"))
    assert_state(run, 0, "OK", f'matching X-Saas-Job "job-{marker}"')


def test_poll_needs_a_criterion(stack):
    run = run_plugin(*poll_args(stack))
    assert_state(run, 3, "UNKNOWN", "poll mode needs at least one of --subject, --sender, --header")
