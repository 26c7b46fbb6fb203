"""DNS drift checks' parsing and counting on a table of records (no server).

The lookups against a real DNS server are in test_verdicts_stack.py.
"""

import pytest

from check_email_roundtrip.dnscheck import (
    _check_dkim_keys,
    _check_dmarc,
    _check_spf,
    _Draft,
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
