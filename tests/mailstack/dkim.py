"""DKIM keys: the signing key rspamd uses for DOMAIN, and a second valid key
that is NOT the signing key (publish it for the "wrong key" case)."""

import grp
import os

from .config import DKIM_BITS, DKIM_SELECTOR, DOMAIN, RSPAMD_USER
from .system import StackError, make_dir, run


class DkimKeys:
    def __init__(self, dkim_dir, log, say):
        self.dir = dkim_dir
        self.log = log            # openssl's output
        self.say = say
        self.key = os.path.join(dkim_dir, f"{DOMAIN}.{DKIM_SELECTOR}.key")
        self.other_key = os.path.join(dkim_dir, "other.key")
        self._public = {}         # (path, mtime, size) -> TXT value

    def ensure(self):
        """Generate missing keys; True when the signing key is new (its
        published record must then change too)."""
        gid = grp.getgrnam(RSPAMD_USER).gr_gid
        make_dir(self.dir, 0o750, 0, gid)
        new_signing_key = False
        for key in (self.key, self.other_key):
            if not os.path.exists(key):
                self.say(f"generating {DKIM_BITS}-bit DKIM key {key}")
                tmp = key + ".tmp"
                run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                     f"rsa_keygen_bits:{DKIM_BITS}", "-out", tmp], log=self.log)
                os.chmod(tmp, 0o640)
                os.chown(tmp, 0, gid)
                os.replace(tmp, key)
                new_signing_key |= key == self.key
            os.chmod(key, 0o640)       # rspamd workers run as _rspamd
            os.chown(key, 0, gid)
        return new_signing_key

    def public_txt(self, key=None):
        """The DKIM TXT value ("v=DKIM1; k=rsa; p=...") for a key (default:
        the signing key)."""
        key = key or self.key
        try:
            st = os.stat(key)
        except OSError:
            raise StackError(f"no DKIM key {key} yet: run 'up' first") from None
        cache_key = (key, st.st_mtime_ns, st.st_size)
        if cache_key not in self._public:
            pem = run(["openssl", "pkey", "-in", key, "-pubout"]).stdout
            body = pem.split("-----BEGIN PUBLIC KEY-----", 1)[1].split("-----END", 1)[0]
            self._public[cache_key] = "v=DKIM1; k=rsa; p=" + "".join(body.split())
        return self._public[cache_key]
