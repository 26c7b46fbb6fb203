"""Where the stack lives and what it is called: directory, ports, names, users.

Two environment variables place a stack, so that two can run side by side
(each needs its own pair):

- ``MAILSTACK_DIR``: the stack directory (default ``DEFAULT_DIR``);
- ``MAILSTACK_PORT_BASE``: every port is this base plus a fixed offset
  (default 10000: 10587, 10465, ...; 20000 gives 20587, 20465, ...).

Ports are read once, when this module is imported: set the variable before.
"""

import os

HOST = "127.0.0.1"          # every daemon listens here only
TLS_HOSTNAME = "localhost"  # the name in the server certificate
DOMAIN = "example.test"
MX_HOSTNAME = "mx." + DOMAIN
MAIL_HOSTS = (MX_HOSTNAME, "mail." + DOMAIN)   # A records -> HOST

DEFAULT_DIR = "/var/tmp/check_email_roundtrip-stack"
DEFAULT_PORT_BASE = 10000


def stack_dir(directory=None):
    """The stack directory: the argument, else $MAILSTACK_DIR, else DEFAULT_DIR."""
    return os.path.abspath(directory or os.environ.get("MAILSTACK_DIR") or DEFAULT_DIR)


def port_base(environ=os.environ):
    """$MAILSTACK_PORT_BASE as a number; ValueError when it cannot be one."""
    text = environ.get("MAILSTACK_PORT_BASE") or str(DEFAULT_PORT_BASE)
    try:
        base = int(text)
    except ValueError:
        raise ValueError(f"MAILSTACK_PORT_BASE must be a number, not {text!r}") from None
    # the highest offset is 995; below 1024 would need privileges nobody has
    if not 1024 <= base <= 64500:
        raise ValueError(f"MAILSTACK_PORT_BASE out of range 1024..64500: {base}")
    return base


PORT_BASE = port_base()
# The offsets keep the well-known port in the last three digits.
SUBMISSION_PORT = PORT_BASE + 587           # Postfix, STARTTLS required, AUTH
SUBMISSIONS_PORT = PORT_BASE + 465          # Postfix, implicit TLS, AUTH
MX_PORT = PORT_BASE + 25                    # Postfix inbound, no auth, DOMAIN only
IMAP_PORT = PORT_BASE + 143                 # Dovecot IMAP (STARTTLS offered)
IMAPS_PORT = PORT_BASE + 993                # Dovecot IMAPS
# The same services, presenting an EXPIRED certificate (stack CA, DNS:localhost,
# notAfter in the past): Postfix with its own smtpd_tls_chain_files, and auxd's
# TLS front to Dovecot IMAP.
SUBMISSIONS_EXPIRED_PORT = PORT_BASE + 466  # Postfix, implicit TLS, AUTH
IMAPS_EXPIRED_PORT = PORT_BASE + 994        # auxd TLS -> Dovecot IMAP
# TLS-1.0-only fronts (auxd, stack CA certificate for localhost and HOST):
# implicit TLS that negotiates TLSv1 and nothing newer, relaying to the
# inbound MX (no AUTH) and to Dovecot IMAP.
SUBMISSIONS_TLS10_PORT = PORT_BASE + 467    # auxd TLSv1 -> Postfix MX_PORT
IMAPS_TLS10_PORT = PORT_BASE + 995          # auxd TLSv1 -> Dovecot IMAP
# The certificate variants (certvariants.py) listen on loopback addresses of
# their own, 127.0.0.2 and up, on SUBMISSION_PORT, SUBMISSIONS_PORT,
# IMAP_PORT and IMAPS_PORT: the same numbers, other addresses.
GREYLIST_POLICY_PORT = PORT_BASE + 28       # auxd: Postfix policy service (greylisting)
DNS_PORT = PORT_BASE + 53                   # dnsmasq, UDP and TCP
# rspamd: one milter worker signs (submission) and verifies (inbound MX);
# not 11332/11334, so a system rspamd cannot collide.
RSPAMD_MILTER_PORT = PORT_BASE + 332
RSPAMD_CONTROLLER_PORT = PORT_BASE + 334
# the stack's OAuth2 authorization server (idp.py): token endpoint for the
# plugin, introspection for Dovecot's oauth2 passdb, HTTPS
IDP_PORT = PORT_BASE + 443

USERS = ("probe", "other", "full", "noauth")  # local parts @DOMAIN
VMAIL_USER = "vmail"          # owns every Maildir
RSPAMD_USER = "_rspamd"       # Debian's rspamd user
QUOTA_LIMIT = "1G"            # everybody's quota but QUOTA_FULL_USER's

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# The first start compiles the hyperscan regex cache (~10 s, high RSS).
RSPAMD_START_TIMEOUT = 120.0

# DNS records dnsmasq publishes (authoritative for DOMAIN only)
SPF_NAME = DOMAIN
DMARC_NAME = "_dmarc." + DOMAIN
DEFAULT_SPF = "v=spf1 ip4:127.0.0.1 -all"     # the MX sees the relay from 127.0.0.1
DEFAULT_DMARC = "v=DMARC1; p=quarantine; rua=mailto:dmarc@" + DOMAIN
DKIM_SELECTOR = "s2026"
DKIM_NAME = f"{DKIM_SELECTOR}._domainkey.{DOMAIN}"
DKIM_BITS = 2048
DKIM_REVOKED = "v=DKIM1; p="                  # RFC 6376 3.6.1: empty p= = revoked key
AUTHSERV_ID = MX_HOSTNAME   # rspamd takes it from the MX smtpd's $myhostname ({j})
