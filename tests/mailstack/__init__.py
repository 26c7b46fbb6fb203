"""A private, loopback-only mail stack for testing check_email_roundtrip.

    python3 tests/mailstack up|down|status|env [--dir DIR]

Must run as root (Debian 12, no systemd needed); the daemons come from Debian
packages, installed when missing.  Python: the standard library, dnspython
(a dependency of the plugin) and the plugin's own imapsyntax module (IMAP
mailbox names), so install the plugin first, as the tests need anyway.

Where it lives (see config.py):
    MAILSTACK_DIR        the stack directory; default /var/tmp/check_email_roundtrip-stack
                         (--dir overrides it)
    MAILSTACK_PORT_BASE  every port below is this base + the same offset;
                         default 10000 (10587, 10465, ...); 20000 gives 20587, ...
Two stacks can run side by side with different values of both.  Tests take
every port from this package's constants (SUBMISSION_PORT, IMAPS_PORT, ...).

Mail path (ports with the default base):

    client -> Postfix submission 127.0.0.1:10587 (STARTTLS required, AUTH)
           or Postfix submissions 127.0.0.1:10465 (implicit TLS, AUTH)
              SASL via the Dovecot auth socket
              rspamd milter (127.0.0.1:10332) DKIM-signs example.test (s2026)
           -> content_filter smtp:[127.0.0.1]:10025
           -> Postfix inbound "MX" 127.0.0.1:10025 (no auth, example.test only)
              rspamd milter verifies SPF, DKIM, DMARC and adds ONE
              Authentication-Results (authserv-id mx.example.test) on top;
              foreign A-R headers are kept; nothing is rejected/quarantined
           -> LMTP (unix socket) -> Dovecot (sieve, quota) -> Maildir
              a global sieve_before script files "+junk" mail into Junk
    client <- Dovecot IMAP 127.0.0.1:10143 (STARTTLS) and IMAPS 127.0.0.1:10993
    EXPIRED-certificate twins (same service, cert from the stack CA for
    localhost, notAfter in the past: DIR/tls/expired.pem):
              Postfix submissions 127.0.0.1:10466 (implicit TLS, AUTH, same
              restrictions as 10465)
              IMAPS 127.0.0.1:10994 = auxd's TLS front -> Dovecot IMAP 10143
              (Dovecot 2.3 cannot give one listener its own certificate)
    certificate variants: the four TLS ports again on 127.0.0.2..10, one
    address per certificate, and TLS-1.0-only fronts on 10467 and 10995
    (below)
    rspamd -> dnsmasq 127.0.0.1:10053 (UDP+TCP): example.test only, rest NXDOMAIN
              example.test TXT                "v=spf1 ip4:127.0.0.1 -all"
              s2026._domainkey.example.test   the key in DIR/dkim (made at first up)
              _dmarc.example.test TXT         "v=DMARC1; p=quarantine; rua=..."
              mx./mail.example.test A 127.0.0.1, example.test MX mx.example.test

The TLS server certificate is issued by a private CA (DIR/tls/ca.pem) for
DNS:localhost only: connect to "localhost" to verify OK; connecting by
127.0.0.1 is the "certificate does not match host name" case.

OAuth2 (XOAUTH2 and OAUTHBEARER on every submission port and on IMAP):
    Dovecot offers AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER (Postfix lists the
    same after STARTTLS and on the implicit-TLS ports).  Passwords count for
    PLAIN/LOGIN only, tokens for XOAUTH2/OAUTHBEARER only (passdb
    "mechanisms" filters); a token login is one introspection request to
    the stack's IdP (no auth cache: a revoked token fails at once).
    IdP (idp.py + authserver.py, stdlib; run like auxd, log DIR/log/idp.log)
              HTTPS 127.0.0.1:10443, certificate from the stack CA for
              DNS:localhost AND IP:127.0.0.1 (DIR/tls/idp.pem)
              POST /token  client_credentials and refresh_token (rotating:
                  each refresh answers a new refresh token, the old one is
                  then invalid_grant); client_id/client_secret in the body or
                  HTTP Basic; optional scope; RFC 6749 5.2 errors
                  (invalid_client 401 + WWW-Authenticate, others 400)
              POST /introspect  RFC 7662 for Dovecot: {"active": true,
                  "email": user, ...} or {"active": false} (always 200)
              /admin/...  the knobs below (Bearer DIR/secrets/oauth-admin.secret)
    Clients (secrets in DIR/secrets/oauth-<id>.secret, 0600):
              probe-app    client_credentials -> probe@example.test
              other-app    client_credentials -> other@example.test
              mail-client  refresh_token, confidential
              mail-public  refresh_token, public (client_id alone)
              dovecot      introspection only (Dovecot's oauth2 passdb)
    Replies on the wire for a bad (revoked, expired, unknown, another
    user's) token: SMTP 334 <base64 JSON>, the client's answer, then
    535 5.7.8 Error: authentication failed: (reason unavailable); IMAP
    "+ <base64 JSON>", then NO [AUTHENTICATIONFAILED] Authentication failed.
    JSON: XOAUTH2 {"status":"401","schemes":"bearer","scope":"mail"},
    OAUTHBEARER {"status":"invalid_token"}.  IdP introspection failing:
    IMAP NO [UNAVAILABLE] Temporary authentication failure., SMTP the same
    535 without a 334.
    stack.oauth (OAuthControl): token_url, introspection_url, issuer, ca,
    clients(), client_secret(id), client_secret_file(id);
    issue_token(user, lifetime=3600, scope=None, length=None) -> str
    (lifetime <= 0: expired already), issue_refresh_token(user,
    client_id="mail-client", scope=None, lifetime=None) -> str,
    revoke_token(t) / revoke_refresh_token(t) -> bool, token_state(t);
    set_token_endpoint(delay=0, status=None, body="", content_type=...,
    times=None) and set_introspection_endpoint(...) (slow, or a canned
    answer; no arguments: normal), set_expires_in(client_id, seconds=None);
    token_requests() -> {grant_type: n, "total": n},
    introspection_requests() -> n, request_log(), state(),
    reset_counters(), reset() (counters, endpoints, lifetimes; tokens stay).

Fault knobs (faults.py has the exact replies; stack.json "faults" too).
On the submission ports, by recipient local part (case-insensitive; the tag
may be followed by "-", "." or "_" and anything, e.g. probe+hold-123):
    +hold      accepted (250) but kept in the hold queue -> release_held()
    +tempfail  451 4.7.0 Rate limit exceeded, try again later   (at RCPT)
    +reject    550 5.7.1 Recipient rejected by policy          (at RCPT)
    +forge     delivered, with a forged all-pass Authentication-Results
               (authserv-id mx.example.test) prepended at submission: it
               ends up right below the receiver's real one
    +junk      delivered into the Junk folder (\\Junk special-use) instead of
               INBOX, by a global Dovecot sieve_before script
    full@example.test   over quota at RCPT TO:
               552 5.2.2 <full@example.test>: Recipient address rejected: Mailbox is full
               (Dovecot quota-status as a Postfix policy service; up() keeps a
               filler message in its Maildir; other users unaffected)
    +reject553 (sender) refused at MAIL FROM:
               553 5.7.1 <probe+reject553@example.test>: Sender address
               rejected: not owned by user
At the inbound MX:
    unknown users: the submission ports accept any local part @example.test;
               the MX answers 550 5.1.1 <nobody@example.test>: Recipient
               address rejected: User unknown in virtual mailbox table, and
               Postfix sends a DSN to the envelope sender at once
    +greylist  450 4.7.1 <probe+greylist@example.test>: Recipient address
               rejected: Greylisted, try again later (auxd's policy service)
               until the message (client, sender, recipient, size) was first
               seen N s ago; the relay retries about every 1 s, so it reaches
               INBOX N+0.2..N+2 s after submission.  set_greylist_seconds(n)
               (default 3; 0 = off; DEFAULT/None = back to 3) applies to the
               next message; greylist_seconds() reads it
Users:
    noauth@example.test  SMTP AUTH refused although the password is right:
               535 5.7.8 Error: authentication failed: (reason unavailable)
               (a Dovecot deny passdb for service smtp only); IMAP LOGIN works
    set_password()/reset_passwords()
Expired certificates: 10466 and 10994 (see above): Python's ssl with
    DIR/tls/ca.pem says "certificate verify failed: certificate has expired".

Certificate variants (certvariants.py), for the TLS health checks: made
with openssl ("openssl ca", exact notBefore/notAfter) at up, in
DIR/tls/variants, and made anew when their dates have drifted (the dated
ones after an hour, the others after 30 days; the keys stay; the daemons
serving a new one reload).  Each has a loopback address of its own, where
Postfix serves submission 10587 (STARTTLS) and submissions 10465 and
Dovecot IMAP 10143 (STARTTLS) and IMAPS 10993 with that certificate
(master.cf services per address with their own smtpd_tls_chain_files;
Dovecot "local <address>" blocks): full services, same AUTH and
restrictions as on 127.0.0.1.  SAN IP:<address> and DNS:localhost unless
said otherwise; notBefore/notAfter counted from the moment it was made.
"Fails as": what Python's ssl says when it trusts DIR/tls/ca.pem and
connects by address.
    name                address     notBefore/notAfter  fails as
    valid               127.0.0.2   -1d/+89d            (verifies)
    expires_in_14_days  127.0.0.3   -76d/+14d           (verifies)
    expires_in_5_days   127.0.0.4   -85d/+5d            (verifies)
    expires_in_2_days   127.0.0.5   -88d/+2d            (verifies)
    expired_yesterday   127.0.0.6   -91d/-1d            certificate has expired
    not_yet_valid       127.0.0.7   +1d/+91d            certificate is not yet valid
    wrong_name          127.0.0.8   -1d/+89d            IP address mismatch
        SAN DNS:mail.example.org only (as "localhost": Hostname mismatch)
    self_signed         127.0.0.9   -1d/+89d            self-signed certificate
        its own issuer; trusting the certificate itself, it verifies
    unknown_ca          127.0.0.10  -1d/+89d            unable to get local issuer certificate
        issuer "Mailstack Unknown Test CA" (DIR/tls/unknown-ca.pem, not
        sent with the certificate); trusting that file, it verifies
TLS-1.0-only fronts (auxd; certificate tls10_only: stack CA, DNS:localhost
and IP:127.0.0.1, -1d/+89d):
    127.0.0.1:10467  implicit TLS -> Postfix inbound MX 10025 (no AUTH;
                     mail for example.test accepted)
    127.0.0.1:10995  implicit TLS -> Dovecot IMAP 10143
    TLSv1 and nothing newer.  OpenSSL 3.0 needs @SECLEVEL=0 on both ends:
    a client with minimum_version TLSv1 and ciphers "DEFAULT:@SECLEVEL=0"
    gets TLSv1 (ECDHE-RSA-AES256-SHA); with SECLEVEL 1 "legacy sigalg
    disallowed or unsupported"; a default client "tlsv1 alert protocol
    version".
stack.cert_variant(name) -> CertVariant: host, smtp_port (implicit TLS),
    imap_port (IMAPS), smtp_starttls_port, imap_starttls_port (None for
    tls10_only), cert_file, key_file, ca_file (what to trust: the stack CA,
    the unknown CA, the certificate itself for self_signed), not_before,
    not_after (aware UTC datetimes), not_before_text, not_after_text (as
    openssl prints them), names, issuer, verify_error, tls_version,
    served_by, what, days_left(); stack.cert_variants() -> {name: ...};
    CERT_VARIANTS (the names, tls10_only last).  stack.json
    "certificates"; env MAILSTACK_CERT_<NAME>_{HOST,SMTP_PORT,IMAP_PORT,
    FILE,CA,NOT_AFTER}, MAILSTACK_UNKNOWN_CA, MAILSTACK_*_TLS10_PORT.

IMAP helpers (IMAPS, CA-verified as "localhost"), for test setup/isolation:
    append_message(user, folder, raw, internaldate) -> UID (APPENDUID)
    folder_uids(user, folder, search="ALL")         -> [UID, ...]
    delete_all(user, folder)                        -> number expunged
    imap(user)                                      logged-in imaplib client

DNS knobs (each applies to the next message; dnsmasq is restarted and the
answer checked before they return):
    set_dns(spf=..., dkim=..., dmarc=...)   str / list / None / KEEP / DEFAULT
    set_txt(name, value)                     any name (include chains, other selectors)
    reset_dns(), dns_records(), dns_query(name, qtype)
    dkim_public_txt(), dkim_other_public_txt() (a valid wrong key), DKIM_REVOKED

The package: stack.py (MailStack), one module per daemon (postfix.py,
dovecot.py, rspamd.py, dnsmasq.py, auxd.py: the stack's own stdlib daemon,
with auxd_service.py running it; idp.py + authserver.py: the OAuth2 IdP,
with idp_service.py running it and OAuthControl), their configuration
templates in templates/, and the parts they share (config.py, faults.py,
service.py, endpoints.py, procs.py, system.py, packages.py, tls.py,
certvariants.py, dkim.py, accounts.py, dnsclient.py, imapclient.py).  Adding a daemon = one
more Service subclass in MailStack.services (order = start order: dnsmasq,
rspamd, idp, dovecot, auxd, postfix) with packages/write_config/start/
reload/endpoints/info.
"""

from .accounts import address
from .auxd_service import Auxd
from .certvariants import (
    CERT_VARIANT_HOSTS,
    CERT_VARIANTS,
    TLS10_VARIANT,
    UNKNOWN_CA_CN,
    WRONG_NAME_HOSTNAME,
    CertFactory,
    CertVariant,
)
from .config import (
    AUTHSERV_ID,
    DEFAULT_DIR,
    DEFAULT_DMARC,
    DEFAULT_PORT_BASE,
    DEFAULT_SPF,
    DKIM_BITS,
    DKIM_NAME,
    DKIM_REVOKED,
    DKIM_SELECTOR,
    DMARC_NAME,
    DNS_PORT,
    DOMAIN,
    GREYLIST_POLICY_PORT,
    HOST,
    IDP_PORT,
    IMAP_PORT,
    IMAPS_EXPIRED_PORT,
    IMAPS_PORT,
    IMAPS_TLS10_PORT,
    MAIL_HOSTS,
    MX_HOSTNAME,
    MX_PORT,
    PORT_BASE,
    QUOTA_LIMIT,
    RSPAMD_CONTROLLER_PORT,
    RSPAMD_MILTER_PORT,
    RSPAMD_START_TIMEOUT,
    RSPAMD_USER,
    SPF_NAME,
    START_TIMEOUT,
    STOP_TIMEOUT,
    SUBMISSION_PORT,
    SUBMISSIONS_EXPIRED_PORT,
    SUBMISSIONS_PORT,
    SUBMISSIONS_TLS10_PORT,
    TLS_HOSTNAME,
    USERS,
    VMAIL_USER,
)
from .dnsclient import dns_query
from .dnsmasq import Dnsmasq
from .dovecot import Dovecot
from .faults import (
    FORGED_AUTH_RESULTS,
    GREYLIST_ACTION,
    GREYLIST_DEFAULT_SECONDS,
    GREYLIST_DETAIL,
    GREYLIST_REPLY,
    GREYLIST_STALE_SECONDS,
    HOLD_TEMPFAIL_REPLY,
    JUNK_DETAIL,
    JUNK_FOLDER,
    NOAUTH_REPLY,
    NOAUTH_SERVICES,
    NOAUTH_USER,
    QUOTA_FULL_FILLER_BYTES,
    QUOTA_FULL_LIMIT,
    QUOTA_FULL_REPLY,
    QUOTA_FULL_USER,
    QUOTA_STATUS_OVERQUOTA,
    REJECT_REPLY,
    SENDER_REJECT_ACTION,
    SENDER_REJECT_DETAIL,
    SENDER_REJECT_REPLY,
    UNKNOWN_USER,
    UNKNOWN_USER_REPLY,
    USER_EXTRA_FIELDS,
    reply_for,
)
from .idp_service import (
    APP_CLIENT,
    DEFAULT_EXPIRES_IN,
    INTROSPECTION_CLIENT,
    INTROSPECTION_TIMEOUT_MSECS,
    OTHER_APP_CLIENT,
    PUBLIC_CLIENT,
    REFRESH_CLIENT,
    IdP,
    OAuthControl,
)
from .packages import POLICY_RC_D
from .postfix import POSTFIX_PRESEED, Postfix
from .rspamd import RSPAMD_DISABLED_MODULES, Rspamd
from .service import Service
from .stack import DEFAULT, KEEP, MailStack
from .system import StackError

__all__ = [
    "CERT_VARIANTS", "CERT_VARIANT_HOSTS", "IMAPS_TLS10_PORT", "SUBMISSIONS_TLS10_PORT", "TLS10_VARIANT",
    "UNKNOWN_CA_CN", "WRONG_NAME_HOSTNAME", "CertFactory", "CertVariant",
    "APP_CLIENT", "AUTHSERV_ID", "DEFAULT", "DEFAULT_DIR", "DEFAULT_DMARC", "DEFAULT_EXPIRES_IN",
    "DEFAULT_PORT_BASE", "DEFAULT_SPF", "DKIM_BITS", "DKIM_NAME", "DKIM_REVOKED", "DKIM_SELECTOR",
    "DMARC_NAME", "DNS_PORT", "DOMAIN", "FORGED_AUTH_RESULTS", "GREYLIST_ACTION",
    "GREYLIST_DEFAULT_SECONDS", "GREYLIST_DETAIL", "GREYLIST_POLICY_PORT", "GREYLIST_REPLY",
    "GREYLIST_STALE_SECONDS", "HOLD_TEMPFAIL_REPLY", "HOST", "IDP_PORT", "IMAPS_EXPIRED_PORT",
    "IMAPS_PORT", "IMAP_PORT", "INTROSPECTION_CLIENT", "INTROSPECTION_TIMEOUT_MSECS", "JUNK_DETAIL",
    "JUNK_FOLDER", "KEEP", "MAIL_HOSTS", "MX_HOSTNAME", "MX_PORT", "NOAUTH_REPLY", "NOAUTH_SERVICES",
    "NOAUTH_USER", "OTHER_APP_CLIENT", "POLICY_RC_D", "PORT_BASE", "POSTFIX_PRESEED", "PUBLIC_CLIENT",
    "QUOTA_FULL_FILLER_BYTES", "QUOTA_FULL_LIMIT", "QUOTA_FULL_REPLY", "QUOTA_FULL_USER", "QUOTA_LIMIT",
    "QUOTA_STATUS_OVERQUOTA", "REFRESH_CLIENT", "REJECT_REPLY", "RSPAMD_CONTROLLER_PORT",
    "RSPAMD_DISABLED_MODULES", "RSPAMD_MILTER_PORT", "RSPAMD_START_TIMEOUT", "RSPAMD_USER",
    "SENDER_REJECT_ACTION", "SENDER_REJECT_DETAIL", "SENDER_REJECT_REPLY", "SPF_NAME", "START_TIMEOUT",
    "STOP_TIMEOUT", "SUBMISSIONS_EXPIRED_PORT", "SUBMISSIONS_PORT", "SUBMISSION_PORT", "TLS_HOSTNAME",
    "UNKNOWN_USER", "UNKNOWN_USER_REPLY", "USERS", "USER_EXTRA_FIELDS", "VMAIL_USER",
    "Auxd", "Dnsmasq", "Dovecot", "IdP", "MailStack", "OAuthControl", "Postfix", "Rspamd", "Service",
    "StackError",
    "address", "dns_query", "reply_for",
]
