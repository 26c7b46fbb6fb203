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
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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


class _Held(logging.Handler):
    """Keeps records per thread, in the order the threads first logged."""

    def __init__(self) -> None:
        super().__init__()
        self.by_thread: dict[int | None, list[logging.LogRecord]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.by_thread.setdefault(record.thread, []).append(record)


@contextmanager
def threads_in_turn() -> Iterator[None]:
    """Log lines of threads working side by side (the IMAP and the SMTP
    sign-in), printed as if they had taken turns: each thread's lines as one
    block, the other threads' before the calling thread's."""
    log = logging.getLogger(LOGGER)
    handlers, held = log.handlers[:], _Held()
    log.handlers[:] = [held]
    try:
        yield
    finally:
        log.handlers[:] = handlers
        me = threading.get_ident()
        blocks = [records for thread, records in held.by_thread.items() if thread != me]
        for record in [r for block in blocks for r in block] + held.by_thread.get(me, []):
            log.handle(record)
