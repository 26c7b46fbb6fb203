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
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import ipaddress
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from .deadline import Deadline
from .message import parse_header

SPF_LOOKUP_LIMIT = 10  # RFC 7208 4.6.4
_SPF_EVALUATION_BUDGET = 30  # lookups we spend ourselves before giving up ("cannot tell")
_LOOKUP_TIMEOUT = 3.0  # seconds per query, less if -t leaves less


@dataclass(frozen=True)
class DnsFinding:
    record: str  # "DKIM key s2026._domainkey.example.test"
    problem: str  # "not published"

    def __str__(self) -> str:
        return f"{self.record} {self.problem}"


@dataclass(frozen=True)
class DnsReport:
    findings: tuple[DnsFinding, ...] = ()
    notes: tuple[str, ...] = ()  # what was looked at, for -v
    dmarc_policy: str | None = None


@dataclass
class _Draft:
    """The report while the checks fill it in."""

    findings: list[DnsFinding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dmarc_policy: str | None = None


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
    message = parse_header(header_block)
    lookups = _Lookups(nameserver, deadline)
    report = _Draft()
    for check in (_check_dkim_keys, _check_spf, _check_dmarc):
        try:
            check(message, envelope_from, sender_ip, lookups, report)
        except DnsTrouble as exc:
            report.findings.append(DnsFinding("DNS", str(exc)))
    report.notes.append(f"DNS: {lookups.count} lookups ({lookups.where})")
    return DnsReport(tuple(report.findings), tuple(report.notes), report.dmarc_policy)


def _check_dkim_keys(
    message: Message, envelope_from: str, sender_ip: str | None, lookups: _Lookups, report: _Draft
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
        record = f"DKIM key {name}"
        keys = [text for text in lookups.txt(name) if "p=" in text or text.lower().startswith("v=dkim1")]
        if not keys:
            report.findings.append(DnsFinding(record, "not published"))
            continue
        if len(keys) > 1:
            report.findings.append(DnsFinding(record, f"published {len(keys)} times"))
        key = tag_list(keys[0])
        if key.get("v", "DKIM1").upper() != "DKIM1":
            report.findings.append(DnsFinding(record, f"does not parse: v={key['v']}"))
        elif "p" not in key:
            report.findings.append(DnsFinding(record, "does not parse: no p= tag"))
        elif key["p"] == "":
            report.findings.append(DnsFinding(record, "is revoked (empty p=)"))
        elif key.get("k", "rsa").lower() not in ("rsa", "ed25519"):
            report.findings.append(DnsFinding(record, f"has an unknown key type k={key['k']}"))
        else:
            try:
                der = base64.b64decode(key["p"], validate=True)
            except (binascii.Error, ValueError):
                report.findings.append(DnsFinding(record, "does not parse: p= is not base64"))
            else:
                report.notes.append(f"{record}: published, {len(der)} bytes of {key.get('k', 'rsa')} key")


def _check_spf(
    message: Message, envelope_from: str, sender_ip: str | None, lookups: _Lookups, report: _Draft
) -> None:
    domain = envelope_from.rpartition("@")[2].lower()
    if not domain:
        return
    records = _spf_records(lookups, domain)
    what = f"SPF record of {domain}"
    if not records:
        report.findings.append(DnsFinding(what, "not published"))
        return
    if len(records) > 1:
        report.findings.append(DnsFinding(what, f"published {len(records)} times (RFC 7208: permerror)"))
        return
    counter = _SpfLookupCount(lookups)
    needed = counter.count(domain, records[0])
    for problem in counter.problems:
        report.findings.append(DnsFinding(what, problem))
    if needed > SPF_LOOKUP_LIMIT:
        report.findings.append(
            DnsFinding(what, f"needs {needed} DNS lookups (RFC 7208 limit {SPF_LOOKUP_LIMIT})")
        )
    report.notes.append(f"{what}: {records[0]!r}, {needed} DNS lookups")
    if sender_ip is None:
        report.notes.append("SPF: the receiver's header does not tell the address the mail came from")
        return
    outcome = _SpfEvaluation(lookups).evaluate(domain, ipaddress.ip_address(sender_ip))
    if outcome in ("fail", "softfail", "neutral", "none"):
        report.findings.append(
            DnsFinding(what, f"does not name {sender_ip}, the address the mail came from ({outcome})")
        )
    elif outcome == "unknown":
        report.notes.append(f"SPF: cannot tell whether {domain} names {sender_ip} (macros, ptr or exists)")
    else:
        report.notes.append(f"SPF: {domain} names {sender_ip}")


def _spf_records(lookups: _Lookups, domain: str) -> list[str]:
    return [
        text for text in lookups.txt(domain) if text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")
    ]


class _SpfLookupCount:
    """Counts DNS-querying terms through include and redirect (RFC 7208 4.6.4)."""

    def __init__(self, lookups: _Lookups):
        self.lookups = lookups
        self.problems: list[str] = []
        self.seen: set[str] = set()

    def count(self, domain: str, record: str) -> int:
        total = 0
        for term in record.split()[1:]:
            name = term.lstrip("+-~?").lower()
            if name.startswith(("include:", "redirect=")):
                target = term.split(":", 1)[1] if name.startswith("include:") else term.split("=", 1)[1]
                total += 1
                if "%" in target or target in self.seen or total > 3 * SPF_LOOKUP_LIMIT:
                    continue
                self.seen.add(target)
                included = _spf_records(self.lookups, target)
                if len(included) != 1:
                    self.problems.append(
                        f"refers to {target}, which has {len(included) or 'no'} SPF records (permerror)"
                    )
                    continue
                total += self.count(target, included[0])
            elif name.split(":")[0].split("/")[0] in ("a", "mx", "ptr", "exists"):
                total += 1
        return total


class _SpfEvaluation:
    """Just enough of RFC 7208 to tell whether a record names an address.

    Returns pass/fail/softfail/neutral/none, or "unknown" where it would need
    macros, ptr or exists, or more lookups than we are willing to spend.
    """

    def __init__(self, lookups: _Lookups):
        self.lookups = lookups
        self.budget = _SPF_EVALUATION_BUDGET

    def _spend(self) -> bool:
        self.budget -= 1
        return self.budget >= 0

    def evaluate(self, domain: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        if not self._spend():
            return "unknown"
        records = _spf_records(self.lookups, domain)
        if len(records) != 1:
            return "none" if not records else "unknown"
        redirect = None
        for term in records[0].split()[1:]:
            qualifier = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}.get(term[0], None)
            body = term[1:] if qualifier else term
            qualifier = qualifier or "pass"
            name, _, argument = body.partition(":")
            name = name.lower()
            if "%" in body:
                return "unknown"
            if body.lower().startswith("redirect="):
                redirect = body.split("=", 1)[1]
                continue
            if "=" in name:
                continue  # other modifiers (exp=)
            matched = self._matches(name, argument, domain, ip)
            if matched is None:
                return "unknown"
            if matched:
                return qualifier
        if redirect:
            return self.evaluate(redirect, ip)
        return "neutral"

    def _matches(
        self, name: str, argument: str, domain: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> bool | None:
        base = name.split("/")[0]
        if base == "all":
            return True
        if base in ("ip4", "ip6"):
            try:
                return ip in ipaddress.ip_network(argument, strict=False)
            except ValueError:
                return False
        if base == "include":
            result = self.evaluate(argument, ip)
            return None if result == "unknown" else result == "pass"
        if base in ("a", "mx"):
            target, _, prefix = (argument or domain).partition("/")
            if "/" in name:  # "a/24" with no domain
                prefix = name.split("/", 1)[1]
            if not self._spend():
                return None
            hosts = (
                [target]
                if base == "a"
                else [str(r.exchange).rstrip(".") for r in self.lookups.query(target, "MX")]
            )
            for host in hosts[:10]:
                for address in self.lookups.addresses(host):
                    network = ipaddress.ip_network(f"{address}/{prefix}" if prefix else address, strict=False)
                    if ip in network:
                        return True
            return False
        return None  # ptr, exists


def _check_dmarc(
    message: Message, envelope_from: str, sender_ip: str | None, lookups: _Lookups, report: _Draft
) -> None:
    _, address = email.utils.parseaddr(str(message.get("From", "")))
    domain = address.rpartition("@")[2].lower()
    if not domain:
        report.findings.append(DnsFinding("From header", "has no domain to look up DMARC for"))
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
                DnsFinding(f"DMARC record {name}", f"has no valid policy (p={policy or 'missing'})")
            )
            return
        report.dmarc_policy = policy
        report.notes.append(f"DMARC record {name}: p={policy}")
        return
    report.findings.append(DnsFinding(f"DMARC record _dmarc.{domain}", "not published"))
