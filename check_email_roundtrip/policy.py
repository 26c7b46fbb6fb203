"""What a verdict means for the service state: the defaults and --auth-policy.

A policy maps (method, result) to one of ``ok``, ``warning``, ``critical`` or
``ignore`` (printed, but without effect on the state).  ``pass`` is always
``ok``.  Lookup order: the user's METHOD:RESULT, the user's METHOD (every
non-pass result of that method), the default METHOD:RESULT, the default for
the method.

The pseudo-method ``header`` covers the Authentication-Results header itself:
``header:missing`` (the receiver wrote none) and ``header:malformed``.
"""

from __future__ import annotations

from collections.abc import Iterable

# The methods reported, each on its own line, in this order.
METHODS = ("spf", "dkim", "dmarc", "arc")
# ``result`` of a method the trusted header(s) do not mention.
NOT_EVALUATED = "missing"
# What a reported method's result may be: RFC 8601 section 2.7 (with RFC 5451's
# "hardfail"), and Microsoft's "bestguesspass" (no DMARC record was published;
# DMARC would have passed had there been one).
RESULT_WORDS = (
    "none",
    "pass",
    "fail",
    "softfail",
    "neutral",
    "temperror",
    "permerror",
    "policy",
    "hardfail",
    "bestguesspass",
)

HEADER = "header"
STATES = ("ok", "warning", "critical", "ignore")
ANY = "*"
# The results a header can give (RFC 8601 section 2.7 and the rest of
# RESULT_WORDS), plus ours: "missing" (method not evaluated), and for the
# header itself "missing" and "malformed".
RESULTS = (*RESULT_WORDS, NOT_EVALUATED)
HEADER_RESULTS = ("missing", "malformed")

DEFAULT_POLICY: dict[str, dict[str, str]] = {
    # SPF or DKIM alone failing: DMARC may still pass through the other, but
    # half of the defence is gone.
    "spf": {ANY: "warning"},
    "dkim": {ANY: "warning"},
    # DMARC failing: the receiver quarantines or rejects what the sender's
    # policy says; any other non-pass (none, temperror, permerror, missing)
    # is a warning.
    "dmarc": {"fail": "critical", ANY: "warning"},
    # ARC matters only for forwarded mail: a failing chain warns, an absent
    # one (the usual case for direct mail) is just reported.
    "arc": {"fail": "warning", ANY: "ignore"},
    HEADER: {ANY: "warning"},
}

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    PolicyRule = tuple[str, str | None, str]  # (method, result or None for all, state)


def parse_policy_rule(text: str) -> PolicyRule:
    """``METHOD[:RESULT]=STATE`` -> rule, or ValueError with the reason."""
    target, sep, state = text.partition("=")
    method_text, _, result_text = target.partition(":")
    method, state = method_text.strip().lower(), state.strip().lower()
    result = result_text.strip().lower() or None
    if not sep or method not in METHODS + (HEADER,):
        raise ValueError(
            f"expected METHOD[:RESULT]=STATE with METHOD one of {', '.join(METHODS + (HEADER,))}"
        )
    allowed = HEADER_RESULTS if method == HEADER else RESULTS
    if result is not None and (result not in allowed or result == "pass"):
        raise ValueError(f"result for {method} must be one of {', '.join(r for r in allowed if r != 'pass')}")
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}")
    return method, result, state


class AuthPolicy:
    def __init__(self, rules: Iterable[PolicyRule] = ()):
        self.user: dict[str, dict[str, str]] = {}
        for method, result, state in rules:
            self.user.setdefault(method, {})[result or ANY] = state

    def state_for(self, method: str, result: str) -> str:
        if result == "pass":
            return "ok"
        user = self.user.get(method, {})
        default = DEFAULT_POLICY[method]
        for table, key in ((user, result), (user, ANY), (default, result), (default, ANY)):
            if key in table:
                return table[key]
        return "warning"  # not reached: every default table has ANY
