"""What the receiving side concluded: SPF, DKIM, DMARC (and ARC) verdicts.

Knows nothing of Nagios.  ``read_verdicts`` takes the header block of the
found message and returns :class:`AuthVerdicts`: one :class:`Verdict` per
method, from the Authentication-Results header(s) the probe trusts, plus what
it ignored and why.  Parsing is ``authres``'s; ``authres`` is imported here
only, so runs that never read verdicts never load it.

Liberal in separators, strict in meaning: before ``authres`` sees a header,
``_normalise`` drops the empty separators real receivers write (a semicolon
after the last result, doubled ones) and, in Microsoft's id-less form only,
the bare domain it writes between results; ``_escape`` hides UTF-8 (RFC 8616)
from ``authres``, which knows ASCII only.  What is left must still parse, and
a reported method's result must be a result word (RESULT_WORDS): anything else
makes the header "malformed".

Trust (RFC 8601, section 5): anybody can put an Authentication-Results header
into a message they send.  The receiver adds its own above everything it
received, so by default only the topmost header is trusted; with
``authserv_id`` every header carrying that authserv-id is trusted (for
receivers that write one header per method, such as OpenDKIM + OpenDMARC),
and nothing else.  A header without an authserv-id (Microsoft 365, Exchange)
can only be trusted as the topmost one: it names no receiver to match.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import suppress

from .message import header_values, parse_header
from .policy import METHODS, NOT_EVALUATED, RESULT_WORDS
from .record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Any

# Property values not worth a line (the signature's first bytes).
_HIDDEN_PROPERTIES = {("header", "b")}
# "dmarc=fail (p=QUARANTINE sp=NONE dis=NONE)" (Gmail, OpenDMARC) or
# "(policy=quarantine)" (rspamd): authres drops comments, the policy is in one.
_POLICY_IN_COMMENT = re.compile(r"\b(?:p|policy)\s*=\s*([a-z]+)", re.I)
# Longest receiver comment shown with a non-pass verdict.
_MAX_COMMENT = 120
# Where receivers say which address the mail came from: rspamd and Gmail in
# the SPF comment, Microsoft 365 as "sender IP is", others as smtp.remote-ip.
# Whatever stands there is taken; whether it is an address is the DNS check's
# question.
_SENDER_IP = (
    re.compile(r"designates? \[?([^\s\[\]()]+?)\]? as permitted sender", re.I),
    re.compile(r"sender IP is \[?([^\s\[\]()]+?)\]?(?:[\s)]|$)", re.I),
    re.compile(r"smtp\.remote-ip=\[?([^\s\[\]();]+?)\]?(?:[\s();]|$)", re.I),
)
# A header whose first part is already a result ("spf=pass ...") has no
# authserv-id (Microsoft 365, Exchange): an authserv-id has no "=" in it.
_STARTS_WITH_RESULT = re.compile(r"[a-z0-9][a-z0-9-]*\s*(?:/\s*[0-9]+\s*)?=", re.I)
# What Microsoft writes between the results of an id-less header: the
# recipient's domain ("smtp.mailfrom=example.com; contoso.com; dkim=none ...").
_BARE_DOMAIN = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?", re.I)
# An IPv6 address as a property value, unquoted (Exim, Fastmail:
# "smtp.remote-ip=2001:db8::25"); authres wants it quoted, as RFC 8601 does.
_UNQUOTED_IPV6 = re.compile(r"(\.[a-z0-9_-]+\s*=\s*)([0-9a-f]*:[0-9a-f:.]*)(?=[\s;()]|$)", re.I)
# Stands in for the missing authserv-id while authres parses an id-less header.
_NO_ID = "no-authserv-id.invalid"


class Verdict(Record):
    method: str
    result: str  # lowercase RFC 8601 result, or NOT_EVALUATED
    details: tuple[str, ...] = ()  # "header.d=example.test", "p=quarantine"

    @property
    def passed(self) -> bool:
        return self.result == "pass"

    def line(self) -> str:
        if self.result == NOT_EVALUATED:
            return f"{self.method}: not evaluated by the receiver"
        details = f" ({', '.join(self.details)})" if self.details else ""
        return f"{self.method}={self.result}{details}"


class AuthVerdicts(Record):
    authserv_id: str | None  # of the trusted header(s); None when there is none
    verdicts: dict[str, Verdict]  # every method of METHODS, in that order
    header_found: bool  # the receiver wrote an Authentication-Results header
    malformed: str | None = None  # why the trusted header could not be parsed
    ignored: tuple[str, ...] = ()  # one description per ignored header
    sender_ip: str | None = None  # what the receiver says the mail came from (not checked)

    def with_dmarc_policy(self, policy: str) -> AuthVerdicts:
        """The same, with the policy from the _dmarc record when the header did not say it."""
        verdict = self.verdicts["dmarc"]
        if verdict.result == NOT_EVALUATED or any(d.startswith("p=") for d in verdict.details):
            return self
        verdicts = dict(self.verdicts)
        verdicts["dmarc"] = verdict._replace(details=(f"p={policy}", *verdict.details))
        return self._replace(verdicts=verdicts)


class _Result(Record):
    """One method's result as the header states it."""

    method: str  # lowercase
    result: str  # lowercase
    reason: str | None
    properties: tuple[tuple[str, str, str], ...]  # (ptype, property, value)
    comments: tuple[str, ...]  # the receiver's comments in this result's part


class _Header(Record):
    authserv_id: str | None  # lowercase; None for the id-less form
    results: tuple[_Result, ...]


class MalformedHeader(Exception):
    pass


def _split(value: str) -> tuple[list[str], list[list[str]]]:
    """The parts of a header value between top-level semicolons (not inside a
    comment or a quoted string), and the comments at the top level of each."""
    parts: list[str] = []
    comments: list[list[str]] = []
    part: list[str] = []
    found: list[str] = []
    comment: list[str] = []
    depth, quoted, escaped = 0, False, False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and (depth or quoted):
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif depth:
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0:
                found.append(" ".join("".join(comment).split()))
                comment = []
        elif char == "(":
            depth = 1
            part.append(char)
            continue
        elif char == '"':
            quoted = True
        elif char == ";":
            parts.append("".join(part).strip())
            comments.append([text for text in found if text])
            part, found = [], []
            continue
        if depth:
            comment.append(char)
        part.append(char)
    parts.append("".join(part).strip())
    comments.append([text for text in found if text])
    return parts, comments


def _normalise(value: str) -> tuple[str, bool, list[list[str]]]:
    """(text for authres, whether the header has no authserv-id, each result's comments).

    Drops empty parts ("...;" at the end, ";;"), and in the id-less form the
    bare domains Microsoft writes between results; quotes unquoted IPv6
    property values.  Nothing else changes: what is left must still parse."""
    parts, comments = _split(value)
    head, results = parts[0], list(zip(parts[1:], comments[1:]))
    id_less = bool(_STARTS_WITH_RESULT.match(head))
    if id_less:
        results = [(head, comments[0]), *results]
        results = [(part, found) for part, found in results if not _BARE_DOMAIN.fullmatch(part)]
        head = _NO_ID
    results = [(_UNQUOTED_IPV6.sub(r'\1"\2"', part), found) for part, found in results if part]
    text = "; ".join([head, *(part for part, _ in results)])
    return text, id_less, [found for _, found in results]


def _escape(text: str) -> str:
    """UTF-8 (RFC 8616) as %XX, which authres takes for ASCII text; "%" too."""
    from urllib.parse import quote

    return quote(text, safe="".join(chr(code) for code in range(128) if chr(code) != "%"), errors="replace")


def _unescape(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text, errors="replace")


def _parse(value: str) -> _Header:
    """One header's value, through authres, or MalformedHeader saying why not."""
    import authres

    text, id_less, comments = _normalise(value)
    try:
        parsed = authres.all_features().parse_value(_escape(text))
    except Exception as exc:  # authres raises more than AuthResError on odd input
        message = _unescape(" ".join(str(exc).split()))[:160]
        raise MalformedHeader(message or exc.__class__.__name__) from None
    if len(comments) != len(parsed.results):  # "none": no results, no comments
        comments = [[] for _ in parsed.results]
    results = tuple(_result(result, found) for result, found in zip(parsed.results, comments))
    for result in results:
        if result.method in METHODS and result.result not in RESULT_WORDS:
            raise MalformedHeader(f"{result.method}={result.result} is not an RFC 8601 result")
    return _Header(None if id_less else _unescape(parsed.authserv_id), results)


def _result(result: Any, comments: list[str]) -> _Result:
    properties = tuple(
        (_unescape(prop.type), _unescape(prop.name or ""), _unescape(prop.value))
        for prop in result.properties
        if prop.value is not None
    )
    return _Result(
        method=_unescape(result.method or "").lower(),
        result=_unescape(result.result or "").lower(),
        reason=_unescape(result.reason) if getattr(result, "reason", None) else None,
        properties=properties,
        comments=tuple(comments),
    )


def _details(result: _Result) -> tuple[str, ...]:
    details = []
    comments = list(result.comments)
    if result.method == "dmarc":
        policies = [_POLICY_IN_COMMENT.search(comment) for comment in comments]
        policy = next((match.group(1).lower() for match in policies if match), None)
        if policy:
            details.append(f"p={policy}")
            comments = []  # the policy was the comment's news
    if result.result == "pass":
        comments = []
    if result.reason:
        details.append(f'reason="{result.reason}"')
    for ptype, name, value in result.properties:
        if (ptype.lower(), name.lower()) not in _HIDDEN_PROPERTIES:
            details.append(f"{ptype}.{name}={value}")
    if comments:
        # for a non-pass verdict the receiver's comment is often the cause:
        # rspamd's ("invalid DKIM record"), "does not designate 127.0.0.1"
        details.append('"' + comments[0].strip('"')[:_MAX_COMMENT] + '"')
    return tuple(details)


def _best(first: Verdict | None, second: Verdict) -> Verdict:
    """Several results for one method (two DKIM signatures): a pass wins, as in DMARC."""
    if first is None or (second.passed and not first.passed):
        return second
    return first


def _trusted(position: int, raw: str, header: _Header | None, wanted: str | None) -> bool:
    """The trust rule, for the header at ``position`` (0: topmost), ``header``
    being its parse (None: it does not parse).  Without --authserv-id: the
    topmost header, with or without an authserv-id, parsed or not (the
    receiver adds its own above all it received).  With it: every header
    carrying that id (one that does not parse: starting with it), and never
    an id-less one."""
    if wanted is None:
        return position == 0
    if header is None:  # the id as a whole word: "mx.example.test.evil" is not "mx.example.test"
        text = raw.lstrip().lower()
        return text.startswith(wanted) and text[len(wanted) : len(wanted) + 1] in (
            "",
            ";",
            " ",
            "\t",
            "\r",
            "\n",
        )
    return header.authserv_id is not None and header.authserv_id == wanted


def receiver_header(raw_headers: Sequence[str], authserv_id: str | None = None) -> int | None:
    """The position (0: topmost) of the topmost Authentication-Results header
    the receiver wrote, among a message's (``raw_headers``, top first), by
    the trust rule of :func:`read_verdicts`; None when it wrote none."""
    wanted = authserv_id.lower() if authserv_id else None
    for position, raw in enumerate(raw_headers):
        header = None
        if wanted is not None:
            try:
                header = _parse(raw)
            except MalformedHeader:
                pass
        if _trusted(position, raw, header, wanted):
            return position
    return None


def _why_ignored(header: _Header, trusted: list[_Header], authserv_id: str | None) -> str:
    if authserv_id is not None:
        if header.authserv_id is None:
            return f"--authserv-id {authserv_id} trusts only headers carrying it"
        return f"authserv-id is not {authserv_id}"
    if header.authserv_id is None or not trusted or header.authserv_id != trusted[0].authserv_id:
        return "not the topmost"
    # Same authserv-id as the topmost header.  Methods the topmost one already
    # reports, said again below it: what a forger's header looks like.  Only
    # other methods: a receiver writing one header per method.
    seen = {result.method for result in trusted[0].results}
    if seen & {result.method for result in header.results}:
        return "not the topmost; repeats the receiver's methods: possibly forged"
    return (
        "not the topmost; if the receiver writes one header per method, "
        f"--authserv-id {header.authserv_id} trusts them all"
    )


def _sender_ip(raw_headers: list[str]) -> str | None:
    for raw in raw_headers:
        for pattern in _SENDER_IP:
            match = pattern.search(raw)
            if match:
                return match.group(1)
    return None


def read_verdicts(header_block: bytes, authserv_id: str | None = None) -> AuthVerdicts:
    raw_headers = header_values(parse_header(header_block), "Authentication-Results")
    wanted = authserv_id.lower() if authserv_id else None

    trusted: list[_Header] = []
    trusted_raw: list[str] = []
    ignored: list[str] = []
    malformed: str | None = None
    for position, raw in enumerate(raw_headers):
        try:
            header = _parse(raw)
        except MalformedHeader as exc:
            if _trusted(position, raw, None, wanted):
                malformed = str(exc)
            else:
                ignored.append(f"header {position + 1} (malformed)")
            continue
        if _trusted(position, raw, header, wanted):
            trusted.append(header)
            trusted_raw.append(raw)
        else:
            origin = f"from {header.authserv_id}" if header.authserv_id else "without authserv-id"
            ignored.append(f"header {position + 1} {origin} ({_why_ignored(header, trusted, authserv_id)})")

    verdicts: dict[str, Verdict] = {}
    for header in trusted:
        for result in header.results:
            if result.method in METHODS:
                verdict = Verdict(result.method, result.result, _details(result))
                verdicts[result.method] = _best(verdicts.get(result.method), verdict)
    return AuthVerdicts(
        authserv_id=trusted[0].authserv_id if trusted else None,
        verdicts={method: verdicts.get(method) or Verdict(method, NOT_EVALUATED) for method in METHODS},
        header_found=bool(trusted) or malformed is not None,
        malformed=malformed,
        ignored=tuple(ignored),
        sender_ip=_sender_ip(trusted_raw),
    )


# A header in the shape receivers write (rspamd's wording, RFC 8601's
# examples): comments, the properties of each method, a signature stub.
_SAMPLE_HEADER = (
    b"Authentication-Results: mx.example.net;\r\n"
    b"\tdkim=pass header.d=example.net header.s=s1 header.b=AbCd1234;\r\n"
    b"\tdmarc=pass (policy=reject) header.from=example.net;\r\n"
    b"\tspf=pass (mx.example.net: domain of a@example.net designates 192.0.2.1 as permitted sender)"
    b" smtp.mailfrom=a@example.net\r\n"
    b"Received: from mail.example.net (mail.example.net [192.0.2.1])\r\n"
    b"\tby mx.example.net (Postfix) with ESMTPS id 4AbCdE; Tue, 1 Dec 2026 10:00:00 +0000 (UTC)\r\n\r\n"
)


def warm_up() -> None:
    """Read one made-up header and throw the answer away.  The first parse
    in a process loads authres's features and compiles the few dozen regular
    expressions it parses with (about 3 ms here, a later parse 0.8 ms); the
    round trip does this in the wait's first pause, while the MTA delivers,
    so that the found probe's header is read at the later speed.  Only a
    head start: should an authres release ever refuse the sample, the run
    goes on, and the found header's own reading says what is wrong."""
    with suppress(Exception):
        read_verdicts(_SAMPLE_HEADER)
