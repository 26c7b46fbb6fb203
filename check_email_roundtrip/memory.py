"""Memory across runs: probes not delivered yet, slow streaks, running totals.

One JSON file per monitored mailbox (``--state-file``; default below).  It
holds the probes still undelivered (so that a later run can tell a late
arrival from a lost message, and ``--no-wait`` can judge them), the number of
consecutive runs whose round trip was not OK, and the running totals of late
and lost probes.

A run reads the file at its start and merges into it at its end, each time
under an exclusive lock (``files.FileLock``) waited for inside the ``-t``
budget, never across the wait: runs on the same mailbox neither wait for
each other nor lose each other's entries, and a probe that two runs find at
once is counted once (only the run that still finds it pending counts it).
The file is replaced atomically, mode 0600, and never followed through a
symbolic link.  A path that is a link, another user's file, not a regular
file, or a file that is not this plugin's state is left alone and said
(WARNING, no memory this run): a mistyped ``--state-file /etc/passwd`` can
never destroy anything.  Entries that do not make sense (a time that is not
a number, NaN, in the far future) are dropped and the file repaired.
"""

from __future__ import annotations

import math
import os
import re
import time

from .deadline import Deadline
from .files import FileLock, read_private, write_private
from .record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Any

FORMAT = "check_email_roundtrip state"  # the "format" key: a file we wrote
STATE_VERSION = 2
# at most this many undelivered probes are remembered (the oldest go first)
MAX_PENDING = 50
MAX_STATE_BYTES = 1024 * 1024
# A probe's time must lie between this and a day from now to be believed.
EARLIEST = 946684800.0  # 2000-01-01


class PendingProbe(Record):
    marker: str
    sent_at: float  # epoch seconds when MAIL FROM was sent
    queue_id: str | None = None

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.sent_at))
        return f"probe of {when}" + (f" (queued as {self.queue_id})" if self.queue_id else "")


class Memory:
    """The state file's content."""

    def __init__(
        self,
        pending: list[PendingProbe] | None = None,
        slow_streak: int = 0,
        late: int = 0,
        lost: int = 0,
        dropped: int = 0,
    ):
        self.pending = pending or []
        self.slow_streak = slow_streak  # consecutive runs whose round trip was not OK
        self.late, self.lost = late, lost  # running totals
        self.dropped = dropped  # entries that made no sense, dropped when read


class Change(Record):
    """What one run adds to the memory."""

    arrived: tuple[str, ...] = ()  # markers of earlier probes found late
    judged: tuple[str, ...] = ()  # --no-wait: markers of earlier probes judged (not counted late)
    lost: tuple[str, ...] = ()  # markers given up on
    new_pending: tuple[PendingProbe, ...] = ()  # this run's probe, when it is not found yet
    slow: bool | None = None  # None leaves the streak as it is


class Remembered(Record):
    """What the state file says after this run was merged into it."""

    slow_streak: int = 0
    late: int = 0
    lost: int = 0
    pending: int = 0  # probes still undelivered after this run
    problems: tuple[str, ...] = ()  # what went wrong with the file, for the output
    usable: bool = True


def state_directory() -> str:
    """``$XDG_STATE_HOME`` (else ``~/.local/state``)/check_email_roundtrip"""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "check_email_roundtrip")


def default_state_file(imap_user: str, imap_host: str, folder: str) -> str:
    """state_directory()/<mailbox>.json, one file per monitored mailbox."""
    import hashlib

    key = f"{imap_user}@{imap_host}/{folder}"
    readable = re.sub(r"[^A-Za-z0-9@._-]+", "_", f"{imap_user}@{imap_host}")[:80]
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:10]
    return os.path.join(state_directory(), f"{readable}-{digest}.json")


class NotOurs(Exception):
    """The path holds something we did not write: leave it alone."""


class StateFile:
    def __init__(self, path: str):
        self.path = path
        self.problems: list[str] = []
        self.usable = True

    def read(self, deadline: Deadline) -> Memory:
        if not self.usable:
            return Memory()
        try:
            # looked at before a lock file is made beside it: a path that is
            # not our state (a mistyped /etc/passwd) gets no /etc/passwd.lock,
            # which is the lock of shadow's tools and would stop useradd
            self._load()
            with FileLock(self.path + ".lock", deadline):
                return self._load()
        except (OSError, NotOurs) as exc:
            return self._unusable(exc)

    def merge(self, deadline: Deadline, change: Change) -> Remembered:
        """Apply this run's change to what the file says now (other runs may
        have changed it since we read it), and write it back."""
        if not self.usable:
            return self._remembered(Memory())
        try:
            with FileLock(self.path + ".lock", deadline):
                memory = self._load()
                markers = {probe.marker for probe in memory.pending}
                # counted only by the run that still finds them pending
                memory.late += len(markers & set(change.arrived))
                memory.lost += len(markers & set(change.lost))
                gone = set(change.arrived) | set(change.lost) | set(change.judged)
                memory.pending = [p for p in memory.pending if p.marker not in gone] + list(
                    change.new_pending
                )
                memory.pending = memory.pending[-MAX_PENDING:]
                if change.slow is not None:
                    memory.slow_streak = memory.slow_streak + 1 if change.slow else 0
                write_private(self.path, _dump(memory))
                return self._remembered(memory)
        except (OSError, NotOurs) as exc:
            self._unusable(exc, writing=True)
            return self._remembered(Memory())

    def _load(self) -> Memory:
        import json

        info = _lstat(self.path)
        if info is not None and info.st_uid != os.geteuid():
            raise NotOurs("belongs to another user")
        raw = read_private(self.path, MAX_STATE_BYTES)
        if raw is None:
            return Memory()
        try:
            data = json.loads(raw)  # NaN and Infinity parse: such entries are dropped below
        except ValueError:
            raise NotOurs("is not a state file of check_email_roundtrip (not JSON)") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT and data.get("version") != 1:
            raise NotOurs("is not a state file of check_email_roundtrip")
        memory = _memory_from(data)
        note = f"state file {self.path}: dropped {memory.dropped} entries that made no sense"
        if memory.dropped and note not in self.problems:  # read, then merged: said once
            self.problems.append(note)
        return memory

    def _unusable(self, exc: BaseException, writing: bool = False) -> Memory:
        self.usable = False
        if isinstance(exc, NotOurs):
            reason = f"{exc}: left alone"
        else:
            reason = f"cannot be {'written' if writing else 'used'} ({getattr(exc, 'strerror', None) or exc})"
        self.problems.append(f"state file {self.path} {reason}: no memory across runs")
        return Memory()

    def _remembered(self, memory: Memory) -> Remembered:
        return Remembered(
            memory.slow_streak,
            memory.late,
            memory.lost,
            len(memory.pending),
            tuple(self.problems),
            self.usable,
        )


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _dump(memory: Memory) -> bytes:
    import json

    return json.dumps(
        {
            "format": FORMAT,
            "version": STATE_VERSION,
            "pending": [
                {"marker": p.marker, "sent_at": p.sent_at, "queue_id": p.queue_id} for p in memory.pending
            ],
            "slow_streak": memory.slow_streak,
            "late": memory.late,
            "lost": memory.lost,
        },
        indent=1,
    ).encode()


def _memory_from(data: dict[str, Any]) -> Memory:
    """Tolerant of what a hand edit or an older version left: entries that
    do not make sense are dropped (and counted)."""
    from .marker import is_marker

    pending, dropped = [], 0
    latest = time.time() + 86400
    entries = data.get("pending")
    for entry in entries if isinstance(entries, list) else []:
        try:
            marker, sent_at = str(entry["marker"]), float(entry["sent_at"])
            queue_id = entry.get("queue_id")
            if not is_marker(marker) or not math.isfinite(sent_at) or not EARLIEST <= sent_at <= latest:
                raise ValueError(marker)
            pending.append(PendingProbe(marker, sent_at, str(queue_id)[:64] if queue_id else None))
        except (KeyError, TypeError, ValueError, AttributeError):
            dropped += 1

    def count(name: str) -> int:
        value = data.get(name, 0)
        return value if isinstance(value, int) and 0 <= value < 2**53 else 0

    return Memory(pending, count("slow_streak"), count("late"), count("lost"), dropped)
