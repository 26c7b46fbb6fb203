#!/usr/bin/env python3
"""How soon does an IMAP client learn of new mail: IDLE against polling.

Against the loopback test stack (it must be up: python3 tests/mailstack up),
for several messages: submit one over SMTP, and measure from Dovecot's own
"stored mail" log time (microseconds) until
  - an IDLE session receives "* n EXISTS", and
  - a session polling with "UID SEARCH UID n:* TEXT <marker>" every 10 ms
    (the plugin's fast phase) finds it.
Prints the medians.  The plugin polls because of what this shows on Dovecot.
"""

import imaplib
import json
import os
import re
import secrets
import smtplib
import socket
import ssl
import statistics
import threading
import time
from datetime import datetime

STACK = os.environ.get("MAILSTACK_DIR", "/var/tmp/check_email_roundtrip-stack")
RUNS = 7


def stored_at(log_path, marker, deadline):
    pattern = re.compile(r"^(\S+ \S+) .*msgid=<[^>]*" + marker + r"[^>]*>: (?:stored|saved) mail")
    while time.time() < deadline:
        with open(log_path) as handle:
            for line in handle:
                match = pattern.match(line)
                if match:
                    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        time.sleep(0.05)
    raise RuntimeError("delivery not logged")


def login(info, context):
    imap = imaplib.IMAP4_SSL("localhost", info["ports"]["imaps"], ssl_context=context)
    user = info["users"]["probe"]
    imap.login(user["login"], open(user["password_file"]).read().strip())
    imap.select("INBOX", readonly=True)
    return imap


def idle_until_exists(imap, seen, ready):
    """Raw IDLE (imaplib has none): wait for the first EXISTS line."""
    tag = imap._new_tag()
    imap.send(tag + b" IDLE\r\n")
    assert imap.readline().startswith(b"+")
    ready.set()
    while True:
        line = imap.readline()
        if b"EXISTS" in line:
            seen.append(time.time())
            break
    imap.send(b"DONE\r\n")


def remove_probes(info, context):
    """Delete this script's messages again: later runs should find the INBOX as this one did."""
    imap = login(info, context)
    imap.select("INBOX")
    _, data = imap.uid("SEARCH", "HEADER", "Message-ID", "idlebench")
    if data[0]:
        imap.uid("STORE", b",".join(data[0].split()).decode(), "+FLAGS.SILENT", r"(\Deleted)")
        imap.expunge()
    imap.logout()


def main():
    info = json.load(open(os.path.join(STACK, "stack.json")))
    context = ssl.create_default_context(cafile=info["ca"])
    user = info["users"]["probe"]
    password = open(user["password_file"]).read().strip()
    idle_lags, poll_lags = [], []
    for _ in range(RUNS):
        marker = "idlebench" + secrets.token_hex(8)
        idle, poller = login(info, context), login(info, context)
        uid_next = int(poller.response("UIDNEXT")[1][0])
        seen, ready = [], threading.Event()
        watcher = threading.Thread(target=idle_until_exists, args=(idle, seen, ready), daemon=True)
        watcher.start()
        ready.wait(5)
        with smtplib.SMTP("localhost", info["ports"]["submission"], timeout=10) as smtp:
            smtp.starttls(context=context)
            smtp.login(user["login"], password)
            message = f"Subject: {marker}\r\nMessage-ID: <{marker}@example.test>\r\n\r\n{marker}\r\n"
            smtp.sendmail(user["address"], [user["address"]], message.encode())
        found = None
        while found is None:
            _, data = poller.uid("SEARCH", "UID", f"{uid_next}:*", "TEXT", marker)
            if [uid for uid in data[0].split() if int(uid) >= uid_next]:
                found = time.time()
            else:
                time.sleep(0.01)
        watcher.join(5)
        truth = stored_at(info["logs"]["dovecot"], marker, time.time() + 5)
        poll_lags.append((found - truth) * 1000)
        if seen:
            idle_lags.append((seen[0] - truth) * 1000)
        for imap in (idle, poller):
            try:
                imap.sock.settimeout(2)
                imap.logout()
            except (OSError, imaplib.IMAP4.error):
                pass
        time.sleep(0.3)
    remove_probes(info, context)
    print("| way of waiting | median lag after Dovecot stored the message [ms] | max [ms] | runs |")
    print("|---|---|---|---|")
    for way, lags in (("IMAP IDLE (EXISTS pushed)", idle_lags), ("UID SEARCH every 10 ms", poll_lags)):
        print(f"| {way} | {statistics.median(lags):.1f} | {max(lags):.1f} | {len(lags)} |")


if __name__ == "__main__":
    socket.setdefaulttimeout(10)
    main()
