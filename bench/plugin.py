"""A check_email_roundtrip executable under test: ours, or the --baseline one.

Its commands against the stack, the facts one run leaves (perfdata, the -vv
`... sent at` lines, Dovecot's log-ins), and `python -X importtime`.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

from runner import Proc, log, perf, run, sent_at
from stackinfo import DovecotLog

# What the plugin's installation says about where it came from (pip's direct_url.json).
ORIGIN = ("import importlib.metadata as m, json\n"
          "d = m.distribution('check_email_roundtrip')\n"
          "print(json.loads(d.read_text('direct_url.json') or '{}').get('url', '?'))\n")


def shebang_python(path: str) -> str:
    with open(path, "rb") as fh:
        first = fh.readline().decode(errors="replace").strip()
    if not first.startswith("#!"):
        raise SystemExit(f"bench: {path} has no #! line: pass its interpreter with --python")
    return first[2:].split()[0]


@dataclass
class Trip:
    """One round-trip run of a plugin."""

    proc: Proc
    user: str  # whose INBOX the probe went to
    roundtrip: float | None
    imap_retrieval: float | None
    marker: str | None
    mail_from: float | None  # epoch, from `MAIL FROM sent at`
    data: float | None  # epoch, from `DATA sent at` (not every version logs it)
    logins: int | None  # Dovecot `imap-login: Login:` lines during the run

    @property
    def ok(self) -> bool:
        return self.proc.rc == 0 and self.roundtrip is not None


@dataclass
class ImportTimes:
    top: list[tuple[str, int, int]]  # (module, self us, cumulative us), top-level imports, costliest first
    total: int  # us, sum of the top-level cumulative times
    count: int  # top-level imports
    trip: Trip


class Plugin:
    def __init__(self, path: str, label: str, python: str | None = None):
        if not os.access(path, os.X_OK):
            raise SystemExit(f"bench: {label} plugin {path!r} is not an executable")
        self.path = path
        self.label = label
        self.python = python or shebang_python(path)
        self.version = self._ask([path, "--version"])
        url = self._ask([self.python, "-I", "-c", ORIGIN])  # -I: not a checkout in the cwd
        self.origin = url
        if url.startswith("file://"):
            head = self._ask(["git", "-C", url[len("file://"):], "describe", "--always", "--dirty"])
            self.origin = f"{url} (git {head})"

    @staticmethod
    def _ask(cmd: list[str]) -> str:
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except OSError as exc:
            return f"? ({exc})"
        return res.stdout.strip() or f"? (exit {res.returncode}: {res.stderr.strip()[:200]})"

    def describe(self) -> str:
        return (f"`{self.path}` (`--version`: {self.version}; python {self.python}; "
                f"installed from {self.origin})")

    # ---------------------------------------------------------------- commands
    def roundtrip_cmd(self, st: dict, user: str = "probe", imap_user: str | None = None,
                      sign_in: list[str] | None = None) -> list[str]:
        """sign_in: how both logins prove themselves (default: the user's password file)."""
        su = st["users"][user]
        cmd = [self.path, "--mode", "roundtrip", "-H", st["tls_hostname"],
               "--smtp-port", str(st["ports"]["submission"]), "--smtp-security", "starttls",
               "--imap-port", str(st["ports"]["imaps"]), "--imap-security", "tls",
               "--ca-file", st["ca"], "--smtp-user", su["login"],
               *(sign_in or ["--smtp-password-file", su["password_file"]]), "--no-state", "--no-junk", "-vv"]
        if imap_user:
            iu = st["users"][imap_user]
            cmd += ["--to", iu["address"], "--imap-user", iu["login"],
                    "--imap-password-file", iu["password_file"]]
        return cmd

    def failfast_cmd(self, port: int) -> list[str]:
        return [self.path, "--mode", "submit", "-H", "127.0.0.1", "--smtp-port", str(port),
                "--from", "a@example.test"]

    # ---------------------------------------------------------------- runs
    def trip(self, st: dict, dlog: DovecotLog, imap_user: str | None = None, prefix=(),
             sign_in: list[str] | None = None, env: dict[str, str] | None = None) -> Trip:
        """One round trip; prefix goes before the command (e.g. python -X importtime)."""
        offset = dlog.offset()
        proc = run([*prefix, *self.roundtrip_cmd(st, imap_user=imap_user, sign_in=sign_in)], env=env)
        text = proc.text
        m = re.search(r"^marker (\S+)", text, re.M)
        trip = Trip(proc=proc, user=imap_user or "probe", roundtrip=perf(text, "roundtrip"),
                    imap_retrieval=perf(text, "imap_retrieval"), marker=m.group(1) if m else None,
                    mail_from=sent_at(text, "MAIL FROM"), data=sent_at(text, "DATA"),
                    logins=dlog.logins_since(offset))
        if not trip.ok:
            log(f"{self.label} run failed rc={proc.rc}: {text.strip().splitlines()[:3]}")
        return trip

    def failfast(self, port: int) -> Proc:
        return run(self.failfast_cmd(port))

    def importtime(self, st: dict, dlog: DovecotLog, top: int = 15) -> ImportTimes:
        """One round trip under `python -X importtime`: the top-level imports, costliest first."""
        trip = self.trip(st, dlog, prefix=(self.python, "-X", "importtime"))
        rows = []
        for line in trip.proc.err.splitlines():
            # "import time: <self> | <cumulative> | <two spaces per nesting level><module>"
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)$", line)
            if m and len(m.group(3)) == 1:
                rows.append((m.group(4), int(m.group(1)), int(m.group(2))))
        rows.sort(key=lambda r: r[2], reverse=True)
        return ImportTimes(top=rows[:top], total=sum(r[2] for r in rows), count=len(rows), trip=trip)
