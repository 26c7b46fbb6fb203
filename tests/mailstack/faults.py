"""The fault knobs: what triggers each one, and the exact reply a client sees.

Replies with ``%s`` are templates: the address as the client gave it goes
there (``reply_for``).  The daemons' configurations take these texts from
here, and describe() writes them into stack.json.
"""

from .config import (
    DKIM_SELECTOR,
    DOMAIN,
    HOST,
    IMAPS_EXPIRED_PORT,
    IMAPS_PORT,
    MX_HOSTNAME,
    MX_PORT,
    SUBMISSION_PORT,
    SUBMISSIONS_EXPIRED_PORT,
    SUBMISSIONS_PORT,
    TLS_HOSTNAME,
    USERS,
)

# recipients <user>+hold / +tempfail / +reject / +forge on the submission ports
HOLD_TEMPFAIL_REPLY = "451 4.7.0 Rate limit exceeded, try again later"
REJECT_REPLY = "550 5.7.1 Recipient rejected by policy"
# "+forge": the submission server PREPENDs this all-pass header, claiming the
# receiver's own authserv-id; the real one (rspamd, inbound pass) lands above.
FORGED_AUTH_RESULTS = (f"Authentication-Results: {MX_HOSTNAME}; spf=pass smtp.mailfrom={DOMAIN}; "
                       f"dkim=pass header.d={DOMAIN} header.s={DKIM_SELECTOR}; "
                       f"dmarc=pass header.from={DOMAIN}")

# "full": mailbox over quota.  Its userdb quota_rule overrides QUOTA_LIMIT and
# up() stores QUOTA_FULL_FILLER_BYTES straight into its Maildir (APPEND/LMTP
# would be refused) when it is not over quota; Dovecot's quota-status policy
# service on the submission ports answers QUOTA_FULL_REPLY at RCPT TO.
QUOTA_FULL_USER = "full"
QUOTA_FULL_LIMIT = "1K"
QUOTA_FULL_FILLER_BYTES = 8192
QUOTA_STATUS_OVERQUOTA = "552 5.2.2 Mailbox is full"     # Dovecot's action
# what the client sees (Postfix inserts the address and "Recipient address
# rejected:"); %s = the recipient as given, e.g. full+x@example.test
QUOTA_FULL_REPLY = "552 5.2.2 <%s>: Recipient address rejected: Mailbox is full"
USER_EXTRA_FIELDS = {QUOTA_FULL_USER: "userdb_quota_rule=*:storage=" + QUOTA_FULL_LIMIT}

# "noauth": right password, but SMTP AUTH is refused (a Dovecot deny passdb
# keyed on "<service>/<user>" lists it for service smtp only); IMAP works.
NOAUTH_USER = "noauth"
NOAUTH_SERVICES = ("smtp",)
# Dovecot gives Postfix no reason for a deny passdb hit; a wrong password
# for noauth gets the same reply (the deny passdb is asked first).
NOAUTH_REPLY = "535 5.7.8 Error: authentication failed: (reason unavailable)"

# sender <user>+reject553@ (also -*, .*, _*) at MAIL FROM on the submission ports
SENDER_REJECT_DETAIL = "reject553"
SENDER_REJECT_ACTION = "553 5.7.1 not owned by user"     # the access map's value
# what the client sees; %s = the sender as given
SENDER_REJECT_REPLY = "553 5.7.1 <%s>: Sender address rejected: not owned by user"

# recipient <user>+greylist@ (also -*, .*, _*) at the inbound MX: deferred until
# the message (client, sender, recipient, size) was first seen N s ago
GREYLIST_DETAIL = "greylist"
GREYLIST_DEFAULT_SECONDS = 3
GREYLIST_ACTION = "defer_if_permit 4.7.1 Greylisted, try again later"
GREYLIST_REPLY = "450 4.7.1 <%s>: Recipient address rejected: Greylisted, try again later"
# an entry whose message has not come back within N + this is started afresh
GREYLIST_STALE_SECONDS = 30

JUNK_DETAIL = "junk"        # probe+junk@example.test -> Junk (sieve_before)
JUNK_FOLDER = "Junk"

UNKNOWN_USER = "nobody@" + DOMAIN     # any local part not in USERS will do
# what the inbound MX says at RCPT (Postfix smtpd_reject_unlisted_recipient)
UNKNOWN_USER_REPLY = "550 5.1.1 <%s>: Recipient address rejected: User unknown in virtual mailbox table"


def reply_for(reply, address):
    """A reply template above with the address as the client gave it."""
    return reply.replace("%s", address)


def _tag_forms(detail):
    return f"<user>+{detail}@{DOMAIN} (or +{detail}-*, +{detail}.*, +{detail}_*)"


def describe(full_address, noauth_address, greylist_seconds):
    """The "faults" section of stack.json."""
    quota_full_reply = reply_for(QUOTA_FULL_REPLY, full_address)
    sender_reject_example = reply_for(SENDER_REJECT_REPLY, f"<user>+{SENDER_REJECT_DETAIL}@{DOMAIN}")
    return {
        "hold": "+hold", "tempfail": "+tempfail", "reject": "+reject",
        "tempfail_reply": HOLD_TEMPFAIL_REPLY, "reject_reply": REJECT_REPLY,
        "forge": "+forge", "forged_header": FORGED_AUTH_RESULTS,
        "junk": "+" + JUNK_DETAIL, "junk_folder": JUNK_FOLDER,
        "junk_description": (
            f"mail to {_tag_forms(JUNK_DETAIL)} is filed into {JUNK_FOLDER} "
            "by a global Dovecot sieve_before script"),
        "unknown_user": UNKNOWN_USER,
        "unknown_user_reply": reply_for(UNKNOWN_USER_REPLY, UNKNOWN_USER),
        "unknown_user_description": (
            f"any local part @{DOMAIN} not in {'/'.join(USERS)} is accepted (250) at submission and "
            f"rejected by the inbound MX (port {MX_PORT}) with 550 5.1.1 User unknown; "
            "Postfix bounces at once: a DSN (multipart/report, "
            "message/delivery-status, Status: 5.1.1, the original message) "
            "from MAILER-DAEMON to the envelope sender lands in its INBOX"),
        "quota_full_user": full_address,
        "quota_full_limit": QUOTA_FULL_LIMIT,
        "quota_full_reply": quota_full_reply,
        "quota_status_action": "action=" + QUOTA_STATUS_OVERQUOTA,
        "quota_full_description": (
            f"RCPT TO:<{full_address}> (any +detail too) on the submission ports ({SUBMISSION_PORT}, "
            f"{SUBMISSIONS_PORT}, {SUBMISSIONS_EXPIRED_PORT}) is answered {quota_full_reply!r} by "
            f"Dovecot's quota-status policy service: the mailbox (quota {QUOTA_FULL_LIMIT}) holds a "
            "filler message stored at up; other users are unaffected"),
        "greylist": "+" + GREYLIST_DETAIL,
        "greylist_seconds": greylist_seconds,
        "greylist_default_seconds": GREYLIST_DEFAULT_SECONDS,
        "greylist_action": "action=" + GREYLIST_ACTION,
        "greylist_reply": reply_for(GREYLIST_REPLY, f"probe+{GREYLIST_DETAIL}@{DOMAIN}"),
        "greylist_description": (
            f"mail to {_tag_forms(GREYLIST_DETAIL)} is deferred by the "
            f"inbound MX (port {MX_PORT}) at RCPT (450 4.7.1) until the message "
            "(client, sender, recipient, size) was first seen N s ago "
            f"(set_greylist_seconds(n), default {GREYLIST_DEFAULT_SECONDS:g}; read when a message is "
            "first seen); the relay retries every 1-2 s, so it lands in INBOX "
            "about N..N+2 s after submission"),
        "noauth_user": noauth_address,
        "noauth_reply": NOAUTH_REPLY,
        "noauth_description": (
            f"{noauth_address} has a password (password file like the others) but SMTP AUTH "
            f"on the submission ports fails with {NOAUTH_REPLY!r} (Dovecot deny passdb for "
            f"auth service {'/'.join(NOAUTH_SERVICES)}); IMAP LOGIN with the same password works"),
        "sender_reject": "+" + SENDER_REJECT_DETAIL,
        "sender_reject_reply": reply_for(SENDER_REJECT_REPLY, f"probe+{SENDER_REJECT_DETAIL}@{DOMAIN}"),
        "sender_reject_description": (
            f"MAIL FROM:<<user>+{SENDER_REJECT_DETAIL}@{DOMAIN}> (or +{SENDER_REJECT_DETAIL}-*, .*, _*) "
            f"on the submission ports is answered {sender_reject_example!r} at MAIL FROM "
            "(smtpd_delay_reject=no there)"),
        "expired_ports": {"submissions_expired": SUBMISSIONS_EXPIRED_PORT,
                          "imaps_expired": IMAPS_EXPIRED_PORT},
        "expired_description": (
            f"implicit TLS on {HOST}:{SUBMISSIONS_EXPIRED_PORT} (Postfix submissions, AUTH) and "
            f"{HOST}:{IMAPS_EXPIRED_PORT} (IMAPS, auxd TLS front to Dovecot) presents a certificate "
            f"for {TLS_HOSTNAME} from the stack CA that has EXPIRED: verification fails with "
            f"'certificate has expired'; everything else is as on {SUBMISSIONS_PORT}/{IMAPS_PORT}"),
    }
