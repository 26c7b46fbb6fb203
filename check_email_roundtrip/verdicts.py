"""What the receiving side concluded: SPF, DKIM, DMARC (and ARC) verdicts.

Knows nothing of Nagios.  ``read_verdicts`` takes the header block of the
found message and returns :class:`AuthVerdicts`: one :class:`Verdict` per
method, from the Authentication-Results header(s) the probe trusts, plus what
it ignored and why.  Parsing is ``authres``'s; ``authres`` is imported here
only, so runs that never read verdicts never load it.

Trust (RFC 8601, section 5): anybody can put an Authentication-Results header
into a message they send.  The receiver adds its own above everything it
received, so by default only the topmost header is trusted; with
``authserv_id`` every header carrying that authserv-id is trusted (for
receivers that write one header per method, such as OpenDKIM + OpenDMARC),
and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from .message import parse_header, unfold

# The methods reported, each on its own line, in this order.
METHODS = ("spf", "dkim", "dmarc", "arc")
# ``result`` of a method the trusted header(s) do not mention.
NOT_EVALUATED = "missing"
# Property values not worth a line (the signature's first bytes).
_HIDDEN_PROPERTIES = {("header", "b")}
# "dmarc=fail (p=QUARANTINE sp=NONE dis=NONE)" (Gmail, OpenDMARC) or
# "(policy=quarantine)" (rspamd): authres drops comments, the policy is in one.
_POLICY_IN_COMMENT = re.compile(r"\b(?:p|policy)\s*=\s*([a-z]+)", re.I)
_COMMENT = re.compile(r"\(([^()]*)\)")
# Longest receiver comment shown with a non-pass verdict.
_MAX_COMMENT = 120
# Where receivers say which address the mail came from: rspamd and Gmail in
# the SPF comment, Microsoft 365 as "sender IP is", others as smtp.remote-ip.
_SENDER_IP = (
    re.compile(r"designates? \[?([0-9a-f:.]+)\]? as permitted sender", re.I),
    re.compile(r"sender IP is \[?([0-9a-f:.]+)\]?", re.I),
    re.compile(r"smtp\.remote-ip=\[?([0-9a-f:.]+)\]?", re.I),
)
# Microsoft 365 writes Authentication-Results without an authserv-id.
_STARTS_WITH_RESULT = re.compile(r"^\s*[a-z0-9-]+\s*=\s*[a-z]+", re.I)


@dataclass(frozen=True)
class Verdict:
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


@dataclass(frozen=True)
class AuthVerdicts:
    authserv_id: str | None  # of the trusted header(s); None when there is none
    verdicts: dict[str, Verdict]  # every method of METHODS, in that order
    header_found: bool  # the receiver wrote an Authentication-Results header
    malformed: str | None = None  # why the trusted header could not be parsed
    ignored: tuple[str, ...] = ()  # one description per ignored header
    sender_ip: str | None = None  # the address the receiver saw the mail come from

    def with_dmarc_policy(self, policy: str) -> AuthVerdicts:
        """The same, with the policy from the _dmarc record when the header did not say it."""
        verdict = self.verdicts["dmarc"]
        if verdict.result == NOT_EVALUATED or any(d.startswith("p=") for d in verdict.details):
            return self
        verdicts = dict(self.verdicts)
        verdicts["dmarc"] = replace(verdict, details=(f"p={policy}", *verdict.details))
        return replace(self, verdicts=verdicts)


class MalformedHeader(Exception):
    pass


def _parse(value: str) -> Any:
    """authres's parse, with the one shim real receivers need."""
    import authres

    features = authres.all_features()
    try:
        try:
            return features.parse_value(value)
        except authres.AuthResError:
            if not _STARTS_WITH_RESULT.match(value):
                raise
            # No authserv-id (Microsoft 365): parse the results on their own.
            parsed = features.parse_value("unnamed; " + value)
            parsed.authserv_id = None
            return parsed
    except Exception as exc:  # authres raises more than AuthResError on odd input
        raise MalformedHeader(" ".join(str(exc).split())[:160] or exc.__class__.__name__) from None


def _comments(raw_value: str, method: str, result: str) -> list[str]:
    """The comments in one method's part of the raw header (authres drops them)."""
    segment = re.search(
        r"(?:^|;)\s*" + re.escape(method) + r"\s*=\s*" + re.escape(result) + r"\b([^;]*)", raw_value, re.I
    )
    return [" ".join(text.split()) for text in _COMMENT.findall(segment.group(1))] if segment else []


def _details(result: Any, raw_value: str) -> tuple[str, ...]:
    details = []
    comments = _comments(raw_value, result.method, result.result or "")
    if result.method == "dmarc":
        policies = [_POLICY_IN_COMMENT.search(comment) for comment in comments]
        policy = next((match.group(1).lower() for match in policies if match), None)
        if policy:
            details.append(f"p={policy}")
            comments = []  # the policy was the comment's news
    if (result.result or "").lower() == "pass":
        comments = []
    if getattr(result, "reason", None):
        details.append(f'reason="{result.reason}"')
    for prop in result.properties:
        if (prop.type, prop.name) not in _HIDDEN_PROPERTIES and prop.value is not None:
            details.append(f"{prop.type}.{prop.name}={prop.value}")
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


def _why_ignored(parsed: Any, trusted: list[tuple[str, Any]], authserv_id: str | None) -> str:
    if authserv_id is not None:
        return f"authserv-id is not {authserv_id}"
    if not trusted or parsed.authserv_id != trusted[0][1].authserv_id:
        return "not the topmost"
    # Same authserv-id as the topmost header.  Methods the topmost one already
    # reports, said again below it: what a forger's header looks like.  Only
    # other methods: a receiver writing one header per method.
    seen = {result.method for result in trusted[0][1].results}
    if seen & {result.method for result in parsed.results}:
        return "not the topmost; repeats the receiver's methods: possibly forged"
    return (
        "not the topmost; if the receiver writes one header per method, "
        f"--authserv-id {parsed.authserv_id} trusts them all"
    )


def _sender_ip(raw_headers: list[str]) -> str | None:
    for raw in raw_headers:
        for pattern in _SENDER_IP:
            match = pattern.search(raw)
            if match:
                return match.group(1)
    return None


def read_verdicts(header_block: bytes, authserv_id: str | None = None) -> AuthVerdicts:
    message = parse_header(header_block)
    raw_headers = [unfold(value) for value in message.get_all("Authentication-Results") or []]
    wanted = authserv_id.lower() if authserv_id else None

    trusted: list[tuple[str, Any]] = []
    ignored: list[str] = []
    malformed: str | None = None
    for position, raw in enumerate(raw_headers):
        try:
            parsed = _parse(raw)
        except MalformedHeader as exc:
            if (wanted is None and position == 0) or (wanted and raw.lower().startswith(wanted)):
                malformed = str(exc)
            else:
                ignored.append(f"header {position + 1} (malformed)")
            continue
        header_id = parsed.authserv_id
        if (wanted is None and position == 0) or (wanted is not None and header_id == wanted):
            trusted.append((raw, parsed))
        else:
            ignored.append(
                f"header {position + 1} from {header_id or '(no authserv-id)'} "
                f"({_why_ignored(parsed, trusted, authserv_id)})"
            )

    verdicts: dict[str, Verdict] = {}
    for raw, parsed in trusted:
        for result in parsed.results:
            method = (result.method or "").lower()
            if method in METHODS:
                verdict = Verdict(method, (result.result or "").lower(), _details(result, raw))
                verdicts[method] = _best(verdicts.get(method), verdict)
    trusted_id = trusted[0][1].authserv_id if trusted else None
    return AuthVerdicts(
        authserv_id=trusted_id,
        verdicts={method: verdicts.get(method) or Verdict(method, NOT_EVALUATED) for method in METHODS},
        header_found=bool(trusted) or malformed is not None,
        malformed=malformed,
        ignored=tuple(ignored),
        sender_ip=_sender_ip([raw for raw, _ in trusted]),
    )
