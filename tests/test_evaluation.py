"""Facts -> states, first line and perfdata, without any server (fake outcomes)."""

import pytest
from nagiosplugin.state import Critical, Ok, Unknown, Warn

from check_email_roundtrip.check import SECONDS_LABELS, build_check
from check_email_roundtrip.cli import parse_settings
from check_email_roundtrip.errors import Phase, ProbeError, RunTimeout
from check_email_roundtrip.facts import (
    Arrival,
    ImapTimings,
    RoundtripResult,
    SmtpTimings,
    SubmitResult,
    WatchKind,
)
from check_email_roundtrip.smtp import Submission


@pytest.fixture(autouse=True)
def password_env(monkeypatch):
    monkeypatch.setenv("CHECK_EMAIL_ROUNDTRIP_SMTP_PASSWORD", "pw")


def settings(*extra):
    return parse_settings(["-H", "mail.example.test", "--smtp-user", "probe@example.test", *extra])


def delivered(roundtrip=0.142, auth=0.02, connect=0.0101):
    return RoundtripResult(
        marker="m",
        smtp=SmtpTimings(connect=connect, starttls=0.03, auth=auth, submit=0.04, total=0.1),
        submission=Submission("250 2.0.0 Ok: queued as 4ABC", "4ABC", mail_from_at=1.0, mail_from_wall=1.0),
        imap=ImapTimings(connect=0.01, login=0.01, select=0.001, search=0.0004, fetch=0.001, searches=4),
        arrival=Arrival("INBOX", WatchKind.TARGET, 7, roundtrip, b"") if roundtrip is not None else None,
    )


def evaluate(result, *extra):
    check = build_check(settings("--no-state", *extra), result)
    check()
    return check


def perfdata(check):
    return dict(item.split("=", 1) for item in check.perfdata)


def test_ok_round_trip_has_every_label_and_thresholds():
    check = evaluate(delivered())
    assert check.state == Ok
    assert check.summary_str == "round trip 0.142 s (INBOX, queued as 4ABC)"
    data = perfdata(check)
    assert set(data) == set(SECONDS_LABELS) - {
        "age",
        "oauth_token",
    } | {"hops"}  # poll mode's; only when a token was fetched; a header without Received: no hop_max
    assert data["hops"] == "0;;;0"
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
    outcome = RoundtripResult(
        "m",
        SmtpTimings(connect=0.01, starttls=0.02),
        error=ProbeError(Phase.SMTP_AUTH, "rejected", 535, "5.7.8 Error: authentication\r\n failed"),
    )
    check = evaluate(outcome)
    assert check.state == Critical
    assert check.summary_str == "SMTP AUTH rejected: 535 5.7.8 Error: authentication failed"
    assert set(perfdata(check)) == {"smtp_connect", "smtp_starttls"}  # what did complete


def test_not_delivered_is_critical_with_wait_and_queue_id():
    outcome = delivered(roundtrip=None)
    outcome = outcome._replace(imap=outcome.imap._replace(search=None), not_delivered_within=12.0)
    check = evaluate(outcome)
    assert check.state == Critical
    assert check.summary_str == "not delivered within 12 s (queued as 4ABC)"
    assert "roundtrip" not in perfdata(check)


def test_timeout_is_unknown_and_names_the_stage():
    check = evaluate(RoundtripResult("m", SmtpTimings(), stopped=RunTimeout(Phase.SMTP_DATA, 10)))
    assert check.state == Unknown
    assert check.summary_str == "timeout: -t 10 s reached during SMTP DATA"


def test_insecure_is_said_in_the_first_line():
    check = evaluate(delivered(), "--insecure")
    assert check.summary_str.endswith("TLS NOT VERIFIED (--insecure)")
    assert not check.verbose_str  # said once, on the line everybody reads


def test_submit_mode_thresholds_apply_to_the_smtp_session():
    roundtrip = delivered()
    outcome = SubmitResult("m", roundtrip.smtp, roundtrip.submission)
    check = evaluate(outcome, "--mode", "submit", "-w", "0.05")
    assert check.state == Warn
    assert check.summary_str.startswith("smtp_total 0.100 s")
    assert evaluate(outcome, "--mode", "submit").summary_str == "submitted in 0.100 s, queued as 4ABC"


def test_several_problems_each_get_a_long_output_line():
    outcome = delivered(auth=1.5, connect=2.5)
    check = evaluate(outcome)
    assert sorted(check.verbose_str) == [
        "smtp_auth 1.500 s (outside range 0:1)",
        "smtp_connect 2.500 s (outside range 0:2)",
    ]


# -- the receiver's verdicts ----------------------------------------------------------
HEADERS = __import__("pathlib").Path(__file__).parent / "headers"


def with_verdicts(header: bytes, *extra, outcome=None):
    from check_email_roundtrip.verdicts import read_verdicts

    outcome = outcome or delivered()
    outcome = outcome._replace(verdicts=read_verdicts(header, settings(*extra).verdicts.authserv_id))
    return evaluate(outcome, *extra)


def rspamd_header(spf="pass", dkim="pass", dmarc="pass") -> bytes:
    return (
        "Authentication-Results: mx.example.test;\r\n"
        f"\tdkim={dkim} header.d=example.test header.s=s2026 header.b=ABCdef12;\r\n"
        f"\tspf={spf} (mx.example.test: domain of probe@example.test designates 127.0.0.1 "
        "as permitted sender)"
        " smtp.mailfrom=probe@example.test;\r\n"
        f"\tdmarc={dmarc} (policy=quarantine) header.from=example.test\r\n"
        "Subject: probe\r\n\r\n"
    ).encode()


def test_all_pass_is_ok_with_one_line_per_method_and_perfdata():
    check = with_verdicts(rspamd_header())
    assert check.state == Ok
    assert check.verbose_str == [
        "spf=pass (smtp.mailfrom=probe@example.test)",
        "dkim=pass (header.d=example.test, header.s=s2026)",
        "dmarc=pass (p=quarantine, header.from=example.test)",
    ]
    data = perfdata(check)
    assert (data["auth_spf"], data["auth_dkim"], data["auth_dmarc"]) == ("1;;;0;1",) * 3
    assert "auth_arc" not in data  # not evaluated: no line, no metric


@pytest.mark.parametrize(
    "verdicts, state, first_line",
    [
        (dict(dkim="none"), Warn, "dkim=none (header.d=example.test, header.s=s2026)"),
        (dict(spf="fail"), Warn, 'spf=fail (smtp.mailfrom=probe@example.test, "mx.example.test: domain of'),
        (dict(spf="softfail"), Warn, "spf=softfail"),
        (
            dict(spf="fail", dkim="fail", dmarc="fail"),
            Critical,
            "dmarc=fail (p=quarantine, header.from=example.test)",
        ),
        (dict(dmarc="temperror"), Warn, "dmarc=temperror"),
    ],
)
def test_default_policy(verdicts, state, first_line):
    check = with_verdicts(rspamd_header(**verdicts))
    assert check.state == state
    assert check.summary_str.startswith(first_line)
    method = next(iter(verdicts))
    assert perfdata(check)[f"auth_{method}"] == "0;;;0;1"


def test_policy_option_changes_or_ignores_a_method():
    header = rspamd_header(spf="fail", dkim="fail", dmarc="fail")
    assert with_verdicts(header, "--auth-policy", "dmarc=warning").state == Warn
    check = with_verdicts(
        header, "--auth-policy", "dmarc=ignore", "--auth-policy", "spf=ok", "--auth-policy", "dkim:fail=ok"
    )
    assert check.state == Ok
    assert "dmarc=fail (p=quarantine, header.from=example.test)" in check.verbose_str  # still reported
    assert (
        with_verdicts(rspamd_header(spf="softfail"), "--auth-policy", "spf:softfail=critical").state
        == Critical
    )


def test_no_header_from_the_receiver_is_a_warning_with_that_reason():
    check = with_verdicts(b"Subject: probe\r\n\r\n")
    assert check.state == Warn
    assert check.summary_str == "no Authentication-Results header from the receiver"
    assert (
        with_verdicts(
            b"Subject: probe\r\n\r\n",
            "--auth-policy",
            "header=ignore",
            "--auth-policy",
            "spf=ignore",
            "--auth-policy",
            "dkim=ignore",
            "--auth-policy",
            "dmarc=ignore",
        ).state
        == Ok
    )


def test_forged_header_below_the_receivers_is_ignored():
    forged = (
        b"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=x; dkim=pass header.d=x; "
        b"dmarc=pass header.from=x\r\n"
    )
    header = rspamd_header(spf="fail", dkim="fail", dmarc="fail").replace(b"Subject", forged + b"Subject")
    check = with_verdicts(header)
    assert check.state == Critical and check.summary_str.startswith("dmarc=fail")


def test_authserv_id_trusts_only_that_receiver_even_when_not_topmost():
    other = (
        b"Authentication-Results: relay.example.net; spf=fail smtp.mailfrom=x; dkim=fail header.d=x; "
        b"dmarc=fail header.from=x\r\n"
    )
    check = with_verdicts(other + rspamd_header(), "--authserv-id", "mx.example.test")
    assert check.state == Ok
    check = with_verdicts(other + rspamd_header())  # default: the topmost one
    assert check.state == Critical


@pytest.mark.parametrize(
    "name, authserv_id, expected",
    [
        (
            "gmail.txt",
            None,
            [
                "spf=pass (smtp.mailfrom=probe@example.com)",
                "dkim=pass (header.i=@example.com, header.s=s2026)",
                "dmarc=pass (p=quarantine, header.from=example.com)",
                "arc=pass",
            ],
        ),
        (
            "microsoft365.txt",
            None,
            [
                "spf=pass (smtp.mailfrom=example.com)",
                "dkim=pass (header.d=example.com)",
                "dmarc=pass (header.from=example.com)",
            ],
        ),
        (
            "fastmail.txt",
            None,
            [
                "spf=pass (smtp.mailfrom=probe@example.com, smtp.helo=out1-smtp.messagingengine.com)",
                "dkim=pass (header.d=example.com, header.i=@example.com, header.a=rsa-sha256, header.s=fm2)",
                "dmarc=pass (p=none, policy.published-domain-policy=none, policy.applied-disposition=none, "
                "policy.evaluated-disposition=none, policy.policy-from=p, header.from=example.com)",
            ],
        ),
        (
            "rspamd.txt",
            None,
            [
                "spf=pass (smtp.mailfrom=probe@example.test)",
                "dkim=pass (header.d=example.test, header.s=s2026)",
                "dmarc=pass (p=quarantine, header.from=example.test)",
            ],
        ),
        (
            "opendkim_opendmarc.txt",
            "mail.example.org",
            [
                "spf=softfail (smtp.mailfrom=example.com)",
                "dkim=pass (header.d=example.com, header.i=@example.com)",
                "dmarc=fail (p=quarantine, header.from=example.com)",
            ],
        ),
        (
            # no authserv-id, and a semicolon after the last result
            "microsoft365_trailing_semicolon.txt",
            None,
            [
                "spf=pass (smtp.mailfrom=example.com)",
                "dkim=pass (header.d=example.com)",
                "dmarc=pass (header.from=example.com)",
            ],
        ),
        (
            # "pass(p=...)" without a space, a bare "name=value", a trailing semicolon
            "yahoo.txt",
            None,
            [
                "spf=pass (smtp.mailfrom=example.com)",
                "dkim=pass (header.i=@example.com, header.s=s2026)",
                "dmarc=pass (p=quarantine, header.from=example.com)",
            ],
        ),
        (
            # Exchange Online Protection in front of Exchange on-premises: no
            # authserv-id, the recipient's domain between the results
            "exchange_onprem.txt",
            None,
            [
                "spf=pass (smtp.mailfrom=example.com)",
                'dkim=none (header.d=none, "message not signed")',
                "dmarc=bestguesspass (header.from=example.com)",
            ],
        ),
        (
            # RFC 8616: UTF-8 in the authserv-id, in values and in comments
            "utf8.txt",
            "mx.exämple.org",
            [
                "spf=pass (smtp.mailfrom=jörg@exämple.com)",
                'dkim=fail (header.d=exämple.com, header.s=s2026, "Signatur ungültig; Körper verändert")',
                "dmarc=pass (p=reject, header.from=exämple.com)",
            ],
        ),
    ],
)
def test_recorded_headers_from_real_receivers(name, authserv_id, expected):
    header = (HEADERS / name).read_bytes().replace(b"\n", b"\r\n") + b"\r\n"
    check = with_verdicts(header, *(["--authserv-id", authserv_id] if authserv_id else []))
    assert check.verbose_str == expected


@pytest.mark.parametrize(
    "name, state, summary",
    [
        ("microsoft365_trailing_semicolon.txt", Ok, "round trip 0.142 s (INBOX, queued as 4ABC)"),
        ("yahoo.txt", Ok, "round trip 0.142 s (INBOX, queued as 4ABC)"),
        ("exchange_onprem.txt", Warn, 'dkim=none (header.d=none, "message not signed")'),
        ("utf8.txt", Warn, "dkim=fail (header.d=exämple.com"),
    ],
)
def test_recorded_headers_give_the_state_of_their_verdicts(name, state, summary):
    header = (HEADERS / name).read_bytes().replace(b"\n", b"\r\n") + b"\r\n"
    check = with_verdicts(header)
    assert check.state == state
    assert check.summary_str.startswith(summary)


@pytest.mark.parametrize(
    "value",
    [
        "mx.example.test; spf=pass smtp.mailfrom=a@example.test; dkim=pass header.d=example.test;",
        "mx.example.test; spf=pass smtp.mailfrom=a@example.test;; dkim=pass header.d=example.test",
        "mx.example.test;spf=pass smtp.mailfrom=a@example.test ; ;dkim=pass header.d=example.test ;;",
        "mx.example.test;\r\n\tspf=pass\r\n\tsmtp.mailfrom=a@example.test;\r\n"
        "\tdkim=pass header.d=example.test;",
        "spf=pass smtp.mailfrom=a@example.test;dkim=pass header.d=example.test;",
        "spf=pass\tsmtp.mailfrom=a@example.test;;\r\n dkim=pass header.d=example.test ;",
        "spf=pass smtp.mailfrom=a@example.test; example.test; dkim=pass header.d=example.test;example.test;",
    ],
)
def test_separators_as_receivers_write_them(value):
    from check_email_roundtrip.verdicts import read_verdicts

    auth = read_verdicts(f"Authentication-Results: {value}\r\nSubject: x\r\n\r\n".encode())
    assert auth.malformed is None
    assert [auth.verdicts[method].line() for method in ("spf", "dkim")] == [
        "spf=pass (smtp.mailfrom=a@example.test)",
        "dkim=pass (header.d=example.test)",
    ]
    assert auth.authserv_id == ("mx.example.test" if value.startswith("mx") else None)


def test_result_words_alone_are_results_not_an_authserv_id():
    from check_email_roundtrip.verdicts import read_verdicts

    auth = read_verdicts(b"Authentication-Results: spf=pass; dkim=pass; dmarc=pass\r\n\r\n")
    assert auth.authserv_id is None
    assert [auth.verdicts[m].result for m in ("spf", "dkim", "dmarc")] == ["pass", "pass", "pass"]


@pytest.mark.parametrize(
    "value, reason",
    [
        ("mx.example.test; dkim=garbage header.d=example.test;", "dkim=garbage is not an RFC 8601 result"),
        ("mx.example.test; spf=pass; dkim=dkim_pass;", "dkim=dkim_pass is not an RFC 8601 result"),
        ("spf=pass smtp.mailfrom=a@example.test; dmarc=success;", "dmarc=success is not an RFC 8601 result"),
        ("mx.example.test; dkim=;", "Syntax error: Expected result"),
        ("; spf=pass", "Syntax error: Expected authserv-id"),
        ("spf=pass; x y z;", 'Syntax error: Expected "="'),
        ("mx.example.test; spf=pass (unclosed; dkim=pass", "Syntax error: comment"),
    ],
)
def test_garbage_between_separators_stays_malformed(value, reason):
    check = with_verdicts(f"Authentication-Results: {value}\r\nSubject: x\r\n\r\n".encode())
    assert check.state == Warn
    assert check.summary_str.startswith(
        f"the receiver's Authentication-Results header does not parse: {reason}"
    )


def test_header_without_authserv_id_is_trusted_as_the_topmost_only():
    from check_email_roundtrip.verdicts import read_verdicts

    microsoft = (HEADERS / "microsoft365_trailing_semicolon.txt").read_bytes().replace(b"\n", b"\r\n")
    below = read_verdicts(rspamd_header(spf="fail").replace(b"Subject", microsoft + b"Subject"))
    assert below.verdicts["spf"].result == "fail"
    assert below.ignored == ("header 2 without authserv-id (not the topmost)",)
    on_top = read_verdicts(microsoft + rspamd_header(spf="fail"))
    assert on_top.verdicts["spf"].result == "pass" and on_top.authserv_id is None
    assert on_top.sender_ip == "192.0.2.58"
    named = read_verdicts(microsoft + b"\r\n", "mx.example.test")
    assert not named.header_found and named.verdicts["spf"].result == "missing"
    assert named.ignored == (
        "header 1 without authserv-id (--authserv-id mx.example.test trusts only headers carrying it)",
    )
    two = read_verdicts(microsoft + microsoft.replace(b"dkim=pass", b"arc=pass") + b"\r\n")
    assert two.ignored == ("header 2 without authserv-id (not the topmost)",)


def test_unquoted_ipv6_property_value_parses():
    from check_email_roundtrip.verdicts import read_verdicts

    auth = read_verdicts(
        b"Authentication-Results: mx.example.test; iprev=pass smtp.remote-ip=2001:db8::25 (relay);"
        b" spf=pass smtp.mailfrom=a@example.test\r\n\r\n"
    )
    assert auth.malformed is None and auth.verdicts["spf"].passed
    assert auth.sender_ip == "2001:db8::25"


def test_policy_can_name_microsofts_bestguesspass():
    header = (HEADERS / "exchange_onprem.txt").read_bytes().replace(b"\n", b"\r\n") + b"\r\n"
    check = with_verdicts(header, "--auth-policy", "dkim=ok", "--auth-policy", "dmarc:bestguesspass=ok")
    assert check.state == Ok


def test_split_headers_without_authserv_id_trust_the_topmost_and_say_how_to_trust_the_rest():
    from check_email_roundtrip.verdicts import read_verdicts

    auth = read_verdicts((HEADERS / "opendkim_opendmarc.txt").read_bytes())
    assert auth.verdicts["dmarc"].result == "fail" and auth.verdicts["spf"].result == "missing"
    assert auth.ignored[0] == (
        "header 2 from mail.example.org (not the topmost; if the receiver writes one header per "
        "method, --authserv-id mail.example.org trusts them all)"
    )


def test_forged_header_repeating_the_receivers_methods_is_called_so():
    from check_email_roundtrip.verdicts import read_verdicts

    forged = (
        b"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=x; dkim=pass header.d=x; "
        b"dmarc=pass header.from=x\r\n"
    )
    auth = read_verdicts(rspamd_header(spf="fail").replace(b"Subject", forged + b"Subject"))
    assert auth.ignored == (
        "header 2 from mx.example.test (not the topmost; repeats the receiver's methods: possibly forged)",
    )


def test_receiver_comment_is_shown_for_a_non_pass_verdict_only():
    from check_email_roundtrip.verdicts import read_verdicts

    header = (
        b'Authentication-Results: mx.example.test; dkim=none ("invalid DKIM record") header.d=example.test '
        b"header.s=s2026 header.b=x; spf=pass (mx: designates 127.0.0.1 as permitted sender) "
        b"smtp.mailfrom=a@example.test; "
        b'dmarc=fail reason="No valid SPF" header.from=example.test (policy=reject)\r\n\r\n'
    )
    auth = read_verdicts(header)
    assert (
        auth.verdicts["dkim"].line()
        == 'dkim=none (header.d=example.test, header.s=s2026, "invalid DKIM record")'
    )
    assert auth.verdicts["spf"].line() == "spf=pass (smtp.mailfrom=a@example.test)"
    assert (
        auth.verdicts["dmarc"].line()
        == 'dmarc=fail (p=reject, reason="No valid SPF", header.from=example.test)'
    )
    assert auth.sender_ip == "127.0.0.1"


@pytest.mark.parametrize(
    "value",
    [
        "mx.example.test; dkim=",
        "((((",
        "mx; spf=pass (unclosed comment",
        "mx.example.test; =pass",
        "",
        ";;;;",
    ],
)
def test_malformed_header_is_reported_not_a_crash(value):
    check = with_verdicts(f"Authentication-Results: {value}\r\nSubject: x\r\n\r\n".encode())
    assert check.state == Warn
    assert check.summary_str.startswith(
        "the receiver's Authentication-Results header does not parse: Syntax error"
    )


def test_world_readable_password_file_makes_an_ok_run_a_warning(tmp_path):
    path = tmp_path / "pw"
    path.write_text("pw\n")
    path.chmod(0o644)
    check = evaluate(delivered(), "--smtp-password-file", str(path))
    assert check.state == Warn
    assert check.summary_str == f"SMTP password file {path} is readable by every user (chmod o-r)"


@pytest.mark.parametrize(
    "first_word, ours",
    [("mx.example.test;", True), ("mx.example.test ", True), ("mx.example.test.evil;", False)],
)
def test_a_malformed_header_is_the_receivers_only_when_it_starts_with_its_whole_id(first_word, ours):
    """With --authserv-id, a header that does not parse is the receiver's (and
    reported malformed) only when the id stands as a whole word at its start."""
    from check_email_roundtrip.verdicts import read_verdicts

    auth = read_verdicts(
        f"Authentication-Results: {first_word} dkim=\r\nSubject: x\r\n\r\n".encode(), "mx.example.test"
    )
    assert bool(auth.malformed) is ours
