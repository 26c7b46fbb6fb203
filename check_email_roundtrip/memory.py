"""Memory across runs: probes that were not delivered in time, slow streaks.

One JSON file per monitored mailbox (``--state-file``; default below).  It
holds the probes that timed out (so that a later run can tell a late arrival
from a lost message), the number of consecutive runs whose round trip was not
OK, and the running totals of late and lost probes.

Locking is nagiosplugin's ``Cookie`` (an exclusive lock, JSON written on
commit).  A run takes the lock twice and briefly: to read at the start, and
to merge its results at the end, never across the wait, so that concurrent
runs on the same mailbox do not wait for each other and do not lose each
other's entries.  A file that does not parse is reported and started afresh;
one that cannot be opened is reported and the run goes on without memory.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import nagiosplugin

STATE_VERSION = 1
# at most this many undelivered probes are remembered (the oldest go first)
MAX_PENDING = 50


@dataclass(frozen=True)
class PendingProbe:
    marker: str
    sent_at: float  # epoch seconds when MAIL FROM was sent
    queue_id: str | None = None

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.sent_at))
        return f"probe of {when}" + (f" (queued as {self.queue_id})" if self.queue_id else "")


@dataclass
class Memory:
    """The state file's content."""

    pending: list[PendingProbe] = field(default_factory=list)
    slow_streak: int = 0  # consecutive runs whose round trip was not OK
    late: int = 0  # running totals
    lost: int = 0


@dataclass(frozen=True)
class Remembered:
    """What the state file says after this run was merged into it."""

    slow_streak: int = 0
    late: int = 0
    lost: int = 0
    problems: tuple[str, ...] = ()  # what went wrong with the file, for the output
    usable: bool = True


def state_directory() -> str:
    """``$XDG_STATE_HOME`` (else ``~/.local/state``)/check_email_roundtrip"""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "check_email_roundtrip")


def default_state_file(imap_user: str, imap_host: str, folder: str) -> str:
    """state_directory()/<mailbox>.json, one file per monitored mailbox."""
    key = f"{imap_user}@{imap_host}/{folder}"
    readable = re.sub(r"[^A-Za-z0-9@._-]+", "_", f"{imap_user}@{imap_host}")[:80]
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:10]
    return os.path.join(state_directory(), f"{readable}-{digest}.json")


class StateFile:
    def __init__(self, path: str):
        self.path = path
        self.problems: list[str] = []  # what went wrong with the file, for the output
        self.usable = True

    def _open(self) -> Any:
        if not self.usable:
            return None
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            cookie = nagiosplugin.Cookie(self.path)
            try:
                return cookie.open()
            except ValueError:
                # Cookie truncated the file: start afresh, and say so
                cookie.close()
                self.problems.append(f"state file {self.path} was corrupt: started afresh")
                return nagiosplugin.Cookie(self.path).open()
        except (OSError, UnicodeDecodeError) as exc:
            self.usable = False
            reason = getattr(exc, "strerror", None) or str(exc)
            self.problems.append(f"state file {self.path} cannot be used ({reason}): no memory across runs")
            return None

    def read(self) -> Memory:
        cookie = self._open()
        if cookie is None:
            return Memory()
        try:
            return _memory_from(cookie.data)
        finally:
            cookie.close()

    def merge(
        self, resolved: list[str], new_pending: list[PendingProbe], late: int, lost: int, slow: bool | None
    ) -> Remembered:
        """Remove resolved markers, add new ones, count; ``slow`` None leaves the streak."""
        cookie = self._open()
        if cookie is None:
            return self._remembered(Memory())
        try:
            memory = _memory_from(cookie.data)
            memory.pending = [probe for probe in memory.pending if probe.marker not in resolved] + new_pending
            memory.pending = memory.pending[-MAX_PENDING:]
            memory.late += late
            memory.lost += lost
            if slow is not None:
                memory.slow_streak = memory.slow_streak + 1 if slow else 0
            cookie.data = {
                "version": STATE_VERSION,
                "pending": [
                    {"marker": p.marker, "sent_at": p.sent_at, "queue_id": p.queue_id} for p in memory.pending
                ],
                "slow_streak": memory.slow_streak,
                "late": memory.late,
                "lost": memory.lost,
            }
            cookie.commit()
            return self._remembered(memory)
        except OSError as exc:
            self.problems.append(f"state file {self.path} cannot be written ({exc.strerror})")
            return self._remembered(Memory())
        finally:
            cookie.close()

    def _remembered(self, memory: Memory) -> Remembered:
        return Remembered(memory.slow_streak, memory.late, memory.lost, tuple(self.problems), self.usable)


def _memory_from(data: dict[str, Any]) -> Memory:
    """Tolerant of what a hand edit or an older version left: bad entries are dropped."""
    pending = []
    for entry in data.get("pending", []) if isinstance(data.get("pending"), list) else []:
        try:
            pending.append(PendingProbe(str(entry["marker"]), float(entry["sent_at"]), entry.get("queue_id")))
        except (KeyError, TypeError, ValueError):
            continue
    numbers: list[int] = []
    for name in ("slow_streak", "late", "lost"):
        value = data.get(name, 0)
        numbers.append(value if isinstance(value, int) and value >= 0 else 0)
    return Memory(pending, *numbers)
