"""DNS drift checks' parsing and counting on a table of records (no server).

The lookups against a real DNS server are in test_verdicts_stack.py.
"""

import pytest

from check_email_roundtrip.dnscheck import (
    _check_dkim_keys,
    _check_dmarc,
    _check_spf,
    _Draft,
    check_records,
    parse_nameserver,
    tag_list,
)


class TableLookups:
    """Stands in for the resolver: TXT, A and MX answers from a dict."""

    where = "table"

    def __init__(self, txt=None, a=None, mx=None):
        self.txt_records, self.a_records, self.mx_records = txt or {}, a or {}, mx or {}
        self.count = 0

    def txt(self, name):
        self.count += 1
        return self.txt_records.get(name, [])

    def addresses(self, name):
        self.count += 1
        return self.a_records.get(name, [])

    def query(self, name, rdtype):
        assert rdtype == "MX"

        class Mx:
            def __init__(self, host):
                self.exchange = host + "."

        return [Mx(host) for host in self.mx_records.get(name, [])]


def message(headers: str):
    import email

    return email.message_from_string(headers + "\n\n")


def spf_findings(records, sender_ip="127.0.0.1", **tables):
    report = _Draft()
    _check_spf(
        message("From: a@example.test"),
        "probe@example.test",
        sender_ip,
        TableLookups(txt=records, **tables),
        report,
    )
    return [str(finding) for finding in report.findings], report.notes


def test_tag_list_and_nameserver():
    assert tag_list("v=DKIM1; k=rsa; p=MIIB IjAN\r\n Bg") == {"v": "DKIM1", "k": "rsa", "p": "MIIBIjANBg"}
    assert parse_nameserver("127.0.0.1:10053") == ("127.0.0.1", 10053)
    assert parse_nameserver("[::1]:53") == ("::1", 53)
    for bad in ("localhost", "127.0.0.1:0", "1.2.3.4:x"):
        with pytest.raises(ValueError):
            parse_nameserver(bad)


def test_spf_that_names_the_address_has_no_finding():
    findings, notes = spf_findings({"example.test": ["v=spf1 ip4:127.0.0.1 -all"]})
    assert findings == []
    assert "SPF: example.test names 127.0.0.1" in notes


def test_spf_that_does_not_name_the_address():
    findings, _ = spf_findings({"example.test": ["v=spf1 ip4:192.0.2.1 -all"]})
    assert findings == [
        "SPF record of example.test does not name 127.0.0.1, the address the mail came from (fail)"
    ]


def test_spf_through_include_a_and_mx():
    records = {
        "example.test": ["v=spf1 include:_spf.example.test mx -all"],
        "_spf.example.test": ["v=spf1 a:relay.example.test/24 ~all"],
    }
    assert spf_findings(records, a={"relay.example.test": ["127.0.0.9"]})[0] == []
    records["_spf.example.test"] = ["v=spf1 a:relay.example.test ?all"]
    assert (
        spf_findings(
            records,
            a={"relay.example.test": ["127.0.0.9"], "mx.example.test": ["127.0.0.1"]},
            mx={"example.test": ["mx.example.test"]},
        )[0]
        == []
    )


def test_spf_missing_duplicate_and_over_the_lookup_limit():
    assert spf_findings({})[0] == ["SPF record of example.test not published"]
    assert spf_findings({"example.test": ["v=spf1 -all", "v=spf1 +all"]})[0] == [
        "SPF record of example.test published 2 times (RFC 7208: permerror)"
    ]
    chain = {"example.test": ["v=spf1 " + " ".join(f"include:s{i}.example.test" for i in range(4)) + " -all"]}
    for i in range(4):
        chain[f"s{i}.example.test"] = ["v=spf1 a mx ip4:127.0.0.1 -all"]
    findings, notes = spf_findings(chain)
    assert findings == ["SPF record of example.test needs 12 DNS lookups (RFC 7208 limit 10)"]


def test_spf_include_without_record():
    findings, _ = spf_findings({"example.test": ["v=spf1 include:gone.example.test ip4:127.0.0.1 -all"]})
    assert findings == [
        "SPF record of example.test refers to gone.example.test, which has no SPF records (permerror)"
    ]


def test_spf_with_macros_cannot_be_told():
    findings, notes = spf_findings({"example.test": ["v=spf1 exists:%{i}.spf.example.test -all"]})
    assert findings == [] and any("cannot tell" in note for note in notes)


def dkim_findings(txt):
    report = _Draft()
    headers = "DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=s2026;\n\th=from; bh=x; b=y"
    _check_dkim_keys(message(headers), "", None, TableLookups(txt=txt), report)
    return [str(finding) for finding in report.findings]


@pytest.mark.parametrize(
    "records, findings",
    [
        ({"s2026._domainkey.example.test": ["v=DKIM1; k=rsa; p=MIIBIjANBgkq"]}, []),
        ({}, ["DKIM key s2026._domainkey.example.test not published"]),
        (
            {"s2026._domainkey.example.test": ["v=DKIM1; p="]},
            ["DKIM key s2026._domainkey.example.test is revoked (empty p=)"],
        ),
        (
            {"s2026._domainkey.example.test": ["v=DKIM1; p=not*base64"]},
            ["DKIM key s2026._domainkey.example.test does not parse: p= is not base64"],
        ),
        (
            {"s2026._domainkey.example.test": ["v=DKIM1; k=dsa; p=AAAA"]},
            ["DKIM key s2026._domainkey.example.test has an unknown key type k=dsa"],
        ),
    ],
)
def test_dkim_key(records, findings):
    assert dkim_findings(records) == findings


@pytest.mark.parametrize(
    "records, findings, policy",
    [
        ({"_dmarc.example.test": ["v=DMARC1; p=quarantine"]}, [], "quarantine"),
        ({}, ["DMARC record _dmarc.example.test not published"], None),
        (
            {"_dmarc.example.test": ["v=DMARC1; rua=mailto:x@example.test"]},
            ["DMARC record _dmarc.example.test has no valid policy (p=missing)"],
            None,
        ),
    ],
)
def test_dmarc_record(records, findings, policy):
    report = _Draft()
    _check_dmarc(message("From: Probe <probe@example.test>"), "", None, TableLookups(txt=records), report)
    assert [str(finding) for finding in report.findings] == findings
    assert report.dmarc_policy == policy


def test_dmarc_record_of_the_parent_domain_counts():
    report = _Draft()
    _check_dmarc(
        message("From: probe@mail.example.test"),
        "",
        None,
        TableLookups(txt={"_dmarc.example.test": ["v=DMARC1; p=reject"]}),
        report,
    )
    assert report.findings == [] and report.dmarc_policy == "reject"


# -- records and headers that are not what they should be: findings and notes, never an exception
@pytest.mark.parametrize(
    "term",
    [
        "a/33",
        "ip4:1.2.3.4/99",
        "mx:/abc",
        "ip6:zz::/200",
        "include:",
        "redirect=",
        "a:192.0.2.1",  # an address where a domain belongs (RFC 7208 7.1: no numeric top label)
        "ip4:1.2.3.4/024",
        "ip4:::1",
        "ip6:fe80::1%eth0",
        "a:/24",
        "foo:bar.example.test",  # no such mechanism
        "-redirect=other.example.test",  # modifiers take no qualifier
        "include:a..example.test",
        "a/" + "9" * 5000,
    ],
)
def test_spf_invalid_term_is_a_finding_naming_the_record(term):
    findings, notes = spf_findings({"example.test": [f"v=spf1 {term} ip4:127.0.0.1 -all"]})
    shown = term if len(term) <= 60 else term[:57] + "..."
    assert findings == [f"SPF record of example.test has an invalid term {shown} (permerror)"]
    assert (
        "SPF: cannot tell whether example.test names 127.0.0.1 "
        "(the SPF record of example.test is in error: permerror)"
    ) in notes


def test_spf_modifier_given_twice_is_an_invalid_term():
    findings, _ = spf_findings({"example.test": ["v=spf1 redirect=a.example.test redirect=b.example.test"]})
    assert findings == ["SPF record of example.test has an invalid term redirect=b.example.test (permerror)"]


def test_spf_invalid_term_in_an_included_record_names_that_record():
    records = {
        "example.test": ["v=spf1 include:_spf.example.test -all"],
        "_spf.example.test": ["v=spf1 a/33 ~all"],
    }
    assert spf_findings(records)[0] == [
        "SPF record of _spf.example.test has an invalid term a/33 (permerror), "
        "reached from the SPF record of example.test"
    ]


def test_spf_redirect_loop_is_a_finding():
    records = {
        "example.test": ["v=spf1 redirect=b.example.test"],
        "b.example.test": ["v=spf1 redirect=example.test"],
    }
    findings, notes = spf_findings(records)
    assert findings == [
        "SPF record of b.example.test has a loop: redirect=example.test leads back to example.test "
        "(permerror), reached from the SPF record of example.test"
    ]
    assert (
        "SPF: cannot tell whether example.test names 127.0.0.1 "
        "(the SPF record of example.test is reached again, a loop: permerror)"
    ) in notes
    findings, _ = spf_findings({"example.test": ["v=spf1 include:example.test -all"]})
    assert findings == [
        "SPF record of example.test has a loop: include:example.test leads back to example.test (permerror)"
    ]


def test_spf_dual_cidr_and_modifiers_that_decide_nothing():
    records = {
        "example.test": ["v=spf1 exp=%{i}.exp.example.test x-note=hi a:relay.example.test/24//64 -all"]
    }
    findings, notes = spf_findings(records, a={"relay.example.test": ["127.0.0.9"]})
    assert findings == [] and "SPF: example.test names 127.0.0.1" in notes
    findings, _ = spf_findings(records, sender_ip="::1", a={"relay.example.test": ["::2"]})
    assert findings == []  # ::2/64 holds ::1


@pytest.mark.parametrize("sender_ip", ["999.1.1.1", "foo", "1.2.3.4/24", ""])
def test_sender_ip_that_is_no_address_is_a_note(sender_ip):
    findings, notes = spf_findings({"example.test": ["v=spf1 ip4:127.0.0.1 -all"]}, sender_ip=sender_ip)
    assert findings == []
    assert (
        f"SPF: the receiver's header gives '{sender_ip}' as the address the mail came from, "
        "which is not an IP address: not evaluated"
    ) in notes


@pytest.mark.parametrize(
    "header",
    [
        b"Authentication-Results: spf=pass (sender IP is 999.1.1.1) smtp.mailfrom=example.test;\r\n",
        b"Authentication-Results: mx.example.test; spf=pass (mx.example.test: domain of probe@example.test "
        b"designates foo as permitted sender) smtp.mailfrom=probe@example.test\r\n",
    ],
)
def test_sender_ip_from_the_receivers_header_that_does_not_parse(header):
    from check_email_roundtrip.verdicts import read_verdicts

    block = header + b"From: probe@example.test\r\n\r\n"
    sender_ip = read_verdicts(block).sender_ip
    assert sender_ip in ("999.1.1.1", "foo")
    report = check_records(
        block,
        "probe@example.test",
        sender_ip,
        TableLookups(
            txt={"example.test": ["v=spf1 ip4:127.0.0.1 -all"], "_dmarc.example.test": ["v=DMARC1; p=none"]}
        ),
    )
    assert report.findings == ()
    assert f"SPF: the receiver's header gives '{sender_ip}' as the address the mail came from, " in " ".join(
        report.notes
    )


def test_names_that_cannot_be_looked_up_are_findings_not_lookups():
    lookups = TableLookups()
    report = check_records(
        b"DKIM-Signature: v=1; d=exa..mple.test; s=s2026; b=x\r\nFrom: probe@bad..example.test\r\n\r\n",
        "probe@example..test",
        None,
        lookups,
    )
    assert [str(finding) for finding in report.findings] == [
        "DKIM-Signature names no valid key record: s2026._domainkey.exa..mple.test",
        "SPF record of example..test cannot be looked up: the envelope sender's domain is not valid",
        "From header has no valid domain to look up DMARC for: bad..example.test",
    ]
    assert lookups.count == 0


def test_resolver_refuses_a_name_it_cannot_send_as_dns_trouble():
    from check_email_roundtrip.deadline import Deadline
    from check_email_roundtrip.dnscheck import DnsTrouble, _Lookups

    lookups = _Lookups(("127.0.0.1", 9), Deadline(5.0))
    with pytest.raises(DnsTrouble, match=r"lookup of TXT a\\ failed: "):
        lookups.txt("a\\")
