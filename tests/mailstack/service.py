"""The Service base class: one daemon of the stack, its pid file and its life cycle."""

import os
import signal
import subprocess
import time

from .config import START_TIMEOUT, STOP_TIMEOUT
from .procs import kill_tree, proc_alive, read_pidfile, tail
from .system import StackError


class Service:
    """One daemon.  A subclass says which packages it needs, writes its
    configuration, starts it, finds its pid and names the endpoints that must
    answer once it runs.  The stack starts services in its own order."""

    name = "?"
    packages = ()
    preseed = ()          # debconf-set-selections lines
    start_hint = ""       # appended to the error when the start command fails
    ready_timeout = START_TIMEOUT   # budget for endpoints() to open after start

    def __init__(self, stack):
        self.stack = stack
        # every daemon logs to <name>.log, its start-up output to <name>-start.log
        self.log = os.path.join(stack.log_dir, f"{self.name}.log")
        self.start_log = os.path.join(stack.log_dir, f"{self.name}-start.log")

    # -- to override ------------------------------------------------------
    def write_config(self):
        """Write the private config files; return True if anything changed."""
        raise NotImplementedError

    def start(self):
        raise NotImplementedError

    def pidfile(self):
        raise NotImplementedError

    def matches(self, pid):
        """Is pid our daemon (and not a reused pid)?"""
        raise NotImplementedError

    def endpoints(self):
        """[Endpoint, ...] that must answer once the daemon runs."""
        return []

    def info(self):
        return {}

    def certificate_files(self):
        """Certificate files the daemon reads at start and reload only: up
        reloads it when one of them was made anew."""
        return []

    def reload(self):
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGHUP)

    # -- generic ------------------------------------------------------------
    def pid(self):
        pid = read_pidfile(self.pidfile())
        if pid and proc_alive(pid) and self.matches(pid):
            return pid
        return None

    def is_running(self):
        return self.pid() is not None

    def clear_stale_pidfile(self):
        if not self.is_running() and os.path.exists(self.pidfile()):
            os.unlink(self.pidfile())

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, then SIGKILL for whatever of its process tree is left.
        False when it was not running."""
        pid = self.pid()
        if not pid:
            self.clear_stale_pidfile()
            return False
        kill_tree([pid], timeout)
        try:
            os.unlink(self.pidfile())
        except OSError:
            pass
        return True

    def restart(self):
        """For daemons whose reload is not good enough (see the subclasses)."""
        self.stop()
        self.start()
        self.stack.wait_ready(services=[self])

    def spawn(self, cmd, env=None):
        """Run a daemonizing start command; its output goes to start_log, never
        to our stdout/stderr (a harness waiting for those to close would hang)."""
        with open(self.start_log, "a") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(cmd)}\n")
            out.flush()
            # rspamd's parent returns only after loading its config (about
            # 10 s on a first start): allow for it, but never hang forever.
            timeout = max(60.0, self.ready_timeout)
            try:
                rc = subprocess.call(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, close_fds=True,
                                     timeout=timeout)
            except subprocess.TimeoutExpired:
                raise StackError(f"{self.name}: start command still running after {timeout:.0f}s: "
                                 f"{' '.join(cmd)}\n{tail(self.log)}") from None
        if rc != 0:
            raise StackError(f"{self.name}: start failed (rc={rc}): {' '.join(cmd)}\n"
                             f"{tail(self.start_log)}{tail(self.log)}{self.start_hint}")
