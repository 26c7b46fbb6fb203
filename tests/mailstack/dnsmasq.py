"""dnsmasq: DNS for DOMAIN on HOST:DNS_PORT (UDP and TCP), everything else
NXDOMAIN, nothing forwarded.  rspamd asks it for SPF, DKIM and DMARC records,
and the plugin's --dns-checks can too.

The published TXT records live in DIR/dns/records.json; dnsmasq.conf is made
from them.  dnsmasq re-reads hosts files on SIGHUP but not txt-record lines,
so a change of records is a restart, checked with a query before it returns.
"""

import json
import os

from . import endpoints
from .config import (
    DEFAULT_DMARC,
    DEFAULT_SPF,
    DKIM_NAME,
    DMARC_NAME,
    DNS_PORT,
    DOMAIN,
    HOST,
    MAIL_HOSTS,
    MX_HOSTNAME,
    SPF_NAME,
)
from .dnsclient import dns_query
from .procs import proc_cmdline
from .service import Service
from .system import StackError, make_dir, render, write_file

_NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


def txt_chunks(value):
    """A TXT value as character-strings of at most 255 bytes (RFC 1035 3.3.14;
    verifiers concatenate them)."""
    data = value.encode("ascii")
    return [data[i:i + 255].decode() for i in range(0, len(data), 255)] or [""]


def quote(chunk):
    escaped = chunk.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def checked_name(name):
    """A DNS name in the form records.json keeps (lower case, no final dot);
    ValueError for anything that is not a host-like name."""
    n = name.strip().rstrip(".").lower()
    if not n or any(not label or len(label) > 63 or not set(label) <= _NAME_CHARACTERS
                    for label in n.split(".")):
        raise ValueError(f"bad DNS name: {name!r}")
    return n


def checked_values(value, name):
    """set_txt()'s value as a list of TXT strings: None -> [], a str -> [it]."""
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    for v in values:
        if not isinstance(v, str) or any(not (0x20 <= ord(c) <= 0x7E) for c in v):
            raise ValueError(f"TXT value for {name} must be printable ASCII: {v!r}")
    return values


class Dnsmasq(Service):
    name = "dnsmasq"
    packages = ("dnsmasq-base",)

    def __init__(self, stack):
        super().__init__(stack)
        self.conf_dir = os.path.join(stack.dir, "dns")
        self.conf = os.path.join(self.conf_dir, "dnsmasq.conf")
        self.records_file = os.path.join(self.conf_dir, "records.json")

    def pidfile(self):
        return os.path.join(self.conf_dir, "dnsmasq.pid")

    def matches(self, pid):
        cmd = proc_cmdline(pid)
        return bool(cmd) and os.path.basename(cmd[0]) == "dnsmasq" and f"--conf-file={self.conf}" in cmd

    def endpoints(self):
        return [endpoints.Endpoint("dns", HOST, DNS_PORT)]

    def info(self):
        return {"host": HOST, "port": DNS_PORT, "nameserver": f"{HOST}:{DNS_PORT}",
                "config": self.conf, "records_file": self.records_file, "log": self.log,
                "a": {h: HOST for h in MAIL_HOSTS}, "mx": {DOMAIN: [10, MX_HOSTNAME]},
                "txt": self.records()}

    def write_config(self):
        make_dir(self.conf_dir, 0o755)
        txt = "".join(f"txt-record={name},{','.join(quote(c) for c in txt_chunks(value))}\n"
                      for name, values in sorted(self.records().items()) for value in values)
        conf = render(
            "dnsmasq.conf", host=HOST, port=DNS_PORT, pidfile=self.pidfile(), log=self.log,
            domain=DOMAIN, mx=MX_HOSTNAME,
            hosts="".join(f"host-record={h},{HOST}\n" for h in MAIL_HOSTS), txt=txt)
        return write_file(self.conf, conf)

    def start(self):
        self.clear_stale_pidfile()
        self.spawn(["dnsmasq", f"--conf-file={self.conf}"])

    def reload(self):
        # SIGHUP re-reads hosts files only, not txt-record lines: restart.
        self.restart()

    # -- the records -----------------------------------------------------------
    def default_records(self):
        """{name: [TXT value, ...]} published after up/reset."""
        return {SPF_NAME: [DEFAULT_SPF], DKIM_NAME: [self.stack.dkim_public_txt()],
                DMARC_NAME: [DEFAULT_DMARC]}

    def records(self):
        """The TXT records dnsmasq publishes: {name: [value, ...]} (one string
        per record; values over 255 bytes are served split into several
        character-strings, which verifiers join)."""
        try:
            with open(self.records_file) as fh:
                return {k: list(v) for k, v in json.load(fh)["txt"].items()}
        except (OSError, ValueError, KeyError):
            return self.default_records()

    def forget_records(self):
        """Back to the defaults at the next up (the DKIM key was made anew)."""
        if os.path.exists(self.records_file):
            os.unlink(self.records_file)

    def publish(self, records):
        """Publish exactly these TXT records; when dnsmasq runs, it is
        restarted and every changed name asked for before this returns."""
        before = self.records()
        make_dir(self.conf_dir, 0o755)
        write_file(self.records_file, json.dumps({"txt": records}, indent=1, sort_keys=True) + "\n")
        if self.write_config() and self.is_running():
            self.reload()
            for name in set(before) | set(records):
                want = sorted(records.get(name, []))
                rcode, got = dns_query(name, "TXT")
                if sorted(got) != want:
                    raise StackError(f"dnsmasq serves {name} TXT {got!r} ({rcode}), expected {want!r}")
        return dict(records)
