"""Certificate variants for the TLS health checks: leaf certificates made to
order with openssl, each served by the real Postfix and Dovecot on a loopback
address of its own (the same port numbers as HOST's), and the certificate of
the TLS-1.0-only fronts (auxd, on HOST).

A VariantSpec says who signs (the stack CA, a second "unknown" CA that nobody
trusts, or the certificate itself), notBefore and notAfter as offsets from the
moment it is made, and its names (subjectAltName DNS and IP entries; the
subject CN is the first DNS name).  CertFactory.ensure() makes what is
missing, and makes anew a certificate whose spec or issuer changed, or whose
offsets have drifted by more than the spec's max_drift since it was made: an
hour for the variants whose dates are the point ("expires in 5 days" must
still have 5 days left), 30 days for the others.  Keys are kept; only the
certificates are issued again.  The times are exact: "openssl ca" with
-startdate/-enddate and a throw-away CA database (OpenSSL 3.0's "x509 -req"
has no -not_before/-not_after, and its -days cannot go negative).

Files: DIR/tls/variants/<name>.pem and <name>.key, manifest.json there (what
was made when, from which spec and issuer: what ensure() compares), and the
unknown CA in DIR/tls/unknown-ca.pem and unknown-ca.key.
"""

import hashlib
import json
import os
import secrets
import ssl
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NamedTuple, Optional

from .config import (
    HOST,
    IMAP_PORT,
    IMAPS_PORT,
    IMAPS_TLS10_PORT,
    SUBMISSION_PORT,
    SUBMISSIONS_PORT,
    SUBMISSIONS_TLS10_PORT,
    TLS_HOSTNAME,
)
from .system import make_dir, render, run, write_file

DAY = 86400
HOUR = 3600
STACK_CA, UNKNOWN_CA, SELF_SIGNED = "stack", "unknown", "self"
SUBJECT_ORG = "check_email_roundtrip tests"
UNKNOWN_CA_CN = "Mailstack Unknown Test CA"
UNKNOWN_CA_SUBJECT = f"/O=Unknown Test Authority/CN={UNKNOWN_CA_CN}"
WRONG_NAME_HOSTNAME = "mail.example.org"    # the wrong_name variant's only name
TLS10_VARIANT = "tls10_only"                # auxd's TLS-1.0-only fronts, on HOST


class VariantSpec(NamedTuple):
    name: str
    host: str                     # the loopback address it is served on
    not_before: int               # seconds from the moment it is made
    not_after: int
    issuer: str = STACK_CA        # STACK_CA, UNKNOWN_CA or SELF_SIGNED
    dns: tuple = (TLS_HOSTNAME,)  # SAN DNS entries; the first is the CN
    ips: Optional[tuple] = None   # SAN IP entries; None: (host,)
    max_drift: int = HOUR         # made anew when made longer ago than this
    # what OpenSSL's verification says to a client that trusts the stack CA
    # and connects to host by address (None: it verifies)
    verify_error: Optional[str] = None
    what: str = ""

    @property
    def san(self):
        ips = (self.host,) if self.ips is None else self.ips
        return tuple(f"IP:{ip}" for ip in ips) + tuple(f"DNS:{name}" for name in self.dns)


def _days(days):
    return int(days * DAY)


# Served by Postfix (submission STARTTLS, submissions implicit TLS) and
# Dovecot (IMAP STARTTLS, IMAPS) on spec.host; the tls10_only one by auxd.
VARIANT_SPECS = (
    VariantSpec("valid", "127.0.0.2", _days(-1), _days(89), max_drift=30 * DAY,
                what="stack CA, about 89 days left"),
    VariantSpec("expires_in_14_days", "127.0.0.3", _days(-76), _days(14),
                what="stack CA, expires in 14 days (under 21, over 7)"),
    VariantSpec("expires_in_5_days", "127.0.0.4", _days(-85), _days(5), what="stack CA, expires in 5 days"),
    VariantSpec("expires_in_2_days", "127.0.0.5", _days(-88), _days(2), what="stack CA, expires in 2 days"),
    VariantSpec("expired_yesterday", "127.0.0.6", _days(-91), _days(-1),
                verify_error="certificate has expired", what="stack CA, notAfter a day ago"),
    VariantSpec("not_yet_valid", "127.0.0.7", _days(1), _days(91),
                verify_error="certificate is not yet valid", what="stack CA, notBefore a day ahead"),
    VariantSpec("wrong_name", "127.0.0.8", _days(-1), _days(89), dns=(WRONG_NAME_HOSTNAME,), ips=(),
                max_drift=30 * DAY, verify_error="IP address mismatch",
                what=f"stack CA, for {WRONG_NAME_HOSTNAME} only"),
    VariantSpec("self_signed", "127.0.0.9", _days(-1), _days(89), issuer=SELF_SIGNED, max_drift=30 * DAY,
                verify_error="self-signed certificate", what="signed by its own key"),
    VariantSpec("unknown_ca", "127.0.0.10", _days(-1), _days(89), issuer=UNKNOWN_CA, max_drift=30 * DAY,
                verify_error="unable to get local issuer certificate",
                what=f"signed by {UNKNOWN_CA_CN} (not the stack CA; served without it)"),
)
TLS10_SPEC = VariantSpec(TLS10_VARIANT, HOST, _days(-1), _days(89), dns=(TLS_HOSTNAME,), max_drift=30 * DAY,
                         what="stack CA; auxd's fronts negotiate TLSv1 only")
SPECS = VARIANT_SPECS + (TLS10_SPEC,)
CERT_VARIANTS = tuple(spec.name for spec in SPECS)
CERT_VARIANT_HOSTS = {spec.name: spec.host for spec in VARIANT_SPECS}


@dataclass(frozen=True)
class CertVariant:
    """One variant as the tests use it (MailStack.cert_variant(name))."""
    name: str
    host: str                          # connect here (an address: 127.0.0.x)
    smtp_port: int                     # implicit TLS (submissions; TLS 1.0 front: to the MX)
    imap_port: int                     # IMAPS
    smtp_starttls_port: Optional[int]  # submission, STARTTLS (None: tls10_only)
    imap_starttls_port: Optional[int]  # IMAP, STARTTLS (None: tls10_only)
    cert_file: str
    key_file: str
    ca_file: str                       # what to trust: stack CA, unknown CA, or the cert itself
    issuer: str                        # "stack", "unknown" or "self"
    names: tuple                       # SAN entries: ("IP:127.0.0.4", "DNS:localhost")
    not_before: datetime               # UTC
    not_after: datetime                # UTC
    not_before_text: str               # as "openssl x509 -startdate" prints it
    not_after_text: str                # as "openssl x509 -enddate" prints it
    verify_error: Optional[str]        # see VariantSpec
    tls_version: Optional[str]         # "TLSv1" for the TLS 1.0 fronts, else None (the daemons')
    served_by: str                     # "postfix+dovecot" or "auxd"
    what: str

    def days_left(self, now=None):
        """Days (float) until notAfter; negative once expired."""
        now = datetime.now(timezone.utc) if now is None else now
        return (self.not_after - now).total_seconds() / DAY


def openssl_time(text):
    """openssl's "Jan  1 00:00:00 2027 GMT" as an aware UTC datetime."""
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(text), timezone.utc)


def sha256_file(path):
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None


class CertFactory:
    def __init__(self, tls_dir, ca, ca_key, log, say):
        self.dir = os.path.join(tls_dir, "variants")
        self.ca, self.ca_key = ca, ca_key
        self.unknown_ca = os.path.join(tls_dir, "unknown-ca.pem")
        self.unknown_ca_key = os.path.join(tls_dir, "unknown-ca.key")
        self.manifest_file = os.path.join(self.dir, "manifest.json")
        self.log = log
        self.say = say

    def cert_file(self, name):
        return os.path.join(self.dir, f"{name}.pem")

    def key_file(self, name):
        return os.path.join(self.dir, f"{name}.key")

    def ca_file(self, spec):
        return {STACK_CA: self.ca, UNKNOWN_CA: self.unknown_ca}.get(spec.issuer) or self.cert_file(spec.name)

    def manifest(self):
        try:
            with open(self.manifest_file) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    # -- making --------------------------------------------------------------
    def ensure(self, now=None):
        """Make what is missing or no longer means what it says.  Returns the
        set of certificate files made (the daemons serving them reload)."""
        now = time.time() if now is None else now
        make_dir(self.dir, 0o755)
        made = set()
        if self._ensure_unknown_ca():
            made.add(self.unknown_ca)
        manifest = self.manifest()
        for spec in SPECS:
            why = self.stale(spec, manifest.get(spec.name), now)
            if why:
                self.say(f"making certificate variant {spec.name} ({why})")
                manifest[spec.name] = self.issue(spec, now)
                made.add(self.cert_file(spec.name))
        if made or set(manifest) != set(CERT_VARIANTS):
            manifest = {name: manifest[name] for name in CERT_VARIANTS}
            write_file(self.manifest_file, json.dumps(manifest, indent=1, sort_keys=True) + "\n", 0o644)
        return made

    def _issuer_sha256(self, spec):
        return None if spec.issuer == SELF_SIGNED else sha256_file(self.ca_file(spec))

    def stale(self, spec, entry, now):
        """Why the variant must be made (anew), or None."""
        cert, key = self.cert_file(spec.name), self.key_file(spec.name)
        if not (os.path.exists(cert) and os.path.exists(key)):
            return "missing"
        if entry is None:
            return "not in the manifest"
        if entry.get("spec") != json.loads(json.dumps(spec._asdict())):
            return "its spec changed"
        if entry.get("issuer_sha256") != self._issuer_sha256(spec):
            return "its issuer is new"
        if entry.get("cert_sha256") != sha256_file(cert):
            return "the file changed"
        age = now - entry.get("made", 0)
        if age > spec.max_drift or age < -60:
            return f"made {age / HOUR:.1f} h ago, its dates have drifted"
        return None

    def _ensure_unknown_ca(self):
        if os.path.exists(self.unknown_ca_key) and run(
                ["openssl", "x509", "-in", self.unknown_ca, "-noout", "-checkend", str(30 * DAY)],
                check=False).returncode == 0:
            return False
        self.say("making the unknown CA (for the unknown_ca variant)")
        with self._workdir() as work:
            cnf = self._cnf(work, "unknown-ca", UNKNOWN_CA_CN, "DNS:unused")
            key, cert = os.path.join(work, "ca.key"), os.path.join(work, "ca.pem")
            run(["openssl", "req", "-x509", "-config", cnf, "-extensions", "ca_ext", "-newkey", "rsa:2048",
                 "-nodes", "-keyout", key, "-out", cert, "-days", "3650", "-subj", UNKNOWN_CA_SUBJECT],
                log=self.log)
            os.chmod(key, 0o600)
            os.chmod(cert, 0o644)
            os.replace(key, self.unknown_ca_key)
            os.replace(cert, self.unknown_ca)
        return True

    def _workdir(self):
        """A private temporary directory beside the certificates, removed after."""
        return tempfile.TemporaryDirectory(prefix=".work-", dir=self.dir)

    def _cnf(self, work, name, cn, san):
        db, serial = os.path.join(work, "index.txt"), os.path.join(work, "serial")
        write_file(db, "", 0o600)
        write_file(serial, secrets.token_hex(16).upper() + "\n", 0o600)
        cnf = os.path.join(work, "openssl.cnf")
        write_file(cnf, render("openssl-variant.cnf", name=name, db=db, serial=serial, work=work,
                               cn=cn, san=san), 0o600)
        return cnf

    def issue(self, spec, now):
        """Make spec's certificate (and its key, if there is none yet) with
        notBefore/notAfter at now + the spec's offsets.  Returns its manifest entry."""
        cert, key = self.cert_file(spec.name), self.key_file(spec.name)
        if not os.path.exists(key):
            tmp = f"{key}.tmp.{os.getpid()}"
            run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", tmp],
                log=self.log)
            os.chmod(tmp, 0o600)
            os.replace(tmp, key)
        stamp = "%Y%m%d%H%M%SZ"
        start = time.strftime(stamp, time.gmtime(now + spec.not_before))
        end = time.strftime(stamp, time.gmtime(now + spec.not_after))
        with self._workdir() as work:
            cnf = self._cnf(work, spec.name, spec.dns[0], ", ".join(spec.san))
            csr, out = os.path.join(work, "leaf.csr"), os.path.join(work, "leaf.pem")
            run(["openssl", "req", "-new", "-config", cnf, "-key", key, "-out", csr,
                 "-subj", f"/O={SUBJECT_ORG}/OU={spec.name}/CN={spec.dns[0]}"], log=self.log)
            signer = (["-selfsign", "-keyfile", key] if spec.issuer == SELF_SIGNED
                      else ["-cert", self.ca_file(spec), "-keyfile",
                            self.ca_key if spec.issuer == STACK_CA else self.unknown_ca_key])
            run(["openssl", "ca", "-batch", "-config", cnf, *signer, "-in", csr, "-out", out, "-notext",
                 "-startdate", start, "-enddate", end, "-extensions", "leaf_ext"], log=self.log)
            os.chmod(out, 0o644)
            os.replace(out, cert)
        not_before, not_after = self.dates(cert)
        return {"made": now, "spec": json.loads(json.dumps(spec._asdict())),
                "issuer_sha256": self._issuer_sha256(spec), "cert_sha256": sha256_file(cert),
                "not_before": not_before, "not_after": not_after}

    @staticmethod
    def dates(cert):
        """(notBefore, notAfter) as "openssl x509" prints them."""
        out = run(["openssl", "x509", "-in", cert, "-noout", "-startdate", "-enddate"]).stdout
        fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return fields["notBefore"].strip(), fields["notAfter"].strip()

    # -- reading ---------------------------------------------------------------
    def variant(self, name, manifest=None):
        """The CertVariant called name (KeyError for an unknown name; the
        stack must have been up: the dates come from the manifest)."""
        spec = next((s for s in SPECS if s.name == name), None)
        if spec is None:
            raise KeyError(f"no certificate variant {name!r}; there are {', '.join(CERT_VARIANTS)}")
        entry = (self.manifest() if manifest is None else manifest).get(name)
        if entry is None:
            raise KeyError(f"certificate variant {name!r} not made yet: run 'up' first")
        tls10 = spec is TLS10_SPEC
        return CertVariant(
            name=name, host=spec.host,
            smtp_port=SUBMISSIONS_TLS10_PORT if tls10 else SUBMISSIONS_PORT,
            imap_port=IMAPS_TLS10_PORT if tls10 else IMAPS_PORT,
            smtp_starttls_port=None if tls10 else SUBMISSION_PORT,
            imap_starttls_port=None if tls10 else IMAP_PORT,
            cert_file=self.cert_file(name), key_file=self.key_file(name), ca_file=self.ca_file(spec),
            issuer=spec.issuer, names=spec.san,
            not_before=openssl_time(entry["not_before"]), not_after=openssl_time(entry["not_after"]),
            not_before_text=entry["not_before"], not_after_text=entry["not_after"],
            verify_error=spec.verify_error, tls_version="TLSv1" if tls10 else None,
            served_by="auxd" if tls10 else "postfix+dovecot", what=spec.what)

    def variants(self):
        """{name: CertVariant} for every variant, tls10_only included."""
        manifest = self.manifest()
        return {name: self.variant(name, manifest) for name in CERT_VARIANTS}

    def info(self):
        """stack.json's "certificates" section ({} before the first up)."""
        manifest = self.manifest()
        if set(manifest) != set(CERT_VARIANTS):
            return {}
        variants = {}
        for name in CERT_VARIANTS:
            v = self.variant(name, manifest)
            variants[name] = {
                "host": v.host, "smtp_port": v.smtp_port, "imap_port": v.imap_port,
                "smtp_starttls_port": v.smtp_starttls_port, "imap_starttls_port": v.imap_starttls_port,
                "cert_file": v.cert_file, "key_file": v.key_file, "ca_file": v.ca_file, "issuer": v.issuer,
                "names": list(v.names), "not_before": v.not_before_text, "not_after": v.not_after_text,
                "not_after_iso": v.not_after.isoformat(), "verify_error": v.verify_error,
                "tls_version": v.tls_version, "served_by": v.served_by, "what": v.what,
                "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(manifest[name]["made"]))}
        return {"dir": self.dir, "stack_ca": self.ca, "unknown_ca": self.unknown_ca,
                "variants": variants,
                "tls10_fronts": {"host": TLS10_SPEC.host, "smtp_port": SUBMISSIONS_TLS10_PORT,
                                 "imap_port": IMAPS_TLS10_PORT, "version": "TLSv1",
                                 "variant": TLS10_VARIANT}}

