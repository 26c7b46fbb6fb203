"""Processes as /proc shows them: is a pid still ours, what did it start.

Dead daemons can linger as zombies for seconds on these machines (``kill -0``
says alive), and pids are reused: a process counts as alive only when it is
not a zombie and, where we know it, still has the start time we saw.
"""

import os
import signal
import time


def proc_stat(pid):
    """(state, ppid, starttime) of a process, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            data = fh.read()
    except (OSError, ValueError):
        return None
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def proc_alive(pid, starttime=None):
    stat = proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X", "x"):   # zombies count as dead
        return False
    return starttime is None or stat[2] == starttime


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [arg.decode(errors="replace") for arg in fh.read().split(b"\0") if arg]
    except OSError:
        return []


def descendants(root):
    """Every pid below root in the process tree."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = proc_stat(int(name))
            if stat:
                children.setdefault(stat[1], []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def read_pidfile(path):
    try:
        with open(path) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def tail(path, n=30):
    """The last n lines of a (log) file, "" if there is none."""
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-n:])
    except OSError:
        return ""


def kill_tree(roots, timeout, reap=None):
    """SIGTERM to roots, wait for them and all their descendants (as they were
    when called), SIGKILL the rest.  reap() is called while waiting (a
    parent's Popen.poll, so a child of ours does not stay a zombie).  Returns
    the pids still alive at the end."""
    procs = []
    for root in dict.fromkeys(roots):
        for pid in [root, *descendants(root)]:
            stat = proc_stat(pid)
            if stat and (pid, stat[2]) not in procs:
                procs.append((pid, stat[2]))
    for root in dict.fromkeys(roots):
        try:
            os.kill(root, signal.SIGTERM)
        except OSError:
            pass

    def alive():
        return [pid for pid, start in procs if proc_alive(pid, start)]

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if reap:
            reap()
        time.sleep(0.05)
    for pid in alive():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if reap:
        reap()
    end = time.monotonic() + 5
    while time.monotonic() < end and alive():
        time.sleep(0.05)
    return alive()
