"""Where else the probe can end up, and clean-up, against the real stack."""

import secrets
from datetime import datetime, timedelta, timezone

from conftest import assert_state, run_plugin
from test_roundtrip_stack import implicit_tls_args


def test_probe_filed_into_junk_is_a_warning_with_the_round_trip(stack):
    # a sieve rule files mail for +junk into the \Junk special-use folder
    run = run_plugin(*implicit_tls_args(stack, "probe", "--to", "probe+junk@example.test", "--wait", "20"))
    assert_state(run, 1, "WARNING", 'EMAIL_ROUNDTRIP WARNING - delivered to Junk folder "Junk" after ')
    assert 0 < run.perfdata["roundtrip"] < 20
    assert "imap_retrieval" in run.perfdata  # measured on the Junk folder's session


def test_junk_state_is_configurable(stack):
    run = run_plugin(
        *implicit_tls_args(stack, "probe", "--to", "probe+junk@example.test", "--junk-state", "critical")
    )
    assert_state(run, 2, "CRITICAL", "delivered to Junk folder")


def test_without_junk_watch_a_probe_in_junk_is_not_delivered(stack):
    run = run_plugin(
        *implicit_tls_args(stack, "probe", "--to", "probe+junk@example.test", "--no-junk", "--wait", "2")
    )
    assert_state(run, 2, "CRITICAL", "not delivered within 2 s")


def test_bounce_for_an_unknown_user_is_critical_well_before_wait(stack):
    run = run_plugin(
        *implicit_tls_args(
            stack, "probe", "--to", "nobody@example.test", "--bounce-folder", "INBOX", "--wait", "60"
        )
    )
    assert_state(run, 2, "CRITICAL", "EMAIL_ROUNDTRIP CRITICAL - bounced after ")
    assert "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown" in run.first_line
    assert "(status 5.1.1, nobody@example.test)" in run.first_line
    assert run.seconds < 10  # not the 60 s --wait


def test_bounce_folder_of_another_mailbox(stack):
    # the sender's bounces are read with their own login (--bounce-user)
    run = run_plugin(
        *implicit_tls_args(
            stack,
            "probe",
            "--to",
            "nobody@example.test",
            "--bounce-folder",
            "INBOX",
            "--bounce-user",
            stack.address("probe"),
            "--bounce-password-file",
            stack.password_file("probe"),
            "--imap-user",
            stack.address("other"),
            "--imap-password-file",
            stack.password_file("other"),
            "--wait",
            "60",
        )
    )
    assert_state(run, 2, "CRITICAL", "bounced after ")
    assert run.seconds < 10


def test_cleanup_deletes_this_runs_message(stack):
    before = set(stack.folder_uids("probe", "INBOX", "SUBJECT emailrtprobe"))
    run = run_plugin(*implicit_tls_args(stack, "probe", "--cleanup", "-v"))
    assert_state(run, 0, "OK")
    assert "deleted this run's message: done" in run.lines
    assert set(stack.folder_uids("probe", "INBOX", "SUBJECT emailrtprobe")) <= before


def test_purge_removes_only_old_probe_messages(stack):
    old = datetime.now(timezone.utc) - timedelta(days=10)

    def append(subject, when):
        raw = f"From: probe@example.test\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()
        return stack.append_message("probe", "INBOX", raw, when)

    old_probe = append(f"check_email_roundtrip probe emailrtprobe{secrets.token_hex(12)}", old)
    old_other = append("emailrtprobe is our marker prefix (not a probe)", old)
    old_plain = append("Quarterly figures", old)
    fresh_probe = append(
        f"check_email_roundtrip probe emailrtprobe{secrets.token_hex(12)}", datetime.now(timezone.utc)
    )
    run = run_plugin(*implicit_tls_args(stack, "probe", "--purge-older-than", "5", "-v"))
    assert_state(run, 0, "OK")
    remaining = set(stack.folder_uids("probe", "INBOX"))
    assert old_probe not in remaining
    assert {old_other, old_plain, fresh_probe} <= remaining
    assert any(
        line.startswith("purged ") and line.endswith("older than 5 days from INBOX") for line in run.lines
    )
