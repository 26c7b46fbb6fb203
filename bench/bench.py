#!/usr/bin/env python3
"""Benchmark check_email_roundtrip against the loopback mail stack.

Run through bench/run (which installs what is needed and brings the stack up).
Prints one markdown table and writes it to bench/results.md.  Standard library only.
With --baseline PATH a second plugin executable (e.g. an older version) runs
interleaved with ours in rows 1 to 4, and the table shows after/before.

Modules: runner (timed child processes), stackinfo (stack.json, Dovecot's log,
IMAP helpers), plugin (the executables under test), ced (check_email_delivery),
floor (the parts no plugin can skip), report (figures, table, notes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import time

import ced
import floor
import oauth
import report
from plugin import Plugin
from runner import log, med, run
from stackinfo import (
    DovecotLog,
    client_context,
    delete_messages,
    deliver_and_wait,
    floor_once,
    load_stack,
    preload,
    stack_json_path,
    unload,
)

HERE = os.path.dirname(os.path.abspath(__file__))


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.a = args
        self.stack_json = stack_json_path()
        self.st = load_stack()
        self.dlog = DovecotLog(self.st["logs"]["dovecot"])
        self.ours = Plugin(args.plugin, "ours", args.python)
        self.baseline = Plugin(args.baseline, "before") if args.baseline else None
        self.plugins = [self.ours] + ([self.baseline] if self.baseline else [])
        self.notes: list[str] = []
        self.messages: dict[str, list[str]] = {"probe": [], "other": []}  # to delete at the end
        self.fig: dict[str, dict] = {}
        self.retr: list[dict] = []
        self.importtimes: dict = {}
        self.oauth: dict | None = None

    def key(self, plugin: Plugin) -> str:
        return "ours" if plugin is self.ours else "before"

    def trip(self, plugin: Plugin, **kw):
        t = plugin.trip(self.st, self.dlog, **kw)
        if t.marker:
            self.messages[t.user].append(t.marker)
        return t

    # ---- rows 1, 2, 5, 6, 8: round trips, interleaved
    def bench_roundtrip(self) -> None:
        n = self.a.runs
        log(f"1/2/5/6/8: round trip x{n}, " + ", ".join(p.label for p in self.plugins) + " in turn")
        trips: dict[str, list] = {self.key(p): [] for p in self.plugins}
        for _ in range(n):
            for p in self.plugins:
                trips[self.key(p)].append(self.trip(p))
        time.sleep(0.5)  # Dovecot's last stored-mail lines
        markers = [t.marker for ts in trips.values() for t in ts if t.marker]
        stored = self.dlog.stored_times(markers)
        for k, ts in trips.items():
            self.fig[k] = report.trip_figures(ts, stored)
            f = self.fig[k]
            log(f"  {k}: wall {f['wall']}, cpu {f['cpu']}, lag {f['lag']} ms, logins {f['logins']} "
                f"({f['n']}/{f['of']} OK)")

    # ---- row 9: OAuth2 sign-in against the password, interleaved
    def bench_oauth(self) -> None:
        n = self.a.runs_oauth
        log(f"9: OAuth2 x{n}: password, warm token cache, stale token cache in turn (ours only)")
        self.oauth = oauth.series(self, n)

    # ---- row 1: the peer
    def bench_ced(self) -> None:
        log(f"1: check_email_delivery defaults x{self.a.runs_ced_default}")
        self.ced_default = ced.series(self.st, None, self.a.runs_ced_default, self.notes)
        log(f"1: check_email_delivery --wait 1 x{self.a.runs}")
        self.ced_wait1 = ced.series(self.st, 1, self.a.runs, self.notes)

    # ---- row 7: the floor
    def bench_floor(self) -> None:
        n = self.floor_n = self.a.runs_floor
        log(f"7: floor parts x{n}")
        ctx = client_context(self.st)
        interp, smtp_tls, imaps_tls = [], [], []
        for _ in range(n):
            r = floor.interpreter_start(self.ours.python)
            if r.rc == 0:
                interp.append(r.wall)
            else:
                self.notes.append(f"interpreter start failed: rc={r.rc} {r.err.strip()[-200:]}")
            smtp_tls.append(floor.smtp_starttls_seconds(self.st, ctx))
            imaps_tls.append(floor.imaps_tls_seconds(self.st, ctx))
        self.floor_parts = dict(delivery=self.fig["ours"]["truth"], interpreter=med(interp),
                                smtp_tls=med(smtp_tls), imaps_tls=med(imaps_tls))
        log(f"  {self.floor_parts}")

    # ---- row 3: a big folder, interleaved
    def bench_retrieval(self) -> None:
        user = "other"
        n = self.a.runs_retrieval
        try:
            unload(self.st, user)
            for size in self.a.sizes:
                tw = preload(self.st, user, size)
                t0 = time.perf_counter()
                _, exists = floor_once(self.st, user)  # first SELECT: Dovecot indexes the new files
                tidx = time.perf_counter() - t0
                log(f"3: {size} preloaded (write {tw:.1f}s, first SELECT {tidx:.1f}s, EXISTS {exists}); "
                    f"{n} runs each")
                trips: dict[str, list] = {self.key(p): [] for p in self.plugins}
                floors, fresh = [], []
                for _ in range(n):
                    for p in self.plugins:
                        trips[self.key(p)].append(self.trip(p, imap_user=user))
                    floors.append(floor_once(self.st, user)[0])
                    tag = deliver_and_wait(self.st, user)
                    if tag:
                        self.messages[user].append(tag)
                        fresh.append(floor_once(self.st, user)[0])
                row = dict(size=size, exists=exists, index=tidx, floor=med(floors), fresh=med(fresh))
                for k, ts in trips.items():
                    row[k] = report.retrieval_figures(ts)
                self.retr.append(row)
        finally:
            removed = unload(self.st, user)
            log(f"3: removed {removed} preloaded files, resynced")

    # ---- row 4: fail-fast start-up, interleaved with the bare import
    def bench_startup(self) -> None:
        n = self.a.runs_startup
        log(f"4: start-up x{n}")
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        ff: dict[str, list[float]] = {self.key(p): [] for p in self.plugins}
        imp = []
        for _ in range(n):
            for p in self.plugins:
                r = p.failfast(port)
                ff[self.key(p)].append(r.wall)
                if r.rc != 2:
                    self.notes.append(f"fail-fast run of {p.label} exited {r.rc} (expected 2 CRITICAL): "
                                      f"{r.out.strip().splitlines()[:1]}")
            imp.append(run([self.ours.python, "-c", "import nagiosplugin"]).wall)
        self.startup = dict(n=n, port=port, imp=med(imp), **{k: med(v) for k, v in ff.items()})

    # ---- import-time section
    def bench_importtime(self) -> None:
        log("import time: one round trip each under python -X importtime")
        for p in self.plugins:
            it = p.importtime(self.st, self.dlog)
            if it.trip.marker:
                self.messages["probe"].append(it.trip.marker)
            if not it.top:
                self.notes.append(f"{p.label}: no `import time:` lines from -X importtime "
                                  f"(rc={it.trip.proc.rc})")
                continue
            self.importtimes[self.key(p)] = it

    def cleanup(self) -> None:
        for user, ids in self.messages.items():
            if ids:
                try:
                    delete_messages(self.st, user, ids)
                except Exception as exc:  # the results still count; say so and go on
                    log(f"cleanup of {user}'s {len(ids)} messages failed: {exc}")

    def main(self) -> None:
        t0 = time.time()
        try:
            self.bench_roundtrip()
            self.bench_oauth()
            self.bench_ced()
            self.bench_floor()
            self.bench_retrieval()
            self.bench_startup()
            self.bench_importtime()
        finally:
            self.cleanup()
        text = report.page(self, time.time() - t0)
        print(text)
        with open(os.path.join(HERE, "results.md"), "w") as fh:
            fh.write(text)


def sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="round trips per plugin (rows 1, 2, 5, 6, 8)")
    ap.add_argument("--runs-oauth", type=int, default=9, help="rounds of row 9 (password, warm, stale)")
    ap.add_argument("--runs-ced-default", type=int, default=5)
    ap.add_argument("--runs-retrieval", type=int, default=5)
    ap.add_argument("--runs-startup", type=int, default=9)
    ap.add_argument("--runs-floor", type=int, default=9)
    ap.add_argument("--sizes", type=sizes, default=[0, 10000, 100000])
    ap.add_argument("--python", default=None, help="our plugin's interpreter (default: its #! line)")
    ap.add_argument("--plugin", default=None, help="our plugin executable")
    ap.add_argument("--baseline", default=None, metavar="PATH",
                    help="a second plugin executable to compare with, run by run (e.g. an older version)")
    a = ap.parse_args()
    if a.plugin is None:
        cand = os.path.join(os.path.dirname(sys.executable), "check_email_roundtrip")
        a.plugin = cand if os.path.exists(cand) else shutil.which("check_email_roundtrip")
    if a.plugin is None:
        ap.error("no check_email_roundtrip found: pass --plugin")
    Bench(a).main()


if __name__ == "__main__":
    main()
