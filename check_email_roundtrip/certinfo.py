"""What a server's certificate says: validity, names, issuer, from its DER.

Python's ssl module decodes a certificate only when it verified it
(``getpeercert()``), and then not always (a handshake that failed
verification gives nothing at all).  The probe needs the dates and names in
every case: with ``--insecure`` (a certificate that is not verified can
still expire) and to say why verification failed.  Reading those few fields
of an X.509 certificate is a walk over its DER, done here in a few dozen
lines: no ASN.1 library (pyasn1, asn1crypto, cryptography) would be lighter
to load or easier to trust for this, and a run without TLS never imports
this module.

Only what the probe reports is read: notBefore, notAfter, the subject's and
issuer's common name, whether subject and issuer are the same name, and the
DNS names and IP addresses of subjectAltName.  Anything malformed raises
:class:`CertificateError`.
"""

from __future__ import annotations

import socket
from datetime import datetime, timezone

from .record import Record

# DER tags
_SEQUENCE, _SET, _OID, _OCTET_STRING, _BOOLEAN = 0x30, 0x31, 0x06, 0x04, 0x01
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
_VERSION, _EXTENSIONS = 0xA0, 0xA3
_SAN_DNS, _SAN_IP = 0x82, 0x87
_STRING_TAGS = {
    0x0C: "utf-8",
    0x13: "ascii",
    0x16: "ascii",
    0x14: "latin-1",
    0x1E: "utf-16-be",
    0x1C: "utf-32-be",
}
_OID_COMMON_NAME = bytes([0x55, 0x04, 0x03])
_OID_SUBJECT_ALT_NAME = bytes([0x55, 0x1D, 0x11])


class CertificateError(ValueError):
    pass


class CertificateFacts(Record):
    not_before: datetime
    not_after: datetime
    subject_cn: str | None
    issuer_cn: str | None
    self_issued: bool  # subject and issuer are the same name (self-signed, as a rule)
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]

    def names(self) -> str:
        """Whom the certificate is for, in words: its SAN names, else its CN."""
        names = self.dns_names + self.ip_addresses
        if not names and self.subject_cn:
            names = (self.subject_cn,)
        return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "") or "(no name)"

    def days_left(self, now: datetime | None = None) -> float:
        now = now or datetime.now(timezone.utc)
        return (self.not_after - now).total_seconds() / 86400


def _read(data: bytes, position: int) -> tuple[int, bytes, int]:
    """(tag, value, position after it) of the TLV at ``position``."""
    try:
        tag = data[position]
        length = data[position + 1]
        position += 2
        if length & 0x80:
            count = length & 0x7F
            if not 0 < count <= 4:
                raise CertificateError("length of unsupported size")
            length = int.from_bytes(data[position : position + count], "big")
            position += count
    except IndexError:
        raise CertificateError("truncated") from None
    end = position + length
    if end > len(data):
        raise CertificateError("truncated")
    return tag, data[position:end], end


def _children(value: bytes) -> list[tuple[int, bytes]]:
    out, position = [], 0
    while position < len(value):
        tag, child, position = _read(value, position)
        out.append((tag, child))
    return out


def _time(tag: int, value: bytes) -> datetime:
    text = value.decode("ascii", "replace")
    try:
        if tag == _UTC_TIME:
            year = int(text[:2])
            text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
        elif tag != _GENERALIZED_TIME:
            raise ValueError(tag)
        # by hand: datetime.strptime would load _strptime (and locale) on every run with TLS
        if len(text) < 14 or not text[:14].isdigit():
            raise ValueError(text)
        year, month, day, hour, minute, second = (
            int(text[start:end]) for start, end in ((0, 4), (4, 6), (6, 8), (8, 10), (10, 12), (12, 14))
        )
        return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError:
        raise CertificateError(f"time does not parse: {text!r}") from None


def _common_name(name: bytes) -> str | None:
    for _, rdn in _children(name):
        for _, attribute in _children(rdn):
            parts = _children(attribute)
            if len(parts) == 2 and parts[0] == (_OID, _OID_COMMON_NAME) and parts[1][0] in _STRING_TAGS:
                return parts[1][1].decode(_STRING_TAGS[parts[1][0]], "replace")
    return None


def parse_certificate(der: bytes) -> CertificateFacts:
    try:
        return _parse(der)
    except (IndexError, ValueError) as exc:  # a structure other than a certificate's
        if isinstance(exc, CertificateError):
            raise
        raise CertificateError(f"not a certificate: {exc}") from None


def _parse(der: bytes) -> CertificateFacts:
    tag, certificate, _ = _read(der, 0)
    if tag != _SEQUENCE:
        raise CertificateError("not a certificate")
    tbs = _children(_children(certificate)[0][1])
    if tbs and tbs[0][0] == _VERSION:
        tbs = tbs[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
    if len(tbs) < 6:
        raise CertificateError("too few fields")
    issuer, validity, subject = tbs[2][1], tbs[3][1], tbs[4][1]
    times = _children(validity)
    if len(times) != 2:
        raise CertificateError("no validity")
    dns_names: list[str] = []
    ips: list[str] = []
    for tag, value in tbs[6:]:
        if tag != _EXTENSIONS:
            continue
        for _, extension in _children(_children(value)[0][1]):
            parts = _children(extension)
            if parts and parts[0] == (_OID, _OID_SUBJECT_ALT_NAME) and parts[-1][0] == _OCTET_STRING:
                for name_tag, name in _children(_children(parts[-1][1])[0][1]):
                    if name_tag == _SAN_DNS:
                        dns_names.append(name.decode("ascii", "replace"))
                    elif name_tag == _SAN_IP and len(name) in (4, 16):
                        family = socket.AF_INET if len(name) == 4 else socket.AF_INET6
                        ips.append(socket.inet_ntop(family, name))
    return CertificateFacts(
        not_before=_time(*times[0]),
        not_after=_time(*times[1]),
        subject_cn=_common_name(subject),
        issuer_cn=_common_name(issuer),
        self_issued=subject == issuer,
        dns_names=tuple(dns_names),
        ip_addresses=tuple(ips),
    )
