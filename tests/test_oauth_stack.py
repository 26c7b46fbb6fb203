"""OAuth2 sign-in on the real stack, with the standard library's clients only
(smtplib's auth(), imaplib's authenticate(), http.client): Postfix and
Dovecot take XOAUTH2 and OAUTHBEARER tokens checked at the stack's IdP, the
IdP's token endpoint grants and refuses as RFC 6749 says, and its knobs
(revocation, short lifetimes, a slow or failing endpoint, counters) work.

Failed logins cost Dovecot's 2 s failure delay each, so the tests of a
failure send all their attempts at once."""

import base64
import http.client
import imaplib
import json
import os
import smtplib
import socket
import ssl
import stat
import time
import urllib.parse
from dataclasses import dataclass, field

import pytest
from conftest import all_at_once, sasl_response
from mailstack import (
    APP_CLIENT,
    IDP_PORT,
    IMAPS_PORT,
    OTHER_APP_CLIENT,
    PORT_BASE,
    PUBLIC_CLIENT,
    REFRESH_CLIENT,
    SUBMISSION_PORT,
    SUBMISSIONS_EXPIRED_PORT,
    SUBMISSIONS_PORT,
    TLS_HOSTNAME,
)

PROBE, OTHER, NOAUTH = "probe@example.test", "other@example.test", "noauth@example.test"
MECHANISMS = ("XOAUTH2", "OAUTHBEARER")
# what the servers send when a token is refused (MAILSTACK.md), decoded
CHALLENGE = {"XOAUTH2": {"status": "401", "schemes": "bearer", "scope": "mail"},
             "OAUTHBEARER": {"status": "invalid_token"}}
# the client's answer to that challenge: an empty line, or %x01 (RFC 7628 3.2.3)
CHALLENGE_ANSWER = {"XOAUTH2": "", "OAUTHBEARER": "\x01"}
SMTP_REFUSED = (535, "5.7.8 Error: authentication failed: (reason unavailable)")
IMAP_REFUSED = "[AUTHENTICATIONFAILED] Authentication failed."
SMTP_OFFER = "PLAIN LOGIN XOAUTH2 OAUTHBEARER"
FORM = "application/x-www-form-urlencoded"
pytestmark = pytest.mark.usefixtures("idp")     # the IdP as configured, before and after each test


@dataclass
class Login:
    ok: bool
    reply: object                   # SMTP (code, text); IMAP the tagged reply's text
    challenges: list = field(default_factory=list)      # decoded JSON the server sent


def context(stack):
    return ssl.create_default_context(cafile=stack.ca)


def smtp_client(stack, port):
    if port == SUBMISSION_PORT:
        client = smtplib.SMTP(TLS_HOSTNAME, port, timeout=30)
        client.starttls(context=context(stack))
    elif port == SUBMISSIONS_EXPIRED_PORT:
        insecure = ssl.create_default_context(cafile=stack.ca)
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE    # its certificate expired
        client = smtplib.SMTP_SSL(TLS_HOSTNAME, port, context=insecure, timeout=30)
    else:
        client = smtplib.SMTP_SSL(TLS_HOSTNAME, port, context=context(stack), timeout=30)
    client.ehlo()
    return client


def smtp_login(stack, mechanism, user, token, port=SUBMISSION_PORT, initial_response=True):
    """AUTH <mechanism>, the response on the AUTH line or (initial_response
    False) after the server's empty 334."""
    challenges, sent = [], []

    def respond(challenge=None):
        if not sent:
            sent.append(True)
            return sasl_response(mechanism, user, token, port)
        challenges.append(json.loads(challenge))
        return CHALLENGE_ANSWER[mechanism]

    client = smtp_client(stack, port)
    try:
        code, text = client.auth(mechanism, respond, initial_response_ok=initial_response)
    except smtplib.SMTPAuthenticationError as exc:
        code, text = exc.smtp_code, exc.smtp_error
    finally:
        client.close()
    return Login(code == 235, (code, text.decode()), challenges)


def imap_error(exc):
    """The tagged reply's text (imaplib's LOGIN raises it as bytes, AUTHENTICATE as str)."""
    text = exc.args[0]
    return text.decode() if isinstance(text, bytes) else text


def imap_login(stack, mechanism, user, token):
    """AUTHENTICATE (imaplib sends no SASL-IR: the first "+" is empty)."""
    challenges, sent = [], []

    def respond(challenge):
        if not sent:
            sent.append(True)
            return sasl_response(mechanism, user, token, IMAPS_PORT).encode()
        challenges.append(json.loads(challenge))
        return CHALLENGE_ANSWER[mechanism].encode()

    client = imaplib.IMAP4_SSL(TLS_HOSTNAME, IMAPS_PORT, ssl_context=context(stack), timeout=30)
    try:
        typ, data = client.authenticate(mechanism, respond)
        ok = typ == "OK" and client.select("INBOX", readonly=True)[0] == "OK"   # a usable session
        reply = data[0].decode()
    except imaplib.IMAP4.error as exc:
        ok, reply = False, imap_error(exc)
    finally:
        client.shutdown()
    return Login(ok, reply, challenges)


def token_request(stack, fields, basic=None, host=TLS_HOSTNAME, conn=None):
    """POST /token: (status, headers, JSON)."""
    own = conn is None
    conn = conn or http.client.HTTPSConnection(host, IDP_PORT, context=context(stack), timeout=30)
    headers = {"Content-Type": FORM}
    if basic:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(basic).encode()).decode()
    try:
        conn.request("POST", "/token", body=urllib.parse.urlencode(fields), headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        if own:
            conn.close()


def client_credentials(stack, client_id=APP_CLIENT, **extra):
    fields = {"grant_type": "client_credentials", "client_id": client_id,
              "client_secret": stack.oauth.client_secret(client_id), **extra}
    return token_request(stack, fields)


def refresh(stack, refresh_token, client_id=REFRESH_CLIENT, with_secret=True):
    fields = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
    if with_secret:
        fields["client_secret"] = stack.oauth.client_secret(client_id)
    return token_request(stack, fields)


# -- what the stack tells ----------------------------------------------------------------
def test_stack_json_and_env_name_the_idp_its_clients_and_their_secret_files(stack):
    oauth = stack.info()["oauth"]
    assert IDP_PORT == PORT_BASE + 443 == stack.info()["ports"]["idp"]
    assert oauth["token_url"] == f"https://localhost:{IDP_PORT}/token"
    assert oauth["introspection_url"] == f"https://127.0.0.1:{IDP_PORT}/introspect"
    assert oauth["ca"] == stack.ca and oauth["clients"][APP_CLIENT]["mailbox"] == PROBE
    assert oauth["clients"][PUBLIC_CLIENT]["secret_file"] is None
    for client_id in (APP_CLIENT, OTHER_APP_CLIENT, REFRESH_CLIENT, "dovecot"):
        mode = os.stat(oauth["clients"][client_id]["secret_file"]).st_mode
        assert stat.S_IMODE(mode) == 0o600 and stack.oauth.client_secret(client_id)
    assert stat.S_IMODE(os.stat(oauth["admin"]["secret_file"]).st_mode) == 0o600
    env = stack.env()
    assert env["MAILSTACK_OAUTH_TOKEN_URL"] == oauth["token_url"]
    assert env["MAILSTACK_IDP_PORT"] == str(IDP_PORT) and env["MAILSTACK_OAUTH_CA"] == stack.ca
    assert env["MAILSTACK_OAUTH_PROBE_APP_SECRET_FILE"] == oauth["clients"][APP_CLIENT]["secret_file"]
    assert "MAILSTACK_OAUTH_MAIL_PUBLIC_SECRET_FILE" not in env


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_the_idp_certificate_is_good_by_name_and_by_address(stack, host):
    conn = http.client.HTTPSConnection(host, IDP_PORT, context=context(stack), timeout=30)
    conn.request("GET", "/.well-known/oauth-authorization-server")
    response = conn.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["token_endpoint"] == stack.oauth.token_url


# -- what the servers offer ---------------------------------------------------------------
def test_submission_offers_the_token_mechanisms_after_starttls_only(stack):
    client = smtplib.SMTP(TLS_HOSTNAME, SUBMISSION_PORT, timeout=30)
    try:
        client.ehlo()
        assert "auth" not in client.esmtp_features
        client.starttls(context=context(stack))
        client.ehlo()
        assert client.esmtp_features["auth"].strip() == SMTP_OFFER
    finally:
        client.close()


@pytest.mark.parametrize("port", [SUBMISSIONS_PORT, SUBMISSIONS_EXPIRED_PORT])
def test_the_implicit_tls_ports_offer_the_token_mechanisms(stack, port):
    client = smtp_client(stack, port)
    try:
        assert client.esmtp_features["auth"].strip() == SMTP_OFFER
    finally:
        client.close()


def test_imap_offers_the_token_mechanisms_and_sasl_ir(stack):
    client = imaplib.IMAP4_SSL(TLS_HOSTNAME, IMAPS_PORT, ssl_context=context(stack), timeout=30)
    try:
        assert {"AUTH=XOAUTH2", "AUTH=OAUTHBEARER", "SASL-IR"} <= set(client.capabilities)
    finally:
        client.shutdown()


# -- tokens at the mail servers -----------------------------------------------------------
@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("where", ["imaps", "submission", "submissions"])
def test_a_good_token_logs_in(stack, idp, mechanism, where):
    token = idp.issue_token("probe")
    if where == "imaps":
        login = imap_login(stack, mechanism, PROBE, token)
    else:
        port = SUBMISSION_PORT if where == "submission" else SUBMISSIONS_PORT
        login = smtp_login(stack, mechanism, PROBE, token, port)
        assert login.reply == (235, "2.7.0 Authentication successful")
    assert login.ok and login.challenges == [], login
    assert idp.introspection_requests() == 1        # one introspection per login, no cache


def refused_everywhere(stack, user, token):
    """The same token refused over IMAP and SMTP, both mechanisms, with the
    documented challenge and final reply."""
    logins = all_at_once(*[lambda m=m: imap_login(stack, m, user, token) for m in MECHANISMS],
                         *[lambda m=m: smtp_login(stack, m, user, token) for m in MECHANISMS])
    for mechanism, login in zip(MECHANISMS * 2, logins):
        assert not login.ok and login.challenges == [CHALLENGE[mechanism]], (mechanism, login)
    assert [login.reply for login in logins] == [IMAP_REFUSED] * 2 + [SMTP_REFUSED] * 2


def test_a_revoked_token_is_refused(stack, idp):
    token = idp.issue_token("probe")
    assert smtp_login(stack, "XOAUTH2", PROBE, token).ok
    assert idp.revoke_token(token) is True
    refused_everywhere(stack, PROBE, token)
    assert idp.token_state(token)["state"] == "revoked"


def test_an_expired_token_is_refused(stack, idp):
    token = idp.issue_token("probe", lifetime=0)
    refused_everywhere(stack, PROBE, token)
    assert idp.token_state(token)["state"] == "expired"


def test_another_users_token_is_refused(stack, idp):
    refused_everywhere(stack, PROBE, idp.issue_token("other"))


def test_a_password_is_no_token(stack, idp):
    """The password passdb is not asked for the token mechanisms: the
    password goes to the IdP as a token, which does not know it."""
    refused_everywhere(stack, PROBE, stack.password("probe"))
    assert idp.introspection_requests() == 4


def test_passwords_still_log_in_and_a_wrong_one_never_reaches_the_idp(stack, idp):
    client = smtp_client(stack, SUBMISSION_PORT)
    try:
        assert client.login(PROBE, stack.password("probe"))[0] == 235
    finally:
        client.close()
    with stack.imap("probe") as imap:
        assert imap.select("INBOX", readonly=True)[0] == "OK"

    def wrong_smtp():
        client = smtp_client(stack, SUBMISSION_PORT)
        try:
            return client.login(PROBE, "wrong")
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
        finally:
            client.close()

    def wrong_imap():
        client = imaplib.IMAP4_SSL(TLS_HOSTNAME, IMAPS_PORT, ssl_context=context(stack), timeout=30)
        try:
            return client.login(PROBE, "wrong")
        except imaplib.IMAP4.error as exc:
            return imap_error(exc)
        finally:
            client.shutdown()

    assert all_at_once(wrong_smtp, wrong_imap) == [SMTP_REFUSED, IMAP_REFUSED]
    assert idp.introspection_requests() == 0


def test_noauth_is_refused_at_submission_with_a_good_token_too(stack, idp):
    token = idp.issue_token("noauth")
    smtp, imap = all_at_once(lambda: smtp_login(stack, "XOAUTH2", NOAUTH, token),
                             lambda: imap_login(stack, "OAUTHBEARER", NOAUTH, token))
    assert smtp.reply == SMTP_REFUSED and smtp.challenges == [CHALLENGE["XOAUTH2"]]
    assert imap.ok, imap


def test_an_idp_that_fails_introspection_is_a_temporary_failure(stack, idp):
    idp.set_introspection_endpoint(status=503, body={"error": "temporarily_unavailable"})
    token = idp.issue_token("probe")
    imap, smtp = all_at_once(lambda: imap_login(stack, "XOAUTH2", PROBE, token),
                             lambda: smtp_login(stack, "XOAUTH2", PROBE, token))
    assert imap.reply.startswith("[UNAVAILABLE] Temporary authentication failure. [")
    # Postfix says what it says for a bad token, but without the challenge
    assert smtp.reply == SMTP_REFUSED and imap.challenges == smtp.challenges == []


def test_a_token_too_long_for_the_auth_line_logs_in_after_the_334(stack, idp):
    token = idp.issue_token("probe", length=3000)
    late = smtp_login(stack, "XOAUTH2", PROBE, token, initial_response=False)
    assert late.ok, late
    assert imap_login(stack, "OAUTHBEARER", PROBE, token).ok


# -- the token endpoint -------------------------------------------------------------------
def test_client_credentials_gives_a_token_for_the_clients_mailbox(stack, idp):
    status, headers, answer = client_credentials(stack)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"] == "application/json"
    assert set(answer) == {"access_token", "token_type", "expires_in", "scope"}
    assert (answer["token_type"], answer["expires_in"], answer["scope"]) == ("Bearer", 3600, "imap smtp")
    basic = (OTHER_APP_CLIENT, idp.client_secret(OTHER_APP_CLIENT))
    status, _, other = token_request(stack, {"grant_type": "client_credentials", "scope": "smtp"}, basic)
    assert status == 200 and other["scope"] == "smtp"
    imap, smtp = all_at_once(lambda: imap_login(stack, "XOAUTH2", PROBE, answer["access_token"]),
                             lambda: smtp_login(stack, "OAUTHBEARER", OTHER, other["access_token"]))
    assert imap.ok and smtp.ok


@pytest.mark.parametrize("fields, basic, status, error", [
    ({"client_id": APP_CLIENT, "client_secret": "wrong"}, None, 401,
     ("invalid_client", f"wrong client secret for {APP_CLIENT!r}")),
    ({}, (APP_CLIENT, "wrong"), 401, ("invalid_client", f"wrong client secret for {APP_CLIENT!r}")),
    ({"client_id": "nobody", "client_secret": "x"}, None, 401, ("invalid_client", "unknown client 'nobody'")),
    ({}, None, 401,
     ("invalid_client", "no client authentication (client_id and client_secret, or HTTP Basic)")),
    ({"client_id": REFRESH_CLIENT, "secret": True}, None, 400,
     ("unauthorized_client", f"client {REFRESH_CLIENT!r} may not use grant_type 'client_credentials'")),
    ({"client_id": APP_CLIENT, "secret": True, "grant_type": "password"}, None, 400,
     ("unsupported_grant_type", "grant_type 'password' is not supported "
                                "(supported: client_credentials, refresh_token)")),
    ({"client_id": APP_CLIENT, "secret": True, "scope": "imap admin"}, None, 400,
     ("invalid_scope", f"scope 'admin' is not granted to client {APP_CLIENT!r} (granted: 'imap smtp')")),
    ({"client_id": APP_CLIENT, "secret": True, "grant_type": ""}, None, 400,
     ("invalid_request", "missing parameter grant_type")),
])
def test_token_endpoint_errors(stack, fields, basic, status, error):
    fields = {"grant_type": "client_credentials", **fields}
    if fields.pop("secret", False):
        fields["client_secret"] = stack.oauth.client_secret(fields["client_id"])
    got_status, headers, answer = token_request(stack, fields, basic)
    assert (got_status, answer) == (status, {"error": error[0], "error_description": error[1]})
    assert headers["Cache-Control"] == "no-store"
    if status == 401:
        assert headers["WWW-Authenticate"] == 'Basic realm="mailstack-idp"'


def test_every_refresh_rotates_and_a_reused_or_revoked_refresh_token_is_invalid_grant(stack, idp):
    first = idp.issue_refresh_token("probe")
    status, headers, answer = refresh(stack, first)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert set(answer) == {"access_token", "token_type", "expires_in", "scope", "refresh_token"}
    assert answer["refresh_token"] != first and answer["scope"] == "imap smtp offline_access"
    assert smtp_login(stack, "OAUTHBEARER", PROBE, answer["access_token"]).ok
    assert refresh(stack, first)[::2] == (400, {
        "error": "invalid_grant", "error_description": "the refresh token was already used (it is rotated "
                                                       "at every refresh: use the one from the last answer)"})
    status, _, second = refresh(stack, answer["refresh_token"])
    assert status == 200 and idp.token_state(answer["refresh_token"])["state"] == "used"
    assert idp.revoke_refresh_token(second["refresh_token"]) is True
    assert refresh(stack, second["refresh_token"])[::2] == (400, {
        "error": "invalid_grant", "error_description": "the refresh token was revoked"})
    assert refresh(stack, "never-issued")[::2] == (400, {
        "error": "invalid_grant", "error_description": "unknown refresh token"})


def test_a_public_client_refreshes_with_its_client_id_alone(stack, idp):
    token = idp.issue_refresh_token("other", client_id=PUBLIC_CLIENT)
    status, _, answer = refresh(stack, token, PUBLIC_CLIENT, with_secret=False)
    assert status == 200 and idp.token_state(answer["access_token"])["user"] == OTHER
    status, _, answer = token_request(stack, {"grant_type": "refresh_token", "client_id": PUBLIC_CLIENT,
                                              "client_secret": "x", "refresh_token": answer["refresh_token"]})
    assert (status, answer["error"]) == (401, "invalid_client")


def test_short_lived_tokens_go_stale(stack, idp):
    assert idp.set_expires_in(APP_CLIENT, 1)["expires_in"] == 1
    status, _, answer = client_credentials(stack)
    assert status == 200 and answer["expires_in"] == 1
    assert smtp_login(stack, "XOAUTH2", PROBE, answer["access_token"]).ok
    time.sleep(1.1)
    stale = smtp_login(stack, "XOAUTH2", PROBE, answer["access_token"])
    assert stale.reply == SMTP_REFUSED and stale.challenges == [CHALLENGE["XOAUTH2"]]
    idp.set_expires_in(APP_CLIENT)
    assert client_credentials(stack)[2]["expires_in"] == 3600


# -- counters and the endpoint knobs --------------------------------------------------------
def test_counters_count_requests_per_grant_type_on_one_kept_alive_connection(stack, idp):
    conn = http.client.HTTPSConnection(TLS_HOSTNAME, IDP_PORT, context=context(stack), timeout=30)
    secret, sockets = idp.client_secret(APP_CLIENT), set()
    for client_secret in (secret, secret, "wrong"):
        token_request(stack, {"grant_type": "client_credentials", "client_id": APP_CLIENT,
                              "client_secret": client_secret}, conn=conn)
        sockets.add(conn.sock)
    token_request(stack, {"grant_type": "refresh_token", "refresh_token": idp.issue_refresh_token("probe")},
                  (REFRESH_CLIENT, idp.client_secret(REFRESH_CLIENT)), conn=conn)
    sockets.add(conn.sock)
    conn.close()
    assert len(sockets) == 1 and None not in sockets        # one connection carried all four
    assert idp.token_requests() == {"client_credentials": 3, "refresh_token": 1, "total": 4}
    log = idp.request_log()
    assert [(e["grant_type"], e["client_auth"], e["status"]) for e in log] == [
        ("client_credentials", "body", 200), ("client_credentials", "body", 200),
        ("client_credentials", "body", 401), ("refresh_token", "basic", 200)]
    assert secret not in json.dumps(log)
    assert idp.introspection_requests() == 0
    idp.reset_counters()
    assert idp.token_requests() == {"total": 0} and idp.request_log() == []


def test_a_slow_token_endpoint_is_slow_and_back_to_normal_after(stack, idp):
    assert idp.set_token_endpoint(delay=1.5)["delay"] == 1.5
    started = time.monotonic()
    assert client_credentials(stack)[0] == 200
    assert time.monotonic() - started >= 1.5
    conn = http.client.HTTPSConnection(TLS_HOSTNAME, IDP_PORT, context=context(stack), timeout=0.5)
    with pytest.raises(socket.timeout):
        client_fields = {"grant_type": "client_credentials", "client_id": APP_CLIENT,
                         "client_secret": idp.client_secret(APP_CLIENT)}
        token_request(stack, client_fields, conn=conn)
    conn.close()
    idp.set_token_endpoint()
    started = time.monotonic()
    assert client_credentials(stack)[0] == 200 and time.monotonic() - started < 1


def test_a_failing_token_endpoint_answers_what_it_is_told(stack, idp):
    idp.set_token_endpoint(status=503, body={"error": "temporarily_unavailable"}, times=1)
    assert client_credentials(stack)[::2] == (503, {"error": "temporarily_unavailable"})
    assert client_credentials(stack)[0] == 200                  # `times` ran out
    assert idp.token_requests() == {"client_credentials": 2, "total": 2}
