"""From the runs to bench/results.md: the figures, the table, the notes."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone

from floor import ROUNDTRIP_IMPORTS
from runner import med, ratio


def fmt(x, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def met(cond) -> str:
    return "n/a" if cond is None else ("**met**" if cond else "**not met**")


def below(x, limit, strict: bool = False):
    if x is None:
        return None
    return x < limit if strict else x <= limit


# ---------------------------------------------------------------- figures
def trip_figures(trips, stored: dict[str, float]) -> dict:
    """Medians over the OK round trips of one plugin (rows 1, 2, 5, 6, 8)."""
    ok = [t for t in trips if t.ok]
    lags, truths, have_mf = [], [], True
    for t in ok:
        d = stored.get(t.marker)
        if d is None:
            continue
        mf = t.mail_from
        if mf is None:  # a version that does not log it: launch time, an upper bound
            have_mf = False
            mf = t.proc.fork_wall
        truths.append(d - mf)
        lags.append((t.roundtrip - (d - mf)) * 1000)
    logins = [t.logins for t in ok if t.logins is not None]
    return dict(
        n=len(ok), of=len(trips), wall=med([t.proc.wall for t in ok]), cpu=med([t.proc.cpu for t in ok]),
        overlap=med([t.data - t.proc.fork_wall for t in ok if t.data is not None]),
        to_mail_from=med([t.mail_from - t.proc.fork_wall for t in ok if t.mail_from is not None]),
        lag_n=len(lags), lag=med(lags), lag_max=max(lags) if lags else None, truth=med(truths),
        reported=med([t.roundtrip for t in ok]), have_mf=have_mf,
        logins=med(logins), logins_min=min(logins) if logins else None,
        logins_max=max(logins) if logins else None)


def retrieval_figures(trips) -> dict:
    ok = [t for t in trips if t.ok]
    rss = [t.proc.maxrss_kib / 1024.0 for t in ok]
    return dict(n=len(ok), of=len(trips), retrieval=med([t.imap_retrieval for t in ok]),
                rss=max(rss) if rss else None, rss_med=med(rss))


# ---------------------------------------------------------------- the table
COLUMNS = [("#", "num"), ("measurement", "what"), ("ours (after)", "ours"), ("before", "before"),
           ("after/before", "ab"), ("reference", "ref"), ("ratio ours/ref", "ratio"), ("target", "target"),
           ("met?", "met")]


class Table:
    def __init__(self, with_baseline: bool):
        self.with_baseline = with_baseline
        self.rows: list[dict[str, str]] = []

    def add(self, num, what, **cells) -> None:
        self.rows.append(dict(num=str(num), what=what, **cells))

    def render(self) -> str:
        cols = COLUMNS if self.with_baseline else [
            ("ours", "ours") if key == "ours" else (head, key)
            for head, key in COLUMNS if key not in ("before", "ab")]
        lines = ["| " + " | ".join(head for head, _ in cols) + " |", "|" + "---|" * len(cols)]
        for row in self.rows:
            lines.append("| " + " | ".join(row.get(key, "") for _, key in cols) + " |")
        return "\n".join(lines)


def build_table(b) -> str:
    """b: the Bench after its runs."""
    base = b.baseline is not None
    t = Table(base)
    o = b.fig["ours"]
    p = b.fig.get("before") or {}

    def both(key, spec=".3f", n=True):
        def cell(f):
            if not f:
                return ""
            return fmt(f.get(key), spec) + (f" (n={f['n']})" if n and f.get(key) is not None else "")
        return dict(ours=cell(o), before=cell(p), ab=fmt(ratio(o.get(key), p.get(key)), ".2f") if p else "")

    # 1
    for label, c in (("defaults (5 s wait)", b.ced_default), ("--wait 1", b.ced_wait1)):
        what = f"whole check wall time [s] vs check_email_delivery {label}"
        if c is None or c["wall"] is None:
            t.add(1, what, **both("wall"), ref="failed", ratio="n/a", target="<= 0.1", met="n/a")
            continue
        r = ratio(o["wall"], c["wall"])
        t.add(1, what, **both("wall"), ref=f"{fmt(c['wall'])} (n={c['n']}/{c['of']})", ratio=fmt(r),
              target="<= 0.1", met=met(below(r, 0.1)))
    # 2
    src = ("MAIL FROM time logged by the plugin (-vv)" if o["have_mf"]
           else "launch time (upper-bound proxy)")

    def lag(f):
        if not f:
            return ""
        return f"median {fmt(f['lag'], '.1f')}, max {fmt(f['lag_max'], '.1f')} (n={f['lag_n']})"
    t.add(2, f"detection lag = reported roundtrip - (Dovecot stored-mail time - {src}) [ms]",
          ours=lag(o), before=lag(p),
          ref=f"ground truth median {fmt(o['truth'])} s; reported median {fmt(o['reported'])} s",
          target="median < 20 ms (was: max < 50 ms)",
          met=f"median: {met(below(o['lag'], 20, strict=True))}; max < 50: "
              f"{met(below(o['lag_max'], 50, strict=True))}")
    # 3
    first = b.retr[0] if b.retr else None
    for r in b.retr:
        ro, rp = r["ours"], r.get("before")
        vs_empty = ratio(ro["retrieval"], first["ours"]["retrieval"])
        fl = r["fresh"] or r["floor"]
        vs_floor = ratio(ro["retrieval"], fl)
        cond = None
        if r is not first and vs_empty is not None:
            cond = vs_empty <= 1.5 or (vs_floor is not None and vs_floor <= 1.2)

        def retr(f):
            return f"{fmt(f['retrieval'])} (n={f['n']}/{f['of']})" if f else ""
        t.add(3, f"imap_retrieval [s] with {r['size']} preloaded (folder EXISTS {r['exists']})",
              ours=retr(ro), before=retr(rp),
              ab=fmt(ratio(ro["retrieval"], rp["retrieval"]), ".2f") if rp else "",
              ref=f"floor (imaplib connect+TLS+LOGIN+SELECT+UID SEARCH UID n:*): just after a fresh delivery "
                  f"{fmt(r['fresh'])}, idle mailbox {fmt(r['floor'])}",
              ratio=f"vs empty {fmt(vs_empty, '.2f')}; vs fresh floor {fmt(vs_floor, '.2f')}",
              target="<= 1.5 x empty or <= 1.2 x floor", met=met(cond) if r is not first else "(baseline)")
    for r in b.retr:
        ro, rp = r["ours"], r.get("before")

        def rss(f):
            return f"{fmt(f['rss'], '.1f')} (median {fmt(f['rss_med'], '.1f')})" if f else ""
        t.add(3, f"peak RSS of the plugin [MiB] with {r['size']} preloaded (max of n={ro['n']}; median)",
              ours=rss(ro), before=rss(rp), ab=fmt(ratio(ro["rss"], rp["rss"]), ".2f") if rp else "",
              target="< 40 MiB", met=met(below(ro["rss"], 40, strict=True)))
    # 4
    s = b.startup
    r_o = ratio(s["ours"], s["imp"])
    r_p = ratio(s.get("before"), s["imp"])
    t.add(4, f"fail-fast wall time [s] (--mode submit, nothing on 127.0.0.1:{s['port']}) vs "
             f"`python -c \"import nagiosplugin\"` (n={s['n']})",
          ours=fmt(s["ours"]), before=f"{fmt(s['before'])} ({fmt(r_p, '.2f')} x ref)" if base else "",
          ab=fmt(ratio(s["ours"], s.get("before")), ".2f") if base else "", ref=fmt(s["imp"]),
          ratio=fmt(r_o, ".2f"), target="<= 1.5 x (was: <= 2 x)",
          met=f"1.5 x: {met(below(r_o, 1.5))}; 2 x: {met(below(r_o, 2))}")
    # 5
    t.add(5, "CPU seconds per round-trip check (user+system of the plugin process, os.wait4) [s]",
          **both("cpu"), target="<= 0.12 s", met=met(below(o["cpu"], 0.12)))
    # 6
    ov = both("overlap")
    if p and p.get("overlap") is None:
        ov["before"] = "n/a (logs no `DATA sent at`)"
    t.add(6, "overlap: process start (the bench's fork, wall clock) to `DATA sent at` (-vv) [s]", **ov,
          target="(none set)")
    t.add(6, "process start to `MAIL FROM sent at` (-vv) [s]", **both("to_mail_from"), target="(none set)")
    # 7
    fl = b.floor_parts
    total = sum(v for v in fl.values()) if all(v is not None for v in fl.values()) else None
    n = b.floor_n
    t.add(7, "floor part: MTA delivery = Dovecot stored-mail time - MAIL FROM sent (row 2's truth) [s]",
          ref=f"{fmt(fl['delivery'])} (n={o['lag_n']})", target="(part of the floor)")
    t.add(7, f"floor part: bare interpreter start `python -c \"{ROUNDTRIP_IMPORTS}\"` [s]",
          ref=f"{fmt(fl['interpreter'])} (n={n})", target="(part of the floor)")
    t.add(7, "floor part: one TLS handshake, submission (connect, greeting, EHLO, STARTTLS, handshake) [s]",
          ref=f"{fmt(fl['smtp_tls'])} (n={n})", target="(part of the floor)")
    t.add(7, "floor part: one TLS handshake, IMAPS (connect, handshake) [s]",
          ref=f"{fmt(fl['imaps_tls'])} (n={n})", target="(part of the floor)")
    t.add(7, "floor = sum of the four parts [s]", ref=fmt(total), target="")
    minus_o = o["wall"] - total if o["wall"] is not None and total is not None else None
    minus_p = p["wall"] - total if p and p.get("wall") is not None and total is not None else None
    t.add(7, "round-trip wall time minus floor [s] (row 1's wall)", ours=fmt(minus_o),
          before=fmt(minus_p) if base else "", ab=fmt(ratio(minus_o, minus_p), ".2f") if base else "",
          ref=f"floor {fmt(total)}", target="<= 0.1 s", met=met(below(minus_o, 0.1)))
    c = b.ced_default
    cw = c["wall"] if c else None
    r_o, r_p = ratio(o["wall"], cw), ratio(p.get("wall"), cw) if p else None
    t.add(7, "round-trip wall / check_email_delivery defaults (row 1's first line)", ours=fmt(r_o),
          before=fmt(r_p) if base else "", ab=fmt(ratio(r_o, r_p), ".2f") if base else "",
          ref=f"{fmt(cw)} s", target="<= 0.04", met=met(below(r_o, 0.04)))

    # 8
    def logins(f):
        if not f:
            return ""
        return (f"median {fmt(f['logins'], 'g')} (min {fmt(f['logins_min'], 'g')}, max "
                f"{fmt(f['logins_max'], 'g')}; n={f['n']})")
    t.add(8, "IMAP logins per round-trip run (Dovecot `imap-login: Login: user=<...>` lines during the run)",
          ours=logins(o), before=logins(p), target="1 (expected)",
          met=met(o["logins"] == 1 if o["logins"] is not None else None))
    # 9
    oa = b.oauth
    if oa:
        pw, warm, stale = oa["password"], oa["warm"], oa["stale"]

        def wall(f):
            return f"{fmt(f['wall'])} (n={f['n']}/{f['of']})"
        t.add(9, "round-trip wall time [s], OAuth2 (XOAUTH2, client credentials) from a warm token cache "
                 "(no token request) vs the password (AUTH PLAIN, IMAP LOGIN), interleaved",
              ours=wall(warm), ref=f"password {wall(pw)}", ratio=fmt(oa["warm_vs_password"]),
              target="<= 1.05 (within 5 %)", met=met(below(oa["warm_vs_password"], 1.05)))
        t.add(9, "round-trip wall time [s], OAuth2 from a stale token cache (one token request a run) vs "
                 "the password, interleaved with the two above",
              ours=wall(stale), ref=f"password {wall(pw)}; the request itself (`oauth_token`) "
                                    f"{fmt(stale['oauth_token'])}",
              ratio=fmt(oa["stale_vs_password"]), target="(none set: what a token request adds)")
    return t.render()


# ---------------------------------------------------------------- import time
def importtime_section(b) -> list[str]:
    it = b.importtimes.get("ours")
    if it is None:
        return []
    out = ["## Import time (`python -X importtime`)", "",
           f"One round trip of our plugin (row 1's command) run as `{b.ours.python} -X importtime "
           f"{b.ours.path} ...` ({'OK' if it.trip.ok else f'exit {it.trip.proc.rc}'}); its stderr parsed. "
           "Cumulative microseconds of each top-level import, the 15 costliest of "
           f"{it.count}; imports made inside functions while the check runs are top-level too. This run is "
           "not counted in any other row.", "",
           "| module | cumulative [us] | self [us] |", "|---|---|---|"]
    out += [f"| {name} | {cum} | {own} |" for name, own, cum in it.top]
    out.append(f"| **total** (all {it.count} top-level imports) | **{it.total}** | |")
    bt = b.importtimes.get("before")
    if bt is not None:
        out += ["", f"The same for the baseline ({b.baseline.path}): total {bt.total} us over {bt.count} "
                    f"top-level imports (after/before {fmt(ratio(it.total, bt.total), '.2f')})."]
    return out + [""]


# ---------------------------------------------------------------- page
def machine(b) -> str:
    model = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [f"- CPU: {model}, {os.cpu_count()} cores (os.cpu_count), load avg {load} (at the end)",
             f"- kernel: {platform.system()} {platform.release()}; {platform.platform()}",
             f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}",
             f"- python (bench): {platform.python_version()}",
             f"- ours (after): {b.ours.describe()}"]
    if b.baseline is not None:
        lines.append(f"- before (--baseline): {b.baseline.describe()}")
    lines.append(f"- stack: {b.stack_json}")
    for k, label in (("BENCH_T_PIP", "pip install"), ("BENCH_T_APT", "apt-get install"),
                     ("BENCH_T_STACK", "mailstack up")):
        if os.environ.get(k):
            lines.append(f"- {label}: {os.environ[k]} s")
    return "\n".join(lines)


def notes(b) -> list[str]:
    st = b.st
    ports = st["ports"]
    host = st["host"]
    out = []
    if b.baseline is not None:
        same = (" Both print the same `--version`: the version number was not raised across the "
                "restructuring; the install source tells them apart."
                if b.baseline.version == b.ours.version else "")
        out.append(
            f"Before/after: `before` is {b.baseline.describe()}; `ours (after)` is {b.ours.describe()}. "
            "Rows 1, 2, 3, 5, 6 and 8 ran both plugins interleaved run by run (ours, "
            "before, ours, before, ...), and row 4 ran ours, before, then the bare import, in turn, so "
            "that the machine's noise hits both alike; after/before is the ratio of the two medians (of "
            "the maxima for peak RSS). Same stack, same command line, same interpreter version." + same)
    out += [
        f"check_email_delivery 0.7.1 (Debian monitoring-plugins-contrib) ran as `-H {host} --smtp-port "
        f"{ports['submission']} --smtptls --imap-port {ports['imaps']} --imapssl -U/-P (argv) --hires`; "
        "certificates verified against the stack CA through bench/perl/BenchTLS.pm (PERL5OPT, "
        f"IO::Socket::SSL client defaults, expected name `{st['tls_hostname']}`), because "
        "Net::SMTP::TLS gives IO::Socket::SSL no host name. Matching messages were deleted before "
        "every run (its `SEARCH SUBJECT \"Nagios Message SMTP <host> ID\"` matches every earlier "
        "probe).",
        "Peak RSS and CPU (rows 3, 5): ru_maxrss and ru_utime + ru_stime of the plugin process from "
        "os.wait4 (the console script's interpreter is the plugin process; it starts no children).",
        "Ground truth (row 2): Dovecot's `sieve: msgid=<...marker...>: stored mail into mailbox "
        "'INBOX'` log line (microseconds) minus the `MAIL FROM sent at` time the plugin logs at -vv. "
        "Row 2's target is now a median below 20 ms (it was a maximum below 50 ms); both verdicts "
        "are shown.",
        "Row 3: `imap_retrieval` is the plugin's one look into the mailbox that found the probe: "
        "connect, TLS, LOGIN, the EXAMINE made before the submission, the search that found the "
        "message and the header fetch (not the empty polls before that search). In an earlier -vvv "
        "trace at 100k Dovecot itself reported EXAMINE 0.34 s and the UID SEARCH that first saw the "
        "new message 0.10 s (Maildir resync), so most of the growth is the server's. The "
        "fresh-delivery floor submits a message, waits for Dovecot's stored-mail log line, then "
        "connects+SELECTs+searches; the idle floor runs on a settled mailbox.",
        "Row 3, after/before at small folders: a cProfile of one run of each (2026-12-02, the plugin at "
        "a439231 against 76cd140) puts `ssl.create_default_context()` (its `load_default_certs`, the "
        "system CA store: about 25 ms here) inside the after plugin's timed IMAP connect, where 76cd140 "
        "built the context before that phase began. With `SSL_CERT_FILE` set to the stack CA alone (a "
        "one-certificate system store) both reported the same imap_retrieval, 0.028-0.035 s over 5 "
        "runs each: the difference is where the context is built, not the IMAP exchange. Both load "
        "the system store even with `--ca-file`.",
        "Preloaded messages are files written straight into other's Maildir cur/ "
        "(`*.benchpreload*`), indexed by one SELECT, removed afterwards with `doveadm force-resync`.",
        "Row 4: the target is now 1.5 x a bare `python -c \"import nagiosplugin\"` (it was 2 x); "
        f"both verdicts are shown. The import runs with our interpreter ({b.ours.python}).",
        "Row 6: from the bench's `time.time()` just before the fork to the plugin's `DATA sent at` "
        "line (its `time.time()` just before the message is built and the DATA command sent); one "
        "clock, no offset to correct. Everything the plugin does before the message leaves is in "
        "it: interpreter start, IMAP log-in and EXAMINE (for UIDNEXT), SMTP connect, STARTTLS, "
        "AUTH, MAIL FROM, RCPT TO.",
        "Row 7, the floor: what no plugin on this machine can skip, each part once: the message's "
        "own way through Postfix, rspamd and LMTP into Dovecot (row 2's ground truth); starting the "
        "interpreter with the imports a round trip needs (our venv's python); and one TLS handshake "
        "per protocol by a tiny stdlib client (socket + ssl, certificate verified, the context built "
        f"before the clock starts) against {host}:{ports['submission']} with STARTTLS and "
        f"{host}:{ports['imaps']}. The sum takes the parts one after another; the plugin's own IMAP "
        "log-in, folder look and searches, the SMTP AUTH and the verdicts are what the wall time "
        "holds above it.",
        "Row 8: Dovecot's log (from stack.json) is read from its size before each run to the moment "
        "every session those Login lines opened has logged its disconnect (at most 2 s after the "
        "plugin exited).",
    ]
    oa = b.oauth
    if oa:
        parts = "; ".join(
            f"{label}: smtp_auth {fmt(oa[k]['smtp_auth'])}, imap_retrieval {fmt(oa[k]['imap_retrieval'])}"
            for k, label in (("password", "password"), ("warm", "warm cache"), ("stale", "stale cache")))
        st_oauth = st["oauth"]
        out.append(
            f"Row 9: {oa['n']} rounds of three runs of ours (password, OAuth2 with a warm token cache, "
            "OAuth2 with a stale one), the same command line as row 1 but `--auth xoauth2 --oauth-token-url "
            f"{st_oauth['token_url']} --oauth-client-id {st_oauth['app_client']} --oauth-client-secret-file "
            "...` in place of the password file, each OAuth2 series with a state directory (token cache) of "
            "its own. The warm cache was filled by one run before the series (an hour's token); for the "
            "stale series the IdP handed out 2-second tokens and the bench waited until the last one was "
            "stale before each run. Token requests: warm runs "
            f"{oa['warm']['requested']} of {oa['warm']['n']}, stale runs {oa['stale']['requested']} of "
            f"{oa['stale']['n']} (their `oauth_token` perfdata); the IdP counted {oa['requests']} in all "
            f"(expected {oa['expected']}: the two cache fills and one per stale run). Medians [s]: {parts}. "
            "A token login costs the server more than a password: Dovecot asks the IdP (RFC 7662 "
            "introspection, HTTPS) at every token login, IMAP's and SMTP's, and checks a password locally.")
    return out + list(dict.fromkeys(b.notes))  # each failure note once


def page(b, elapsed: float) -> str:
    st = b.st
    out = ["# check_email_roundtrip benchmark", "", machine(b), "",
           "Each figure is the median of n runs (n given per row). Loopback stack (Postfix "
           f"{st['ports']['submission']} STARTTLS+AUTH -> rspamd -> LMTP -> Dovecot; "
           f"IMAPS {st['ports']['imaps']}). "
           "Our plugin runs with `--no-state --no-junk -vv`; wall time is measured from fork to exit.", "",
           build_table(b), ""]
    out += importtime_section(b)
    out += ["Notes:", ""] + [f"- {n}" for n in notes(b)] + ["", f"Total benchmark time: {elapsed:.0f} s", ""]
    return "\n".join(out)
