"""certinfo.py reads what openssl wrote: dates, names, issuer.

Certificates are made here by the openssl command (the same one the stack's
certificate factory uses) and every field is compared with what
``openssl x509`` says about the same file.  Malformed input raises
CertificateError, never anything else.
"""

import datetime
import glob
import ssl
import subprocess

import pytest

from check_email_roundtrip.certinfo import CertificateError, parse_certificate


def _openssl(*args, cwd):
    return subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _make(tmp_path, subject, *extra):
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "key.pem", "-out", "cert.pem", "-subj", subject, *extra, cwd=tmp_path,
    )  # fmt: skip
    pem = (tmp_path / "cert.pem").read_text()
    return ssl.PEM_cert_to_DER_cert(pem), tmp_path / "cert.pem"


def _enddate(path):
    text = _openssl("x509", "-in", str(path), "-noout", "-enddate", cwd=path.parent).strip()
    when = datetime.datetime.strptime(text.split("=", 1)[1], "%b %d %H:%M:%S %Y GMT")
    return when.replace(tzinfo=datetime.timezone.utc)


def test_dates_names_and_issuer_as_openssl_says(tmp_path):
    der, path = _make(
        tmp_path,
        "/CN=mail.example.test/O=Example",
        "-days", "5",
        "-addext", "subjectAltName=DNS:mail.example.test,DNS:smtp.example.test,IP:127.0.0.2",
    )  # fmt: skip
    facts = parse_certificate(der)
    assert facts.not_after == _enddate(path)
    assert facts.subject_cn == "mail.example.test"
    assert facts.issuer_cn == "mail.example.test"
    assert facts.self_issued
    assert facts.dns_names == ("mail.example.test", "smtp.example.test")
    assert facts.ip_addresses == ("127.0.0.2",)
    assert facts.names() == "mail.example.test, smtp.example.test, 127.0.0.2"
    assert 4.9 < facts.days_left() <= 5.0


def test_no_subject_alt_name_falls_back_to_the_common_name(tmp_path):
    der, _ = _make(tmp_path, "/CN=legacy.example.test", "-days", "30")
    facts = parse_certificate(der)
    assert facts.dns_names == () and facts.names() == "legacy.example.test"


def test_many_names_are_counted_not_listed(tmp_path):
    names = ",".join(f"DNS:h{i}.example.test" for i in range(7))
    der, _ = _make(tmp_path, "/CN=h0.example.test", "-days", "1", "-addext", f"subjectAltName={names}")
    assert parse_certificate(der).names().endswith("h3.example.test and 3 more")


def test_dates_past_2049_are_generalized_time(tmp_path):
    # RFC 5280: UTCTime until 2049, GeneralizedTime from 2050 on
    der, path = _make(tmp_path, "/CN=far.example.test", "-days", "10000")
    assert parse_certificate(der).not_after == _enddate(path)
    assert _enddate(path).year > 2050


def test_a_certificate_signed_by_a_ca_names_the_ca_as_issuer(tmp_path):
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=Example Test CA", "-days", "2", cwd=tmp_path,
    )  # fmt: skip
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=mx.example.test", cwd=tmp_path,
    )  # fmt: skip
    (tmp_path / "ext").write_text("subjectAltName=DNS:mx.example.test\n")
    _openssl(
        "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "leaf.pem", "-days", "1", "-extfile", "ext", cwd=tmp_path,
    )  # fmt: skip
    facts = parse_certificate(ssl.PEM_cert_to_DER_cert((tmp_path / "leaf.pem").read_text()))
    assert (facts.subject_cn, facts.issuer_cn, facts.self_issued) == (
        "mx.example.test",
        "Example Test CA",
        False,
    )
    assert facts.not_after == _enddate(tmp_path / "leaf.pem")


def test_every_certificate_of_the_system_store_parses():
    paths = sorted(glob.glob("/etc/ssl/certs/*.pem"))
    assert len(paths) > 50, "the Debian CA store (ca-certificates) is expected"
    for path in paths:
        with open(path) as file:
            der = ssl.PEM_cert_to_DER_cert(file.read())
        facts = parse_certificate(der)
        assert facts.not_before < facts.not_after, path


@pytest.mark.parametrize(
    "der",
    [
        b"",
        b"\x30",
        b"\x30\x84\xff\xff\xff\xff",  # a length far past the end
        b"\x30\x89" + b"\x01" * 9,  # a length of 9 bytes
        b"\x04\x03abc",  # not a SEQUENCE
        b"\x30\x03\x30\x01\x00",  # a SEQUENCE with too few fields
        b"\x30\x00",  # an empty SEQUENCE
    ],
)
def test_malformed_input_is_a_certificate_error(der):
    with pytest.raises(CertificateError):
        parse_certificate(der)


def test_every_truncation_of_a_real_certificate_is_a_certificate_error(tmp_path):
    der, _ = _make(
        tmp_path, "/CN=cut.example.test", "-days", "3", "-addext", "subjectAltName=DNS:cut.example.test"
    )
    for length in range(len(der)):
        with pytest.raises(CertificateError):
            parse_certificate(der[:length])


def test_a_corrupted_certificate_never_raises_anything_else(tmp_path):
    import random

    der, _ = _make(
        tmp_path, "/CN=flip.example.test", "-days", "3", "-addext", "subjectAltName=DNS:flip.example.test"
    )
    rng = random.Random(8601)
    for _ in range(3000):
        spoilt = bytearray(der)
        for _ in range(rng.randint(1, 4)):
            spoilt[rng.randrange(len(spoilt))] = rng.randrange(256)
        try:
            parse_certificate(bytes(spoilt))
        except CertificateError:
            pass
