"""Where output goes: stdout only, secrets masked, log lines kept for the end.

Nagios reads stdout and drops stderr; Zabbix merges stderr into the value.  So
everything the plugin says goes to stdout, through :class:`MaskedOutput`, and
the log lines (``-v`` and up) are collected in memory and printed by the
renderer below the status line, where the plugin guidelines put them.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import TextIO

LOGGER = "check_email_roundtrip"
# Every secret text the run knows: set by the CLI, grown when a token arrives.
_secrets: set[str] = set()
TRACE = 5  # log level of the protocol trace (-vvv)
logging.addLevelName(TRACE, "TRACE")
_buffer = io.StringIO()
_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


def register_secret(*texts: str) -> None:
    """Mask these from now on (tokens obtained at run time, their base64 forms)."""
    _secrets.update(text for text in texts if text)


class MaskedOutput:
    """stdout, with every secret replaced: the one place all output passes.

    The protocol trace already hides AUTH and LOGIN, but a server may echo
    what it was sent in an error; whatever path a secret takes (status line,
    long output, log lines, a traceback at -vvv), it is masked here.
    """

    def __init__(self, stream: TextIO, secrets: Sequence[str] = ()):
        self.stream = stream
        register_secret(*secrets)

    def mask(self, text: str) -> str:
        # longest first, so a secret containing another is masked whole
        for secret in sorted(_secrets, key=len, reverse=True):
            text = text.replace(secret, "********")
        return text

    def write(self, text: str) -> int:
        return self.stream.write(self.mask(text))

    def flush(self) -> None:
        self.stream.flush()


def configure_logging(verbose: int) -> None:
    """Our log lines at the level -v asks for, into the buffer."""
    log = logging.getLogger(LOGGER)
    level = _LEVELS.get(verbose, TRACE)
    handler = logging.StreamHandler(_buffer)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def log_lines() -> list[str]:
    return _buffer.getvalue().splitlines()
