"""The stack's certificates, made with openssl at the first up: a private CA,
a server certificate for TLS_HOSTNAME only (connecting by 127.0.0.1 is then
the "certificate for another name" case), an EXPIRED one for the
*_EXPIRED_PORT twins, and the OAuth2 IdP's for TLS_HOSTNAME and HOST (Dovecot
calls it by address)."""

import os
import secrets
import time

from .config import HOST, TLS_HOSTNAME
from .system import make_dir, render, run, write_file


class Certificates:
    def __init__(self, tls_dir, log, say):
        self.dir = tls_dir
        self.log = log            # openssl's output
        self.say = say
        self.ca = os.path.join(tls_dir, "ca.pem")
        self.ca_key = os.path.join(tls_dir, "ca.key")
        self.cert = os.path.join(tls_dir, "server.pem")
        self.key = os.path.join(tls_dir, "server.key")
        self.expired_cert = os.path.join(tls_dir, "expired.pem")
        self.expired_key = os.path.join(tls_dir, "expired.key")
        self.idp_cert = os.path.join(tls_dir, "idp.pem")
        self.idp_key = os.path.join(tls_dir, "idp.key")
        self.cnf = os.path.join(tls_dir, "openssl.cnf")

    def ensure(self):
        """Make what is missing; a server certificate that expires within a
        day is made anew, and so is everything the CA signed when the CA is new."""
        write_file(self.cnf, render("openssl.cnf", hostname=TLS_HOSTNAME, ip=HOST))
        new_ca = False
        if not (os.path.exists(self.ca) and os.path.exists(self.ca_key)):
            self.say("generating CA")
            run(["openssl", "req", "-x509", "-config", self.cnf, "-extensions", "ca_ext",
                 "-newkey", "rsa:2048", "-nodes", "-keyout", self.ca_key, "-out", self.ca,
                 "-days", "3650", "-subj", "/O=check_email_roundtrip tests/CN=Mailstack Test CA"],
                log=self.log)
            os.chmod(self.ca_key, 0o600)
            os.chmod(self.ca, 0o644)
            new_ca = True
        for cert, key, extensions, names in (
                (self.cert, self.key, "server_ext", TLS_HOSTNAME),
                (self.idp_cert, self.idp_key, "idp_ext", f"{TLS_HOSTNAME} and {HOST}")):
            if new_ca or not self.valid_for_a_day(cert, key):
                self.say(f"generating {os.path.basename(cert)} for {names}")
                self.issue(cert, key, extensions)
        if new_ca or not (os.path.exists(self.expired_cert) and os.path.exists(self.expired_key)):
            self.make_expired()

    @staticmethod
    def valid_for_a_day(cert, key):
        return (os.path.exists(cert) and os.path.exists(key)
                and run(["openssl", "x509", "-in", cert, "-noout", "-checkend", "86400"],
                        check=False).returncode == 0)

    def issue(self, cert, key, extensions):
        """A server certificate from the stack CA with the cnf's extensions section."""
        csr = cert + ".csr"
        run(["openssl", "req", "-new", "-config", self.cnf, "-newkey", "rsa:2048", "-nodes",
             "-keyout", key, "-out", csr, "-subj", f"/CN={TLS_HOSTNAME}"], log=self.log)
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
             "-set_serial", "0x" + secrets.token_hex(16), "-days", "825",
             "-extfile", self.cnf, "-extensions", extensions, "-out", cert], log=self.log)
        os.chmod(key, 0o600)
        os.chmod(cert, 0o644)
        os.unlink(csr)

    def make_expired(self, days_ago=1, valid_days=30):
        """A server certificate for TLS_HOSTNAME signed by the stack CA whose
        notAfter lies days_ago in the past.  OpenSSL 3.0's "x509 -req" has no
        -not_after (3.4+) and -days cannot go negative: "openssl ca" with
        -startdate/-enddate and a throw-away CA database does it."""
        self.say(f"generating EXPIRED server certificate for {TLS_HOSTNAME}")
        work = os.path.join(self.dir, "expired-ca.tmp")
        make_dir(work, 0o700)
        try:
            db, serial = os.path.join(work, "index.txt"), os.path.join(work, "serial")
            write_file(db, "", 0o600)
            write_file(serial, secrets.token_hex(16).upper() + "\n", 0o600)
            ca_cnf = os.path.join(work, "ca.cnf")
            write_file(ca_cnf, render("openssl-expired-ca.cnf", db=db, serial=serial, work=work), 0o600)
            now = time.time()
            stamp = "%Y%m%d%H%M%SZ"
            start = time.strftime(stamp, time.gmtime(now - (days_ago + valid_days) * 86400))
            end = time.strftime(stamp, time.gmtime(now - days_ago * 86400))
            csr, key = os.path.join(work, "expired.csr"), os.path.join(work, "expired.key")
            cert = os.path.join(work, "expired.pem")
            run(["openssl", "req", "-new", "-config", self.cnf, "-newkey", "rsa:2048", "-nodes",
                 "-keyout", key, "-out", csr, "-subj", f"/CN={TLS_HOSTNAME}"], log=self.log)
            run(["openssl", "ca", "-batch", "-config", ca_cnf, "-cert", self.ca,
                 "-keyfile", self.ca_key, "-in", csr, "-out", cert, "-notext",
                 "-startdate", start, "-enddate", end,
                 "-extfile", self.cnf, "-extensions", "server_ext"], log=self.log)
            os.chmod(key, 0o600)
            os.chmod(cert, 0o644)
            os.replace(key, self.expired_key)
            os.replace(cert, self.expired_cert)
        finally:
            for name in os.listdir(work):
                os.unlink(os.path.join(work, name))
            os.rmdir(work)

    def not_after(self, path):
        """The certificate's notAfter as openssl prints it, or None."""
        res = run(["openssl", "x509", "-in", path, "-noout", "-enddate"], check=False)
        return res.stdout.strip().split("=", 1)[-1] if res.returncode == 0 else None
