"""SPF records (RFC 7208): their grammar, their DNS lookup count, and whether
one names an address.

Knows no resolver and nothing of Nagios: it asks a :class:`Lookups` (dnscheck's
resolver, or a table in the tests) and answers in words.  A record is parsed
by ``parse_spf`` (RFC 7208 section 12) before anything is evaluated, so a
term such as ``a/33``, ``ip4:1.2.3.4/99`` or ``include:`` is an invalid term
(the record is a permerror), never an exception; names are checked before
they are looked up.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Protocol, Union

from .record import Record

SPF_LOOKUP_LIMIT = 10  # RFC 7208 4.6.4
_EVALUATION_BUDGET = 30  # lookups we spend ourselves before giving up ("cannot tell")
_SHOWN = 60  # longest piece of a record or header quoted in a line
_DNS_LABEL = re.compile(r"[a-z0-9_-]{1,63}", re.I)

IpAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IpNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class Lookups(Protocol):
    """What the checks ask of DNS (dnscheck's resolver, or a table in the tests)."""

    where: str  # "nameserver 127.0.0.1:10053"
    count: int  # lookups made

    def query(self, name: str, rdtype: str) -> list[Any]: ...

    def txt(self, name: str) -> list[str]: ...

    def addresses(self, name: str) -> list[str]: ...


def shown(text: str) -> str:
    """A piece of a record or header short enough to quote in a line."""
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def is_domain_name(name: str) -> bool:
    """A name that can be looked up: labels of letters, digits, "-" and "_"
    (U-labels through IDNA), at most 63 octets each and 253 in all."""
    name = name[:-1] if name.endswith(".") else name
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = ascii_name.split(".")
    return len(ascii_name) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in labels)


def spf_records(lookups: Lookups, domain: str) -> list[str]:
    return [
        text for text in lookups.txt(domain) if text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")
    ]


def count_lookups(lookups: Lookups, domain: str, record: str) -> tuple[int, list[tuple[str, str]]]:
    """How many DNS-querying terms ``record`` has, through include and
    redirect (RFC 7208 4.6.4), and what is wrong on the way: a list of
    (record, problem), e.g. ("SPF record of example.test", "has an invalid term a/33 (permerror)")."""
    counter = _LookupCount(lookups, domain)
    return counter.count(domain, record), counter.problems


def evaluate(lookups: Lookups, domain: str, ip: IpAddress) -> tuple[str, str]:
    """(outcome, why): does ``domain``'s record name ``ip``?  The outcome is
    pass/fail/softfail/neutral/none, permerror, or "unknown"; ``why`` says
    why for the last two."""
    return _Evaluation(lookups).evaluate(domain, ip)


_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_TERM = re.compile(r"([-+~?]?)([a-z][a-z0-9_.-]*)(.*)", re.I | re.S)
# a and mx: [":" domain-spec] [ip4-cidr-length] ["//" ip6-cidr-length]
_A_OR_MX = re.compile(r"(?::(.*?))?(?:/([0-9]+))?(?://([0-9]+))?", re.S)
_MACRO = re.compile(r"%(?:\{[slodiphcrtv][0-9]*r?[-.+,/_=]*\}|[%_-])", re.I)
_TOPLABEL = re.compile(r"[a-z0-9]*[a-z][a-z0-9]*|[a-z0-9]+-[a-z0-9-]*[a-z0-9]", re.I)
_VISIBLE = re.compile(r"[!-~]*")


class SpfTerm(Record):
    """One directive or modifier of an SPF record, checked."""

    text: str  # as written
    name: str  # mechanism or modifier, lowercase
    qualifier: str = "pass"  # what a matching mechanism gives
    target: str | None = None  # domain-spec; None: the domain being evaluated
    network: IpNetwork | None = None  # ip4, ip6
    cidr4: int = 32  # a, mx
    cidr6: int = 128

    @property
    def modifier(self) -> bool:
        return self.name not in _MECHANISMS

    @property
    def macros(self) -> bool:
        return self.target is not None and "%" in self.target


class InvalidTerm(Exception):
    """A term that is not RFC 7208: the whole record is a permerror."""

    def __init__(self, term: str):
        super().__init__(term)
        self.term = term


def parse_spf(record: str) -> list[SpfTerm]:
    """The terms after "v=spf1", or InvalidTerm naming the first bad one."""
    terms: list[SpfTerm] = []
    for text in record.split()[1:]:
        term = _parse_term(text)
        if term.name in ("redirect", "exp") and any(seen.name == term.name for seen in terms):
            raise InvalidTerm(text)  # each at most once (RFC 7208 6)
        terms.append(term)
    return terms


def _parse_term(text: str) -> SpfTerm:
    match = _TERM.fullmatch(text)
    if not match:
        raise InvalidTerm(text)
    prefix, name, rest = match.group(1), match.group(2).lower(), match.group(3)
    if rest.startswith("=") and name not in _MECHANISMS:
        value = rest[1:]
        if prefix or not _valid_macro_string(value):
            raise InvalidTerm(text)
        if name in ("redirect", "exp"):
            return SpfTerm(text, name, target=_domain_spec(value, text))
        return SpfTerm(text, name)  # unknown modifiers are ignored (RFC 7208 6)
    qualifier = _QUALIFIERS.get(prefix, "pass")
    if name == "all" and not rest:
        return SpfTerm(text, name, qualifier)
    if name in ("include", "exists") and rest.startswith(":"):
        return SpfTerm(text, name, qualifier, target=_domain_spec(rest[1:], text))
    if name == "ptr" and (not rest or rest.startswith(":")):
        return SpfTerm(text, name, qualifier, target=_domain_spec(rest[1:], text) if rest else None)
    if name in ("a", "mx"):
        parts = _A_OR_MX.fullmatch(rest)
        if parts:
            target, cidr4, cidr6 = parts.groups()
            return SpfTerm(
                text,
                name,
                qualifier,
                target=None if target is None else _domain_spec(target, text),
                cidr4=_prefix_length(cidr4, 32, text),
                cidr6=_prefix_length(cidr6, 128, text),
            )
    if name in ("ip4", "ip6") and rest.startswith(":"):
        return SpfTerm(text, name, qualifier, network=_network(name, rest[1:], text))
    raise InvalidTerm(text)


def _valid_macro_string(value: str) -> bool:
    return bool(_VISIBLE.fullmatch(value)) and "%" not in _MACRO.sub("", value)


def _domain_spec(spec: str, term: str) -> str:
    """``spec`` if it is a domain-spec (RFC 7208 7.1), else InvalidTerm."""
    if not spec or not _valid_macro_string(spec):
        raise InvalidTerm(term)
    if "%" in spec:
        return spec  # with macros: cannot be evaluated here, but may be valid
    labels = (spec[:-1] if spec.endswith(".") else spec).split(".")
    if (
        len(labels) < 2
        or len(spec) > 253
        or not all(0 < len(label) <= 63 for label in labels)
        or not _TOPLABEL.fullmatch(labels[-1])
    ):
        raise InvalidTerm(term)
    return spec


def _prefix_length(text: str | None, most: int, term: str) -> int:
    if text is None:
        return most
    if not 0 < len(text) <= 3 or text != str(int(text)) or int(text) > most:
        raise InvalidTerm(term)  # "/33", "/024", "/99999999999"
    return int(text)


def _network(name: str, argument: str, term: str) -> IpNetwork:
    address, slash, length = argument.partition("/")
    try:
        parsed = ipaddress.IPv4Address(address) if name == "ip4" else ipaddress.IPv6Address(address)
    except ValueError:
        raise InvalidTerm(term) from None
    if "%" in address:  # an IPv6 scope: not in a record
        raise InvalidTerm(term)
    most = parsed.max_prefixlen
    return ipaddress.ip_network(
        f"{parsed}/{_prefix_length(length if slash else None, most, term)}", strict=False
    )


class _LookupCount:
    """Counts DNS-querying terms through include and redirect (RFC 7208 4.6.4),
    and finds what is wrong on the way: invalid terms, missing or duplicate
    records referred to, loops."""

    def __init__(self, lookups: Lookups, top: str):
        self.lookups, self.top = lookups, top
        self.problems: list[tuple[str, str]] = []
        self.seen: set[str] = set()

    def count(self, domain: str, record: str, path: tuple[str, ...] = ()) -> int:
        try:
            terms = parse_spf(record)
        except InvalidTerm as exc:
            self._found(domain, f"has an invalid term {shown(exc.term)} (permerror)")
            return 0
        path = (*path, _key(domain))
        total = 0
        for term in terms:
            if term.name in ("include", "redirect") and term.target is not None:
                total += 1
                target = term.target
                if term.macros or total > 3 * SPF_LOOKUP_LIMIT:
                    continue
                if _key(target) in path:
                    self._found(domain, f"has a loop: {shown(term.text)} leads back to {target} (permerror)")
                    continue
                if _key(target) in self.seen:
                    continue
                self.seen.add(_key(target))
                included = spf_records(self.lookups, target) if is_domain_name(target) else []
                if len(included) != 1:
                    self._found(
                        domain,
                        f"refers to {target}, which has {len(included) or 'no'} SPF records (permerror)",
                    )
                    continue
                total += self.count(target, included[0], path)
            elif term.name in ("a", "mx", "ptr", "exists"):
                total += 1
        return total

    def _found(self, domain: str, problem: str) -> None:
        if _key(domain) != _key(self.top):
            problem += f", reached from the SPF record of {self.top}"
        self.problems.append((f"SPF record of {domain}", problem))


def _key(domain: str) -> str:
    return domain.lower().rstrip(".")


class _Undecided(Exception):
    """The evaluation ends without a match result: permerror or "unknown"."""

    def __init__(self, outcome: str, why: str):
        super().__init__(outcome, why)
        self.outcome, self.why = outcome, why


class _Evaluation:
    """Just enough of RFC 7208 to tell whether a record names an address.

    ``evaluate`` gives pass/fail/softfail/neutral/none, permerror, or
    "unknown" where it would need macros, ptr or exists, or more lookups than
    we are willing to spend; with the reason for the last two.
    """

    def __init__(self, lookups: Lookups):
        self.lookups = lookups
        self.budget = _EVALUATION_BUDGET

    def evaluate(self, domain: str, ip: IpAddress) -> tuple[str, str]:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        try:
            return self._evaluate(domain, ip, ()), ""
        except _Undecided as exc:
            return exc.outcome, exc.why

    def _spend(self) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise _Undecided("unknown", f"more than {_EVALUATION_BUDGET} DNS lookups")

    def _evaluate(self, domain: str, ip: IpAddress, path: tuple[str, ...]) -> str:
        if _key(domain) in path:
            raise _Undecided("permerror", f"the SPF record of {domain} is reached again, a loop: permerror")
        self._spend()
        records = spf_records(self.lookups, domain) if is_domain_name(domain) else []
        if not records:
            return "none"
        if len(records) > 1:
            raise _Undecided("permerror", f"{domain} has {len(records)} SPF records: permerror")
        try:
            terms = parse_spf(records[0])
        except InvalidTerm:
            raise _Undecided("permerror", f"the SPF record of {domain} is in error: permerror") from None
        path = (*path, _key(domain))
        redirect = None
        for term in terms:
            if term.name == "redirect":
                redirect = term  # used only when no mechanism matches
            elif term.modifier:
                continue  # exp= and unknown modifiers decide nothing
            elif term.macros or term.name in ("ptr", "exists"):
                raise _Undecided("unknown", "macros, ptr or exists")
            elif self._matches(term, domain, ip, path):
                return term.qualifier
        if redirect is None or redirect.target is None:
            return "neutral"
        if redirect.macros:
            raise _Undecided("unknown", "macros, ptr or exists")
        return self._referred(redirect.target, ip, path)

    def _referred(self, domain: str, ip: IpAddress, path: tuple[str, ...]) -> str:
        """include's and redirect's evaluation: no record there is a permerror."""
        result = self._evaluate(domain, ip, path)
        if result == "none":
            raise _Undecided("permerror", f"{domain} has no SPF record: permerror")
        return result

    def _matches(self, term: SpfTerm, domain: str, ip: IpAddress, path: tuple[str, ...]) -> bool:
        if term.name == "all":
            return True
        if term.network is not None:
            return ip in term.network
        if term.name == "include":
            return self._referred(term.target or domain, ip, path) == "pass"
        self._spend()  # a, mx
        target = term.target or domain
        hosts = (
            [target]
            if term.name == "a"
            else [str(r.exchange).rstrip(".") for r in self.lookups.query(target, "MX")]
        )
        for host in hosts[:10]:
            if not is_domain_name(host):  # "." of a null MX (RFC 7505)
                continue
            for address in self.lookups.addresses(host):
                length = term.cidr6 if ":" in address else term.cidr4
                try:
                    network = ipaddress.ip_network(f"{address}/{length}", strict=False)
                except ValueError:
                    continue
                if ip in network:
                    return True
        return False
