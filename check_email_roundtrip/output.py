"""Where the log lines go: kept in memory for the renderer.

Nagios reads stdout and drops stderr; Zabbix merges stderr into the value.  So
everything the plugin says goes to stdout, and the log lines (``-v`` and up)
are collected here and printed by the renderer below the status line, where
the plugin guidelines put them.  Secrets are masked where server text enters
(``mask.py``), not here.
"""

from __future__ import annotations

import io
import logging

LOGGER = "check_email_roundtrip"
TRACE = 5  # log level of the protocol trace (-vvv)
logging.addLevelName(TRACE, "TRACE")
_buffer = io.StringIO()
_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


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
