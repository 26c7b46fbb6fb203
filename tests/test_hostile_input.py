"""Property-based: whatever a receiver, a bounce or a server sends, the plugin
gives a state and a line, never an uncaught exception."""

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_dnscheck import TableLookups
from test_evaluation import delivered, evaluate

from check_email_roundtrip.dnscheck import check_records, tag_list
from check_email_roundtrip.dsn import parse_dsn
from check_email_roundtrip.errors import Phase, ProbeError
from check_email_roundtrip.policy import METHODS, RESULT_WORDS
from check_email_roundtrip.smtp import parse_queue_id, refusal
from check_email_roundtrip.verdicts import read_verdicts

HEADER_TEXT = st.text(alphabet=string.printable + "äé€\u2028", max_size=400)
RESINFO = st.builds(
    lambda method, result, comment, props: f"{method}={result}{comment} {props}",
    st.sampled_from(list(METHODS) + ["iprev", "x-foo", "auth", "", "dkim-atps"]),
    st.sampled_from(["pass", "fail", "none", "softfail", "", "PASS", "temperror", "=", "(x)"]),
    st.sampled_from(["", " (comment)", ' ("quoted")', " (unclosed", " ((nested))"]),
    st.text(alphabet=string.ascii_letters + '.=@;"() ', max_size=60),
)


@pytest.fixture(scope="module", autouse=True)
def password_env():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHECK_EMAIL_ROUNDTRIP_SMTP_PASSWORD", "pw")
        yield


SLOW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SLOW
@given(
    st.lists(
        st.one_of(
            HEADER_TEXT,
            st.builds(
                lambda id_, parts: f"{id_}; " + "; ".join(parts),
                st.sampled_from(["mx.example.test", "", "a b", "x;y"]),
                st.lists(RESINFO, max_size=5),
            ),
        ),
        max_size=4,
    ),
    st.one_of(st.none(), st.sampled_from(["mx.example.test", "", "X"])),
)
def test_any_authentication_results_give_a_state_and_a_line(values, authserv_id):
    header = (
        "".join(
            f"Authentication-Results: {value}\r\n".replace("\n", "\n\t").replace("\r\n\t\r\n", "\r\n")
            for value in values
        )
        + "Subject: x\r\n\r\n"
    )
    auth = read_verdicts(header.encode("utf-8", "surrogateescape"), authserv_id)
    assert set(auth.verdicts) == set(METHODS)
    outcome = delivered()._replace(verdicts=auth)
    extra = ["--authserv-id", authserv_id] if authserv_id else []
    check = evaluate(outcome, *extra)
    assert check.summary_str and "\n" not in check.summary_str
    assert all(line and "\n" not in line for line in check.verbose_str or [])


WELL_FORMED_RESINFO = st.builds(
    lambda method, result, comment, props: f"{method}={result}{comment}{props}",
    st.sampled_from(list(METHODS) + ["iprev", "compauth", "x-foo"]),
    st.sampled_from(RESULT_WORDS),
    st.sampled_from(["", " (comment)", "(no space; a semicolon)", ' ("q" (nested))', " (ünïcödé)"]),
    st.sampled_from(["", " header.d=example.test", " smtp.mailfrom=jörg@exämple.test", " action=none"]),
)
SEPARATORS = st.lists(
    st.sampled_from([";", "; ", " ;", ";;", "; ;", ";\r\n\t", ";\r\n ;"]), min_size=8, max_size=8
)


@SLOW
@given(
    st.lists(WELL_FORMED_RESINFO, min_size=1, max_size=6),
    SEPARATORS,
    st.booleans(),
    st.sampled_from(["mx.example.test", "mx.exämple.test", None]),
)
def test_empty_separators_change_no_verdict(results, separators, trailing, authserv_id):
    def header(parts, seps, end):
        value = parts[0] + "".join(sep + part for sep, part in zip(seps, parts[1:])) + end
        return f"Authentication-Results: {value}\r\nSubject: x\r\n\r\n".encode()

    parts = ([authserv_id] if authserv_id else []) + results
    plain = read_verdicts(header(parts, ["; "] * len(parts), ""))
    liberal = read_verdicts(header(parts, separators, separators[-1] if trailing else ""))
    assert plain.malformed is None
    assert liberal == plain


@SLOW
@given(st.binary(max_size=2000))
def test_any_bytes_as_a_bounce_are_a_bounce_or_nothing(raw):
    bounce = parse_dsn(raw)
    assert bounce is None or isinstance(bounce.describe(), str)


@SLOW
@given(st.text(max_size=300), st.sampled_from(["failed", "delayed", "", "FAILED"]), st.text(max_size=80))
def test_dsn_fields_of_any_text(diagnostic, action, status):
    body = (
        f"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n"
        f"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        f"Action: {action}\r\nStatus: {status}\r\nDiagnostic-Code: smtp; {diagnostic}\r\n\r\n--b--\r\n"
    )
    bounce = parse_dsn(body.encode("utf-8", "surrogateescape"))
    assert bounce is None or bounce.describe()


@SLOW
@given(st.integers(min_value=-1, max_value=999), st.text(max_size=500))
def test_any_smtp_reply_makes_a_one_line_error(code, text):
    error = ProbeError(Phase.SMTP_RCPT, refusal(code), code, text)
    line = str(error)
    assert line.startswith("SMTP RCPT TO ") and "\n" not in line and "\r" not in line
    parse_queue_id(text)  # never raises


@SLOW
@given(st.text(max_size=300))
def test_any_dkim_or_dmarc_record_text_parses_to_tags(text):
    tags = tag_list(text)
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in tags.items())


SPF_ARGUMENT = st.one_of(
    st.sampled_from(
        [
            "",
            ":example.test",
            ":b.example.test",
            "=b.example.test",
            "=example.test",
            ":",
            "=",
            "/33",
            "/24//64",
            "//200",
            ":/abc",
            ":1.2.3.4/99",
            ":127.0.0.1",
            ":zz::/200",
            ":::1/64",
            ":%{i}.x.example.test",
            ":%{z}",
            ":a..b",
            ":b.example.test/0",
        ]
    ),
    st.text(max_size=15),
)
SPF_TERM = st.builds(
    lambda qualifier, name, argument: qualifier + name + argument,
    st.sampled_from(["", "+", "-", "~", "?", "!"]),
    st.sampled_from(
        ["all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists", "redirect", "exp", "x", "A"]
    ),
    SPF_ARGUMENT,
)
SPF_RECORD = st.one_of(
    st.builds(
        lambda terms: " ".join(["v=spf1", *terms]), st.lists(st.one_of(SPF_TERM, st.text(max_size=20)))
    ),
    st.text(max_size=200),
)
SENDER_IP = st.one_of(
    st.none(),
    st.sampled_from(
        ["127.0.0.1", "::1", "::ffff:127.0.0.1", "999.1.1.1", "foo", "fe80::1%eth0", "1.2.3.4/8"]
    ),
    st.text(max_size=40),
)
DNS_TABLES = dict(
    a={"example.test": ["127.0.0.1"], "b.example.test": ["::1", "192.0.2.1"]},
    mx={"example.test": ["b.example.test", "", "."], "b.example.test": ["example.test"]},
)


@SLOW
@given(st.lists(SPF_RECORD, min_size=1, max_size=2), st.lists(SPF_RECORD, max_size=2), SENDER_IP)
def test_any_spf_record_and_sender_ip_give_findings_and_notes(records, included, sender_ip):
    lookups = TableLookups(txt={"example.test": records, "b.example.test": included}, **DNS_TABLES)
    report = check_records(b"From: probe@example.test\r\n\r\n", "probe@example.test", sender_ip, lookups)
    assert all(str(finding) for finding in report.findings)
    assert report.notes[-1].startswith("DNS: ")


@SLOW
@given(
    st.one_of(st.just("v=1; d=example.test; s=s2026; b=x"), HEADER_TEXT),
    st.text(max_size=200),
    st.text(max_size=200),
    st.one_of(st.just("Probe <probe@example.test>"), HEADER_TEXT),
)
def test_any_dkim_and_dmarc_record_or_header_text(signature, dkim_record, dmarc_record, sender):
    block = f"DKIM-Signature: {signature}\r\nFrom: {sender}\r\n\r\n".encode()
    txt = {"s2026._domainkey.example.test": [dkim_record], "_dmarc.example.test": [dmarc_record]}
    report = check_records(block, "probe@example.test", None, TableLookups(txt=txt, **DNS_TABLES))
    assert all(str(finding) for finding in report.findings)


def test_oddly_folded_and_huge_headers():
    folded = (
        b"Authentication-Results:\r\n   mx.example.test\r\n ;\r\n\tdkim\r\n =\r\n pass\r\n"
        b"  header.d=example.test;\r\n spf=pass smtp.mailfrom=a@example.test; "
        b"dmarc=pass header.from=example.test\r\n\r\n"
    )
    auth = read_verdicts(folded)
    assert [auth.verdicts[m].result for m in ("spf", "dkim", "dmarc")] == ["pass", "pass", "pass"]
    huge = (
        b"Authentication-Results: mx.example.test; "
        + b"; ".join(b"x-m%d=pass" % i for i in range(5000))
        + b"; dkim=fail header.d=a\r\n\r\n"
    )
    auth = read_verdicts(huge)
    assert auth.verdicts["dkim"].result == "fail"
