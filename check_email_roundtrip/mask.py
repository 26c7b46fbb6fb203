"""Secrets out of everything the plugin prints, where they can appear.

The plugin never puts a secret into its own words; a secret can reach the
output only inside what a server sent back (an error quoting our AUTH line,
a trace line) or what a token command printed.  Those texts pass
:func:`mask`, which replaces every known secret in every form it travels in:
as typed, with its whitespace runs collapsed (replies are made one line), as
an IMAP quoted string (``"`` and ``\\`` escaped), and base64 (AUTH PLAIN and
LOGIN, the OAuth2 initial responses).  Our own words (the state, the
phase, paths, numbers) are never masked, and inside server text a secret is
replaced only where it stands on its own, not inside a longer word or a
dotted number: a one-letter test password does not turn ``/nonexistent``
into ``/none********istent``, nor a password ``0`` the reply ``250 2.0.0``
into ``250 2.********.********``.
"""

from __future__ import annotations

import re

MASK = "********"
# Characters that continue a word (or a base64 run) around a secret.
_WORD = r"[A-Za-z0-9]"
# ... and a dotted number around it ("2.0.0", "0.105"): digits either side of a dot
_BEFORE = rf"(?<!{_WORD})(?<![0-9]\.)"
_AFTER = rf"(?!{_WORD})(?!\.[0-9])"
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def forms(secret: str) -> set[str]:
    """The ways a secret may be written back to us."""
    import base64

    quoted = secret.replace("\\", "\\\\").replace('"', '\\"')
    collapsed = " ".join(secret.split())
    encoded = base64.b64encode(secret.encode("utf-8")).decode("ascii")
    return {text for text in (secret, quoted, collapsed, encoded) if text.strip()}


def register_secret(*texts: str, encoded: bool = False) -> None:
    """Mask these from now on (``encoded``: only as given, e.g. a base64
    AUTH response already)."""
    global _pattern
    for text in texts:
        if text:
            _secrets.update({text} if encoded else forms(text))
    _pattern = None


def mask(text: str) -> str:
    global _pattern
    if not _secrets or not text:
        return text
    if _pattern is None:
        # longest first, so a secret containing another is masked whole
        alternatives = "|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True))
        _pattern = re.compile(f"{_BEFORE}(?:{alternatives}){_AFTER}")
    return _pattern.sub(MASK, text)
