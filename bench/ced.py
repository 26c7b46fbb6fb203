"""The peer: Debian's check_email_delivery (monitoring-plugins-contrib), on the same stack.

Its certificates are verified against the stack CA through bench/perl/BenchTLS.pm
(PERL5OPT), because Net::SMTP::TLS gives IO::Socket::SSL no host name.
"""

from __future__ import annotations

import os

from runner import log, med, run
from stackinfo import Imap

HERE = os.path.dirname(os.path.abspath(__file__))
CED = "/usr/lib/nagios/plugins/check_email_delivery"
CED_SUBJECT = "Nagios Message SMTP"


def installed() -> bool:
    return os.path.exists(CED)


def env(st: dict) -> dict[str, str]:
    e = dict(os.environ)
    e["PERL5LIB"] = os.path.join(HERE, "perl") + (":" + e["PERL5LIB"] if e.get("PERL5LIB") else "")
    e["PERL5OPT"] = "-MBenchTLS"
    e["BENCH_CA_FILE"] = st["ca"]
    return e


def cmd(st: dict, wait: float | None = None) -> list[str]:
    u = st["users"]["probe"]
    c = [CED, "-H", st["host"], "--smtp-port", str(st["ports"]["submission"]), "--smtptls",
         "--imap-port", str(st["ports"]["imaps"]), "--imapssl",
         "-U", u["login"], "-P", u["password"],  # it takes passwords on argv only
         "--mailto", u["address"], "--mailfrom", u["address"], "--hires"]
    if wait is not None:
        c += ["--wait", str(wait)]
    return c


def purge(st: dict) -> int:
    """Delete its probes: its search matches every earlier one."""
    c = Imap(st, "probe")
    try:
        return c.delete_search("INBOX", "SUBJECT", f'"{CED_SUBJECT}"')
    finally:
        c.close()


def series(st: dict, wait: float | None, n: int, notes: list[str]) -> dict | None:
    """n runs, each on an INBOX without earlier probes; median wall time of the OK ones."""
    if not installed():
        notes.append(f"check_email_delivery not installed at {CED}")
        return None
    walls, errs = [], []
    e = env(st)
    for i in range(n):
        purge(st)
        r = run(cmd(st, wait), env=e, timeout=400)
        first = r.text.strip().splitlines()[:1]
        if r.rc == 0 and r.out.startswith("EMAIL DELIVERY OK"):
            walls.append(r.wall)
        else:
            errs.append(f"rc={r.rc} {first}")
        log(f"  check_email_delivery wait={wait} run {i + 1}: rc={r.rc} {r.wall:.2f}s {first}")
    purge(st)
    if errs:
        notes.append(f"check_email_delivery (--wait {wait}) failures: {'; '.join(errs[:3])}")
    return dict(wall=med(walls), n=len(walls), of=n)
