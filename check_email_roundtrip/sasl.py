"""The OAuth2 SASL mechanisms' messages, for SMTP AUTH and IMAP AUTHENTICATE.

- XOAUTH2 (Google, Microsoft): ``user=<user>^Aauth=Bearer <token>^A^A``; a
  server that rejects the token sends a challenge carrying base64 JSON
  (``{"status":"401","schemes":"bearer","scope":"..."}``), which the client
  answers with an empty response so that the final reply arrives.
- OAUTHBEARER (RFC 7628): a GS2 header, then ``host``, ``port`` and ``auth``
  key/value pairs; a failure challenge (JSON ``status``) is answered with a
  single ``^A`` (RFC 7628 3.2.3).

Both stdlib clients base64-encode what these return.  No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import json

from .credentials import Mechanism

# Longest AUTH command line the probe sends with the initial response on it:
# Postfix reads at most 2048 characters there (line_length_limit) and answers
# "Invalid base64 data in initial response" beyond; longer responses (real
# access tokens are 1.5-2.5 KB) go after the server's empty 334 instead.
MAX_INITIAL_RESPONSE_LINE = 2000


def _saslname(user: str) -> str:
    """RFC 5801 saslname: "," and "=" escaped."""
    return user.replace("=", "=3D").replace(",", "=2C")


def initial_response(mechanism: Mechanism, user: str, token: str, host: str, port: int) -> str:
    if mechanism is Mechanism.XOAUTH2:
        return f"user={user}\x01auth=Bearer {token}\x01\x01"
    if mechanism is Mechanism.OAUTHBEARER:
        return f"n,a={_saslname(user)},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
    raise ValueError(f"not an OAuth2 mechanism: {mechanism}")


def failure_answer(mechanism: Mechanism) -> str:
    """What the client sends back to a failure challenge to get the final reply."""
    return "\x01" if mechanism is Mechanism.OAUTHBEARER else ""


def fits_on_auth_line(mechanism: Mechanism, response: str) -> bool:
    encoded = len(base64.b64encode(response.encode("utf-8")))
    return len(f"AUTH {mechanism.value.upper()} ") + encoded + 2 <= MAX_INITIAL_RESPONSE_LINE


def describe_challenge(challenge: bytes) -> str:
    """A failure challenge in words: its JSON fields (status, schemes, scope),
    or the text itself when it is not JSON.  Already decoded from base64 by
    the stdlib clients; a server that sends it encoded twice is decoded too."""
    text = challenge.decode("utf-8", "replace").strip()
    for candidate in (text, _unbase64(text)):
        try:
            fields = json.loads(candidate) if candidate else None
        except ValueError:
            continue
        if isinstance(fields, dict):
            return ", ".join(
                f"{key} {value}" for key, value in fields.items() if isinstance(value, (str, int))
            )
    return " ".join(text.split())[:200]


def challenge_note(mechanism: Mechanism, challenge: bytes) -> str:
    """What to add to the server's final reply: the challenge, in words."""
    return f" ({mechanism.value.upper()} challenge: {describe_challenge(challenge)})"


def _unbase64(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return ""
