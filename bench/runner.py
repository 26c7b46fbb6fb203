"""Child processes, timed: wall time from fork to exit and the child's own rusage.

Also the small helpers every measurement shares: the log line, medians,
perfdata and `... sent at <ISO time>` parsing.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Proc:
    """One child process, reaped with os.wait4."""

    cmd: list[str]
    fork_wall: float  # time.time() just before the fork: where "process start" is measured from
    wall: float  # seconds from the fork until the child was reaped
    rc: int
    out: str
    err: str
    maxrss_kib: int  # ru_maxrss: the child's own peak RSS
    cpu: float  # ru_utime + ru_stime: the child's own CPU seconds

    @property
    def text(self) -> str:
        return self.out + self.err


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> Proc:
    """Run cmd, reap it with os.wait4 (the child's rusage alone, not the bench's)."""
    bufs: dict[str, bytes] = {}
    fork_wall = time.time()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    def drain(name: str, fh) -> None:
        bufs[name] = fh.read()

    readers = [threading.Thread(target=drain, args=(name, fh)) for name, fh in (("out", p.stdout),
                                                                                 ("err", p.stderr))]
    for reader in readers:
        reader.start()
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)  # before the timer could signal a reused pid
    timer.cancel()
    for reader in readers:
        reader.join()
    p.stdout.close()
    p.stderr.close()
    return Proc(cmd=cmd, fork_wall=fork_wall, wall=wall, rc=p.returncode,
                out=bufs["out"].decode(errors="replace"), err=bufs["err"].decode(errors="replace"),
                maxrss_kib=usage.ru_maxrss, cpu=usage.ru_utime + usage.ru_stime)


def perf(text: str, label: str) -> float | None:
    """The value of perfdata label in a plugin's output, in its unit."""
    m = re.search(rf"(?:^|\s|')({re.escape(label)})'?=([0-9.]+)", text)
    return float(m.group(2)) if m else None


def sent_at(text: str, what: str) -> float | None:
    """Epoch of the plugin's -vv line `<what> sent at <ISO 8601 UTC>`, if it logged one."""
    m = re.search(rf"^{re.escape(what)} sent at (\S+)", text, re.M)
    return datetime.fromisoformat(m.group(1)).timestamp() if m else None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None
