"""Facts -> states, first line and perfdata, without any server (fake outcomes)."""

import pytest
from nagiosplugin.state import Critical, Ok, Unknown, Warn

from check_email_roundtrip.check import PERFDATA, build_check
from check_email_roundtrip.cli import parse_settings
from check_email_roundtrip.errors import Phase, ProbeError, RunTimeout
from check_email_roundtrip.imap import RetrievalTimings
from check_email_roundtrip.probe import ProbeOutcome
from check_email_roundtrip.smtp import SubmissionReceipt, SubmissionTimings


@pytest.fixture(autouse=True)
def password_env(monkeypatch):
    monkeypatch.setenv("CHECK_EMAIL_ROUNDTRIP_SMTP_PASSWORD", "pw")


def settings(*extra):
    return parse_settings(["-H", "mail.example.test", "--smtp-user", "probe@example.test", *extra])


def delivered(roundtrip=0.142, auth=0.02):
    return ProbeOutcome(
        marker="m",
        submission=SubmissionTimings(connect=0.0101, starttls=0.03, auth=auth, submit=0.04, total=0.1, submit_started=1.0),
        receipt=SubmissionReceipt("250 2.0.0 Ok: queued as 4ABC", "4ABC"),
        retrieval=RetrievalTimings(connect=0.01, login=0.01, select=0.001, search=0.0004, fetch=0.001, searches=4),
        roundtrip=roundtrip,
        found_uid=7,
    )


def evaluate(outcome, *extra):
    check = build_check(settings(*extra), lambda _settings, _deadline: outcome)
    check()
    return check


def perfdata(check):
    return dict(item.split("=", 1) for item in check.perfdata)


def test_ok_round_trip_has_every_label_and_thresholds():
    check = evaluate(delivered())
    assert check.state == Ok
    assert check.summary_str == "round trip 0.142 s (INBOX, queued as 4ABC)"
    data = perfdata(check)
    assert set(data) == set(PERFDATA)
    assert data["roundtrip"] == "0.142s;60;300;0"
    assert data["smtp_connect"] == "0.01s;2;;0"  # 3 decimals
    assert data["imap_retrieval"] == "0.022s;3;;0"


@pytest.mark.parametrize("roundtrip, state", [(59.9, Ok), (60.5, Warn), (300.5, Critical)])
def test_round_trip_thresholds(roundtrip, state):
    check = evaluate(delivered(roundtrip=roundtrip))
    assert check.state == state
    if state != Ok:
        assert check.summary_str.startswith(f"roundtrip {roundtrip:.3f} s")


def test_phase_budget_exceeded_is_warning_and_named():
    check = evaluate(delivered(auth=1.5))
    assert check.state == Warn
    assert check.summary_str == "smtp_auth 1.500 s (outside range 0:1)"


def test_phase_budget_can_be_raised_or_made_critical():
    assert evaluate(delivered(auth=1.5), "--phase-warning", "smtp_auth=2").state == Ok
    assert evaluate(delivered(auth=1.5), "--phase-critical", "smtp_auth=1.2").state == Critical


def test_failure_is_critical_with_phase_and_server_reply():
    outcome = ProbeOutcome(submission=SubmissionTimings(connect=0.01, starttls=0.02),
                           error=ProbeError(Phase.SMTP_AUTH, "rejected", 535, "5.7.8 Error: authentication\r\n failed"))
    check = evaluate(outcome)
    assert check.state == Critical
    assert check.summary_str == "SMTP AUTH rejected: 535 5.7.8 Error: authentication failed"
    assert set(perfdata(check)) == {"smtp_connect", "smtp_starttls"}  # what did complete


def test_not_delivered_is_critical_with_wait_and_queue_id():
    outcome = delivered(roundtrip=None)
    outcome.found_uid = None
    outcome.retrieval.search = None
    outcome.not_delivered_within = 12.0
    check = evaluate(outcome)
    assert check.state == Critical
    assert check.summary_str == "not delivered within 12 s (queued as 4ABC)"
    assert "roundtrip" not in perfdata(check)


def test_timeout_is_unknown_and_names_the_stage():
    check = evaluate(ProbeOutcome(timeout=RunTimeout(Phase.SMTP_DATA, 10)))
    assert check.state == Unknown
    assert check.summary_str == "timeout: -t 10 s reached during SMTP DATA"


def test_insecure_is_said_in_the_first_line():
    check = evaluate(delivered(), "--insecure")
    assert check.summary_str.endswith("TLS NOT VERIFIED (--insecure)")
    assert not check.verbose_str  # said once, on the line everybody reads


def test_submit_mode_thresholds_apply_to_the_smtp_session():
    outcome = delivered()
    outcome.roundtrip = None
    outcome.retrieval = None
    check = evaluate(outcome, "--mode", "submit", "-w", "0.05")
    assert check.state == Warn
    assert check.summary_str.startswith("smtp_total 0.100 s")
    assert evaluate(outcome, "--mode", "submit").summary_str == "submitted in 0.100 s, queued as 4ABC"


def test_several_problems_each_get_a_long_output_line():
    outcome = delivered(auth=1.5)
    outcome.submission.connect = 2.5
    check = evaluate(outcome)
    assert sorted(check.verbose_str) == [
        "smtp_auth 1.500 s (outside range 0:1)",
        "smtp_connect 2.500 s (outside range 0:2)",
    ]
