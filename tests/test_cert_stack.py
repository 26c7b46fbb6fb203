"""The stack's certificate variants and TLS-1.0-only fronts, seen from the
standard library's ssl, smtplib and imaplib: each variant's address presents
its own certificate on all four mail ports (Postfix submission and
submissions, Dovecot IMAP and IMAPS), a verifying client fails exactly as
the variant says, the TLS 1.0 fronts negotiate TLSv1 and nothing newer, and
every port of HOST still presents what it did before the variants came.
The certificate factory itself is tested at the end, without daemons."""

import contextlib
import email.message
import imaplib
import json
import os
import secrets
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
import warnings
from datetime import datetime, timezone

import pytest
from mailstack import (
    CERT_VARIANTS,
    DOMAIN,
    HOST,
    IMAP_PORT,
    IMAPS_EXPIRED_PORT,
    IMAPS_PORT,
    IMAPS_TLS10_PORT,
    MX_HOSTNAME,
    SUBMISSION_PORT,
    SUBMISSIONS_EXPIRED_PORT,
    SUBMISSIONS_PORT,
    SUBMISSIONS_TLS10_PORT,
    TLS_HOSTNAME,
    WRONG_NAME_HOSTNAME,
    certvariants,
    config,
)

TIMEOUT = 10
# what the variants' names promise: days from now to notAfter (notBefore for not_yet_valid)
MAIL_VARIANTS = tuple(spec.name for spec in certvariants.VARIANT_SPECS)
PROTOCOLS = ("smtps", "submission", "imaps", "imap")
EXPECTED_DAYS = {"valid": 89, "expires_in_14_days": 14, "expires_in_5_days": 5, "expires_in_2_days": 2,
                 "expired_yesterday": -1, "not_yet_valid": 91, "wrong_name": 89, "self_signed": 89,
                 "unknown_ca": 89, "tls10_only": 89}


# -- helpers ----------------------------------------------------------------------
def verifying(cafile, name=None):
    """A default client context trusting cafile only; name, when given, is
    the name checked whatever address smtplib/imaplib connect to."""
    context = ssl.create_default_context(cafile=cafile)
    if name:
        wrap = context.wrap_socket

        def wrap_as_name(sock, server_hostname=None, **kwargs):
            return wrap(sock, server_hostname=name, **kwargs)

        context.wrap_socket = wrap_as_name
    return context


def unverified():
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def tls10_client(minimum="TLSv1", maximum=None, cafile=None):
    """A client that allows old protocols: OpenSSL 3 wants @SECLEVEL=0 for them."""
    context = ssl.create_default_context(cafile=cafile) if cafile else unverified()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion[minimum]
        if maximum:
            context.maximum_version = ssl.TLSVersion[maximum]
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


@contextlib.contextmanager
def mail_tls(protocol, host, port, context):
    """A smtplib/imaplib client after its TLS handshake (implicit or STARTTLS);
    yields (client, the SSLSocket)."""
    client = None
    try:
        if protocol == "smtps":
            client = smtplib.SMTP_SSL(host, port, timeout=TIMEOUT, context=context)
        elif protocol == "submission":
            client = smtplib.SMTP(host, port, timeout=TIMEOUT)
            client.starttls(context=context)
        elif protocol == "imaps":
            client = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=TIMEOUT)
        else:
            client = imaplib.IMAP4(host, port, timeout=TIMEOUT)
            client.starttls(ssl_context=context)
        yield client, client.sock
    finally:
        if client is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException, imaplib.IMAP4.error):
                if isinstance(client, smtplib.SMTP):
                    client.close()
                else:
                    client.shutdown()


def port_of(variant, protocol):
    return {"smtps": variant.smtp_port, "submission": variant.smtp_starttls_port,
            "imaps": variant.imap_port, "imap": variant.imap_starttls_port}[protocol]


def pem_der(path):
    with open(path) as fh:
        return ssl.PEM_cert_to_DER_cert(fh.read())


def openssl_enddate(path, der=False):
    """notAfter as `openssl x509 -enddate -noout` prints it (of a file, or of DER bytes)."""
    if der:
        out = subprocess.run(["openssl", "x509", "-inform", "DER", "-enddate", "-noout"], input=path,
                             capture_output=True, check=True).stdout.decode()
    else:
        out = subprocess.run(["openssl", "x509", "-enddate", "-noout", "-in", path], capture_output=True,
                             text=True, check=True).stdout
    return out.strip().split("=", 1)[1]


@pytest.fixture(scope="module")
def variants(stack):
    return stack.cert_variants()


# -- the layout: API, stack.json, env ----------------------------------------------
def test_every_variant_has_its_own_address_and_files(variants):
    assert tuple(variants) == CERT_VARIANTS
    hosts = [v.host for v in variants.values() if v.name in MAIL_VARIANTS]
    assert len(set(hosts)) == len(hosts) and HOST not in hosts
    assert all(h.startswith("127.") for h in hosts)
    for v in variants.values():
        assert os.path.isfile(v.cert_file) and os.path.isfile(v.key_file) and os.path.isfile(v.ca_file)
        assert v.not_after.tzinfo is not None and v.not_before < v.not_after


def test_the_api_stack_json_and_env_agree(stack, variants):
    with open(stack.stack_json) as fh:
        certificates = json.load(fh)["certificates"]
    assert certificates["stack_ca"] == stack.ca
    assert set(certificates["variants"]) == set(CERT_VARIANTS)
    env = stack.env()
    for name, v in variants.items():
        entry = certificates["variants"][name]
        assert (entry["host"], entry["smtp_port"], entry["imap_port"], entry["cert_file"], entry["ca_file"]) \
            == (v.host, v.smtp_port, v.imap_port, v.cert_file, v.ca_file)
        assert entry["not_after"] == v.not_after_text
        assert datetime.fromisoformat(entry["not_after_iso"]) == v.not_after
        prefix = f"MAILSTACK_CERT_{name.upper()}"
        assert (env[f"{prefix}_HOST"], env[f"{prefix}_SMTP_PORT"], env[f"{prefix}_IMAP_PORT"],
                env[f"{prefix}_FILE"], env[f"{prefix}_CA"], env[f"{prefix}_NOT_AFTER"]) \
            == (v.host, str(v.smtp_port), str(v.imap_port), v.cert_file, v.ca_file, v.not_after_text)
    fronts = certificates["tls10_fronts"]
    assert (fronts["smtp_port"], fronts["imap_port"], fronts["version"]) \
        == (SUBMISSIONS_TLS10_PORT, IMAPS_TLS10_PORT, "TLSv1")
    assert (env["MAILSTACK_SUBMISSIONS_TLS10_PORT"], env["MAILSTACK_IMAPS_TLS10_PORT"]) \
        == (str(SUBMISSIONS_TLS10_PORT), str(IMAPS_TLS10_PORT))
    assert env["MAILSTACK_UNKNOWN_CA"] == certificates["unknown_ca"]


def test_an_unknown_variant_name_is_a_key_error_naming_the_known_ones(stack):
    with pytest.raises(KeyError, match="expires_in_5_days"):
        stack.cert_variant("expires_in_3_days")


@pytest.mark.parametrize("name", CERT_VARIANTS)
def test_the_dates_are_what_the_name_says_and_what_openssl_prints(variants, name):
    v = variants[name]
    assert openssl_enddate(v.cert_file) == v.not_after_text
    now = datetime.now(timezone.utc)
    assert (v.not_before > now) == (name == "not_yet_valid")
    # made when this session's up ran, or up to max_drift before (an hour for
    # the dated ones, 30 days for the others); a session is shorter than a day
    spec = next(s for s in certvariants.SPECS if s.name == name)
    assert 0 <= EXPECTED_DAYS[name] - v.days_left(now) < spec.max_drift / 86400 + 1


def test_the_names_are_the_address_and_localhost_except_for_wrong_name(variants):
    for v in variants.values():
        expected = (f"DNS:{WRONG_NAME_HOSTNAME}",) if v.name == "wrong_name" \
            else (f"IP:{v.host}", f"DNS:{TLS_HOSTNAME}")
        assert v.names == expected
        out = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", v.cert_file],
                             capture_output=True, text=True, check=True).stdout
        assert out.split("\n", 1)[1].strip() == ", ".join(expected).replace("IP:", "IP Address:")


# -- each variant on the real Postfix and Dovecot ------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", MAIL_VARIANTS)
def test_each_variant_presents_its_certificate_on_every_mail_port(variants, name, protocol):
    v = variants[name]
    with mail_tls(protocol, v.host, port_of(v, protocol), unverified()) as (_, sock):
        served = sock.getpeercert(binary_form=True)
    assert served == pem_der(v.cert_file)
    assert openssl_enddate(served, der=True) == openssl_enddate(v.cert_file) == v.not_after_text


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", MAIL_VARIANTS)
def test_a_client_trusting_the_stack_ca_fails_exactly_as_the_variant_says(stack, variants, name, protocol):
    v = variants[name]
    context = verifying(stack.ca)
    if v.verify_error is None:
        with mail_tls(protocol, v.host, port_of(v, protocol), context) as (_, sock):
            assert sock.getpeercert()["notAfter"] == v.not_after_text
    else:
        with pytest.raises(ssl.SSLCertVerificationError) as failure, \
                mail_tls(protocol, v.host, port_of(v, protocol), context):
            pass
        assert failure.value.verify_message.startswith(v.verify_error), failure.value


@pytest.mark.parametrize("protocol", ["smtps", "imap"])
@pytest.mark.parametrize("name, server_hostname, error", [
    ("wrong_name", TLS_HOSTNAME, "Hostname mismatch"),
    ("wrong_name", WRONG_NAME_HOSTNAME, None),
    ("self_signed", None, None),        # trusting the certificate itself
    ("unknown_ca", None, None),         # trusting the unknown CA
    ("expired_yesterday", TLS_HOSTNAME, "certificate has expired"),
    ("not_yet_valid", TLS_HOSTNAME, "certificate is not yet valid"),
])
def test_the_variants_own_ca_file_and_names(variants, name, server_hostname, error, protocol):
    v = variants[name]
    context = verifying(v.ca_file, server_hostname)
    if error is None:
        with mail_tls(protocol, v.host, port_of(v, protocol), context) as (_, sock):
            assert sock.getpeercert(binary_form=True) == pem_der(v.cert_file)
    else:
        with pytest.raises(ssl.SSLCertVerificationError, match=error), \
                mail_tls(protocol, v.host, port_of(v, protocol), context):
            pass


def test_unknown_ca_is_served_without_its_issuer_and_names_it(variants):
    v = variants["unknown_ca"]
    with mail_tls("smtps", v.host, v.smtp_port, unverified()) as (_, sock):
        chain = sock.getpeercert(binary_form=True)
    assert chain == pem_der(v.cert_file)
    issuer = subprocess.run(["openssl", "x509", "-noout", "-issuer", "-in", v.cert_file],
                            capture_output=True, text=True, check=True).stdout
    assert f"CN = {certvariants.UNKNOWN_CA_CN}" in issuer


@pytest.mark.parametrize("name", MAIL_VARIANTS)
def test_every_variant_is_a_full_mail_service_behind_any_certificate(stack, variants, name):
    """Logins work on all four ports of every address (the plugin's runs go
    through them), whatever the certificate."""
    v = variants[name]
    user, password = stack.address("probe"), stack.password("probe")
    for protocol in PROTOCOLS:
        with mail_tls(protocol, v.host, port_of(v, protocol), unverified()) as (client, _):
            if protocol in ("smtps", "submission"):
                client.ehlo()
                assert client.login(user, password)[0] == 235
            else:
                assert client.login(user, password)[0] == "OK"


def wait_for_subject(stack, subject, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.folder_uids("probe", "INBOX", f'SUBJECT "{subject}"'):
            return True
        time.sleep(0.2)
    return False


def test_mail_submitted_on_a_variant_address_is_delivered(stack, variants):
    v = variants["expires_in_5_days"]
    subject = f"cert-stack variant {secrets.token_hex(6)}"
    msg = email.message.EmailMessage()
    msg["From"] = msg["To"] = stack.address("probe")
    msg["Subject"] = subject
    msg.set_content("through 127.0.0.x\n")
    with mail_tls("smtps", v.host, v.smtp_port, verifying(stack.ca)) as (client, _):
        client.login(stack.address("probe"), stack.password("probe"))
        client.send_message(msg)
    assert wait_for_subject(stack, subject)


# -- the TLS 1.0 fronts ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls10(variants):
    return variants[certvariants.TLS10_VARIANT]


def test_the_tls10_variant_describes_the_fronts(tls10, stack):
    assert (tls10.host, tls10.smtp_port, tls10.imap_port, tls10.tls_version, tls10.ca_file) \
        == (HOST, SUBMISSIONS_TLS10_PORT, IMAPS_TLS10_PORT, "TLSv1", stack.ca)
    assert (tls10.smtp_starttls_port, tls10.imap_starttls_port) == (None, None)


@pytest.mark.parametrize("protocol", ["smtps", "imaps"])
def test_the_tls10_fronts_negotiate_tls_1_0_with_a_client_that_allows_it(stack, tls10, protocol):
    context = tls10_client(cafile=stack.ca)       # verified: stack CA, by address
    with mail_tls(protocol, tls10.host, port_of(tls10, protocol), context) as (client, sock):
        assert sock.version() == "TLSv1"
        assert sock.getpeercert(binary_form=True) == pem_der(tls10.cert_file)
        if protocol == "smtps":
            code, banner = client.ehlo()
            assert code == 250 and banner.startswith(MX_HOSTNAME.encode())
        else:
            assert client.login(stack.address("probe"), stack.password("probe"))[0] == "OK"


@pytest.mark.parametrize("protocol", ["smtps", "imaps"])
@pytest.mark.parametrize("minimum, maximum", [
    ("TLSv1_1", None), ("TLSv1_2", None), ("TLSv1_3", None), ("TLSv1_1", "TLSv1_1"), ("TLSv1_2", "TLSv1_2")])
def test_the_tls10_fronts_negotiate_nothing_newer(tls10, protocol, minimum, maximum):
    with pytest.raises(ssl.SSLError, match="(?i)protocol|version"), \
            mail_tls(protocol, tls10.host, port_of(tls10, protocol), tls10_client(minimum, maximum)):
        pass


@pytest.mark.parametrize("protocol", ["smtps", "imaps"])
def test_a_default_client_is_refused_by_the_tls10_fronts(stack, tls10, protocol):
    # OpenSSL 3 refuses TLS 1.0 in one of two places, by build and timing: the
    # version alert, or the legacy signature algorithm TLS 1.0 must use
    with pytest.raises(ssl.SSLError, match="(?i)protocol version|legacy sigalg"), \
            mail_tls(protocol, tls10.host, port_of(tls10, protocol), verifying(stack.ca)):
        pass


def test_mail_sent_through_the_tls10_smtp_front_reaches_the_mx(stack, tls10):
    subject = f"cert-stack tls10 {secrets.token_hex(6)}"
    msg = email.message.EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = f"sender@{DOMAIN}", stack.address("probe"), subject
    msg.set_content("over TLSv1, no AUTH at the MX\n")
    with mail_tls("smtps", tls10.host, tls10.smtp_port, tls10_client(cafile=stack.ca)) as (client, _):
        client.send_message(msg)
    assert wait_for_subject(stack, subject)


# -- HOST's ports are as they were ------------------------------------------------------------
@pytest.mark.parametrize("protocol, port, cert", [
    ("submission", SUBMISSION_PORT, "tls_cert"), ("smtps", SUBMISSIONS_PORT, "tls_cert"),
    ("imap", IMAP_PORT, "tls_cert"), ("imaps", IMAPS_PORT, "tls_cert"),
    ("smtps", SUBMISSIONS_EXPIRED_PORT, "expired_cert"), ("imaps", IMAPS_EXPIRED_PORT, "expired_cert")])
def test_host_ports_still_present_the_stack_certificates(stack, protocol, port, cert):
    with mail_tls(protocol, HOST, port, unverified()) as (client, sock):
        assert sock.getpeercert(binary_form=True) == pem_der(getattr(stack, cert))
        if protocol in ("smtps", "submission"):
            client.ehlo()
            assert client.login(stack.address("probe"), stack.password("probe"))[0] == 235
        else:
            assert client.login(stack.address("probe"), stack.password("probe"))[0] == "OK"
    if cert == "tls_cert":
        with mail_tls(protocol, HOST, port, verifying(stack.ca, TLS_HOSTNAME)) as (_, sock):
            assert sock.version() in ("TLSv1.2", "TLSv1.3")


def test_every_port_of_the_stack_answers(stack):
    assert stack.healthy(), stack.status()
    for port in stack.info()["ports"].values():
        socket.create_connection((HOST, port), timeout=TIMEOUT).close()


def test_the_new_ports_are_the_base_plus_their_offsets_and_fit():
    base = config.port_base()
    assert (SUBMISSIONS_TLS10_PORT, IMAPS_TLS10_PORT) == (base + 467, base + 995)
    assert config.port_base({"MAILSTACK_PORT_BASE": "64500"}) + 995 < 65536


def test_nothing_of_the_stack_listens_on_every_address(stack):
    """The variants share port numbers with HOST's listeners (and with other
    stacks' on 127.0.0.1): a wildcard bind would collide with them all."""
    ports = set(stack.info()["ports"].values())
    listening = []
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.split(":")
            if state == "0A" and int(port, 16) in ports:
                listening.append((socket.inet_ntoa(bytes.fromhex(address)[::-1]), int(port, 16)))
    assert listening and all(address.startswith("127.") for address, _ in listening), listening
    expected = {(v.host, p) for v in stack.cert_variants().values() if v.name in MAIL_VARIANTS
                for p in (SUBMISSION_PORT, SUBMISSIONS_PORT, IMAP_PORT, IMAPS_PORT)}
    assert expected <= set(listening)


# -- the factory, without daemons ---------------------------------------------------------------
@pytest.fixture(scope="module")
def factory_made(tmp_path_factory):
    """A CA of its own and every variant made once (keys take seconds)."""
    where = tmp_path_factory.mktemp("certfactory")
    ca, ca_key = str(where / "ca.pem"), str(where / "ca.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                    "-subj", "/CN=Factory Test CA", "-keyout", ca_key, "-out", ca,
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign"], check=True, capture_output=True)
    t0 = time.time()
    first = certvariants.CertFactory(str(where), ca, ca_key, str(where / "openssl.log"), print).ensure(now=t0)
    return where, t0, first


@pytest.fixture
def factory(factory_made, tmp_path):
    """A copy of the made variants, each test its own."""
    made, t0, first = factory_made
    where = tmp_path / "tls"
    shutil.copytree(made, where)
    said = []
    copy = certvariants.CertFactory(str(where), str(where / "ca.pem"), str(where / "ca.key"),
                                    str(where / "openssl.log"), said.append)
    copy.said, copy.t0, copy.first = said, t0, {p.replace(str(made), str(where)) for p in first}
    return copy


def test_the_factory_makes_every_variant_with_exact_dates(factory):
    assert factory.first == {factory.cert_file(n) for n in CERT_VARIANTS} | {factory.unknown_ca}
    for spec in certvariants.SPECS:
        v = factory.variant(spec.name)
        assert v.not_after.timestamp() == int(factory.t0 + spec.not_after)
        assert v.not_before.timestamp() == int(factory.t0 + spec.not_before)
        assert openssl_enddate(v.cert_file) == v.not_after_text


def test_the_factory_remakes_nothing_that_still_means_what_it_says(factory):
    assert factory.ensure(now=factory.t0 + 1800) == set()
    assert factory.said == []


def test_the_factory_remakes_dated_variants_after_an_hour_and_keeps_their_keys(factory):
    keys = {n: open(factory.key_file(n)).read() for n in CERT_VARIANTS}
    later = factory.t0 + 2 * 3600
    made = factory.ensure(now=later)
    hourly = {"expires_in_14_days", "expires_in_5_days", "expires_in_2_days", "expired_yesterday",
              "not_yet_valid"}
    assert made == {factory.cert_file(n) for n in hourly}
    assert factory.variant("expires_in_5_days").not_after.timestamp() == int(later + 5 * 86400)
    assert {n: open(factory.key_file(n)).read() for n in CERT_VARIANTS} == keys
    # the long-lived ones wait for 30 days
    assert factory.ensure(now=factory.t0 + 29 * 86400) == {factory.cert_file(n) for n in hourly}
    assert factory.cert_file("valid") in factory.ensure(now=factory.t0 + 31 * 86400)


def test_the_factory_remakes_a_changed_or_missing_file(factory):
    os.unlink(factory.cert_file("self_signed"))
    with open(factory.cert_file("valid"), "a") as fh:
        fh.write("\n")
    made = factory.ensure(now=factory.t0 + 60)
    assert made == {factory.cert_file("self_signed"), factory.cert_file("valid")}
    assert "making certificate variant self_signed (missing)" in factory.said
    assert "making certificate variant valid (the file changed)" in factory.said


def test_a_new_stack_ca_means_new_certificates_from_it(factory):
    os.replace(factory.unknown_ca, factory.ca)      # any other CA will do
    os.replace(factory.unknown_ca_key, factory.ca_key)
    made = factory.ensure(now=factory.t0 + 60)
    from_stack = {s.name for s in certvariants.SPECS if s.issuer == certvariants.STACK_CA}
    assert {factory.cert_file(n) for n in from_stack} | {factory.unknown_ca} <= made
    assert factory.cert_file("self_signed") not in made
