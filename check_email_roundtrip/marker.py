"""The per-run marker that identifies this probe's message.

Format: ``MARKER_PREFIX`` followed by 24 lowercase hex digits (96 random bits
from ``secrets``).  Why this shape:

- one word of letters and digits only: URL-safe, needs no quoting in an IMAP
  SEARCH, and survives servers whose search is word-based (no ``-`` or ``_``
  for a tokenizer to split on);
- lowercase hex, because IMAP SEARCH is case-insensitive: mixed-case base64
  would lose entropy to case folding, hex loses none;
- a fixed prefix, so that mail filters and a later clean-up can match every
  probe message and nothing else.
"""

import os
import re

MARKER_PREFIX = "emailrtprobe"
MARKER_RANDOM_BYTES = 12  # 96 bits
MARKER_PATTERN = re.compile(MARKER_PREFIX + f"[0-9a-f]{{{2 * MARKER_RANDOM_BYTES}}}")


def new_marker() -> str:
    return MARKER_PREFIX + os.urandom(MARKER_RANDOM_BYTES).hex()  # the CSPRNG secrets uses


def is_marker(text: str) -> bool:
    return MARKER_PATTERN.fullmatch(text) is not None
