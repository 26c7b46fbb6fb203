"""DNS drift checks: are the records behind the verdicts still right?

Knows nothing of Nagios; ``dnspython`` is imported here only, so runs without
``--dns-checks`` never load it.  ``check_dns`` returns :class:`DnsReport`:
findings (each names the record and what is wrong with it) and notes (what
was looked at, for -v).  A lookup that times out or fails is a finding of
its own ("timed out"), never taken for a missing record.

What is checked:
- every DKIM-Signature of the found message: the key at ``s._domainkey.d``
  is published, parses (v=, k=, base64 p=) and is not revoked (empty p=);
- the envelope sender's domain: exactly one ``v=spf1`` record, at most 10
  DNS-querying terms (RFC 7208 4.6.4, counted through include and redirect),
  and, when the receiver's header tells the address the mail came from,
  whether the record names it;
- the From domain: a ``_dmarc`` record (else its parent's) with a valid policy.

Whatever the records, the header or the resolver say, the answer is findings
and notes in the user's terms ("SPF record of example.test has an invalid
term a/33 (permerror)"), never an exception: SPF records are parsed before
they are evaluated (spf.py), names are checked before they are looked up,
and the sender address the receiver's header gives before it is used.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import ipaddress
from email.message import Message
from typing import Any

from .deadline import Deadline
from .message import parse_header
from .record import Record
from .spf import SPF_LOOKUP_LIMIT, Lookups, count_lookups, evaluate, is_domain_name, shown, spf_records

_LOOKUP_TIMEOUT = 3.0  # seconds per query, less if -t leaves less


class DnsFinding(Record):
    record: str  # "DKIM key s2026._domainkey.example.test"
    problem: str  # "not published"

    def __str__(self) -> str:
        return f"{self.record} {self.problem}"


class DnsReport(Record):
    findings: tuple[DnsFinding, ...] = ()
    notes: tuple[str, ...] = ()  # what was looked at, for -v
    dmarc_policy: str | None = None


class _Draft:
    """The report while the checks fill it in."""

    def __init__(self) -> None:
        self.findings: list[DnsFinding] = []
        self.notes: list[str] = []
        self.dmarc_policy: str | None = None


class DnsTrouble(Exception):
    """The lookup itself failed (time-out, SERVFAIL, no nameserver)."""


def parse_nameserver(text: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` -> (ip, port); ValueError otherwise."""
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    ipaddress.ip_address(host)  # raises ValueError
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"port out of range: {port}")
    return host, number


def tag_list(text: str) -> dict[str, str]:
    """DKIM/DMARC ``tag=value; ...`` lists (RFC 6376 3.2), whitespace removed."""
    tags = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = "".join(value.split())
    return tags


class _Lookups:
    def __init__(self, nameserver: tuple[str, int] | None, deadline: Deadline):
        import dns.resolver

        self.resolver = dns.resolver.Resolver(configure=nameserver is None)
        if nameserver is not None:
            self.resolver.nameservers = [nameserver[0]]
            self.resolver.port = nameserver[1]
        self.where = f"nameserver {nameserver[0]}:{nameserver[1]}" if nameserver else "system resolver"
        self.deadline = deadline
        self.count = 0

    def query(self, name: str, rdtype: str) -> list[Any]:
        import dns.exception
        import dns.resolver

        self.count += 1
        lifetime = min(_LOOKUP_TIMEOUT, self.deadline.socket_timeout())
        try:
            return list(self.resolver.resolve(name, rdtype, lifetime=lifetime, search=False))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout:
            raise DnsTrouble(
                f"lookup of {rdtype} {name} timed out after {lifetime:.1f} s ({self.where})"
            ) from None
        except dns.resolver.NoNameservers:
            raise DnsTrouble(
                f"lookup of {rdtype} {name} failed: no nameserver answered ({self.where})"
            ) from None
        except dns.exception.DNSException as exc:
            raise DnsTrouble(f"lookup of {rdtype} {name} failed: {exc} ({self.where})") from None
        except (ValueError, UnicodeError) as exc:  # a name dnspython cannot even send
            raise DnsTrouble(f"lookup of {rdtype} {shown(name)} failed: {exc} ({self.where})") from None

    def txt(self, name: str) -> list[str]:
        return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in self.query(name, "TXT")]

    def addresses(self, name: str) -> list[str]:
        return [rdata.address for rdtype in ("A", "AAAA") for rdata in self.query(name, rdtype)]


def check_dns(
    header_block: bytes,
    envelope_from: str,
    sender_ip: str | None,
    nameserver: tuple[str, int] | None,
    deadline: Deadline,
) -> DnsReport:
    return check_records(header_block, envelope_from, sender_ip, _Lookups(nameserver, deadline))


def check_records(
    header_block: bytes, envelope_from: str, sender_ip: str | None, lookups: Lookups
) -> DnsReport:
    """The checks, asking ``lookups``; ``sender_ip`` is what the receiver's header says, unchecked."""
    message = parse_header(header_block)
    report = _Draft()
    for check in (_check_dkim_keys, _check_spf, _check_dmarc):
        try:
            check(message, envelope_from, sender_ip, lookups, report)
        except DnsTrouble as exc:
            report.findings.append(DnsFinding("DNS", str(exc)))
    report.notes.append(f"DNS: {lookups.count} lookups ({lookups.where})")
    return DnsReport(tuple(report.findings), tuple(report.notes), report.dmarc_policy)


def _check_dkim_keys(
    message: Message, envelope_from: str, sender_ip: str | None, lookups: Lookups, report: _Draft
) -> None:
    signatures = message.get_all("DKIM-Signature") or []
    if not signatures:
        report.notes.append("DKIM: the message carries no DKIM-Signature")
    for signature in signatures:
        tags = tag_list(str(signature))
        domain, selector = tags.get("d"), tags.get("s")
        if not domain or not selector:
            report.findings.append(DnsFinding("DKIM-Signature", "has no d= or s= tag"))
            continue
        name = f"{selector}._domainkey.{domain}"
        if not is_domain_name(name):
            report.findings.append(DnsFinding("DKIM-Signature", f"names no valid key record: {shown(name)}"))
            continue
        record = f"DKIM key {name}"
        keys = [text for text in lookups.txt(name) if "p=" in text or text.lower().startswith("v=dkim1")]
        if not keys:
            report.findings.append(DnsFinding(record, "not published"))
            continue
        if len(keys) > 1:
            report.findings.append(DnsFinding(record, f"published {len(keys)} times"))
        key = tag_list(keys[0])
        if key.get("v", "DKIM1").upper() != "DKIM1":
            report.findings.append(DnsFinding(record, f"does not parse: v={shown(key['v'])}"))
        elif "p" not in key:
            report.findings.append(DnsFinding(record, "does not parse: no p= tag"))
        elif key["p"] == "":
            report.findings.append(DnsFinding(record, "is revoked (empty p=)"))
        elif key.get("k", "rsa").lower() not in ("rsa", "ed25519"):
            report.findings.append(DnsFinding(record, f"has an unknown key type k={shown(key['k'])}"))
        else:
            try:
                der = base64.b64decode(key["p"], validate=True)
            except (binascii.Error, ValueError):
                report.findings.append(DnsFinding(record, "does not parse: p= is not base64"))
            else:
                report.notes.append(f"{record}: published, {len(der)} bytes of {key.get('k', 'rsa')} key")


def _check_spf(
    message: Message, envelope_from: str, sender_ip: str | None, lookups: Lookups, report: _Draft
) -> None:
    domain = envelope_from.rpartition("@")[2].lower()
    if not domain:
        return
    what = f"SPF record of {shown(domain)}"
    if not is_domain_name(domain):
        report.findings.append(
            DnsFinding(what, "cannot be looked up: the envelope sender's domain is not valid")
        )
        return
    records = spf_records(lookups, domain)
    if not records:
        report.findings.append(DnsFinding(what, "not published"))
        return
    if len(records) > 1:
        report.findings.append(DnsFinding(what, f"published {len(records)} times (RFC 7208: permerror)"))
        return
    needed, problems = count_lookups(lookups, domain, records[0])
    report.findings.extend(DnsFinding(record, problem) for record, problem in problems)
    if needed > SPF_LOOKUP_LIMIT:
        report.findings.append(
            DnsFinding(what, f"needs {needed} DNS lookups (RFC 7208 limit {SPF_LOOKUP_LIMIT})")
        )
    report.notes.append(f"{what}: {records[0]!r}, {needed} DNS lookups")
    if sender_ip is None:
        report.notes.append("SPF: the receiver's header does not tell the address the mail came from")
        return
    try:
        address = ipaddress.ip_address(sender_ip)
    except ValueError:
        report.notes.append(
            f"SPF: the receiver's header gives '{shown(sender_ip)}' as the address the mail came from, "
            "which is not an IP address: not evaluated"
        )
        return
    outcome, why = evaluate(lookups, domain, address)
    if outcome in ("fail", "softfail", "neutral", "none"):
        report.findings.append(
            DnsFinding(what, f"does not name {address}, the address the mail came from ({outcome})")
        )
    elif outcome == "pass":
        report.notes.append(f"SPF: {domain} names {address}")
    else:
        report.notes.append(f"SPF: cannot tell whether {domain} names {address} ({why})")


def _check_dmarc(
    message: Message, envelope_from: str, sender_ip: str | None, lookups: Lookups, report: _Draft
) -> None:
    _, address = email.utils.parseaddr(str(message.get("From", "")))
    domain = address.rpartition("@")[2].lower()
    if not domain:
        report.findings.append(DnsFinding("From header", "has no domain to look up DMARC for"))
        return
    if not is_domain_name(domain):
        report.findings.append(
            DnsFinding("From header", f"has no valid domain to look up DMARC for: {shown(domain)}")
        )
        return
    # The record of the From domain, else of its parent (RFC 7489 6.6.3 asks for
    # the organisational domain; one label up covers the usual subdomain case).
    candidates = [domain] + ([domain.split(".", 1)[1]] if domain.count(".") >= 2 else [])
    for candidate in candidates:
        name = f"_dmarc.{candidate}"
        records = [text for text in lookups.txt(name) if text.upper().startswith("V=DMARC1")]
        if not records:
            continue
        if len(records) > 1:
            report.findings.append(DnsFinding(f"DMARC record {name}", f"published {len(records)} times"))
            return
        tags = tag_list(records[0])
        policy = tags.get("p", "").lower()
        if policy not in ("none", "quarantine", "reject"):
            report.findings.append(
                DnsFinding(f"DMARC record {name}", f"has no valid policy (p={shown(policy) or 'missing'})")
            )
            return
        report.dmarc_policy = policy
        report.notes.append(f"DMARC record {name}: p={policy}")
        return
    report.findings.append(DnsFinding(f"DMARC record _dmarc.{domain}", "not published"))
