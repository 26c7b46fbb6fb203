"""The mail stack's OAuth2 IdP without the stack: authserver.py's rules on
a test clock, idp.py's HTTPS server on a port of its own (keep-alive,
Content-Length, the handshake off the accept loop, the admin interface),
and the daemon copy standing alone."""

import ast
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
from mailstack import authserver, idp
from mailstack.procs import read_pidfile

SECRETS = {"app": "app-secret", "delegated": "delegated-secret", "dovecot": "dovecot-secret"}
CLIENTS = {
    "app": {"secret": SECRETS["app"], "grant_types": ["client_credentials"], "mailbox": "probe@example.test",
            "scopes": ["imap", "smtp"], "expires_in": 3600},
    "delegated": {"secret": SECRETS["delegated"], "grant_types": ["refresh_token"],
                  "scopes": ["imap", "smtp", "offline_access"], "expires_in": 600},
    "public": {"secret": None, "grant_types": ["refresh_token"], "scopes": ["imap", "smtp"]},
    "dovecot": {"secret": SECRETS["dovecot"], "grant_types": [], "introspect": True},
}
DOVECOT = {"client_id": ["dovecot"], "client_secret": [SECRETS["dovecot"]]}


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def server(clock):
    return authserver.AuthorizationServer(CLIENTS, issuer="https://idp.test", clock=clock)


def form(**fields):
    return {name: [value] for name, value in fields.items()}


def basic(client_id, secret):
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def error_of(call, *args):
    with pytest.raises(authserver.OAuthError) as caught:
        call(*args)
    return caught.value.status, caught.value.error, caught.value.description


def introspect(server, token):
    return server.introspect(dict(DOVECOT, token=[token]))


# -- client credentials and client authentication ---------------------------------
def test_client_credentials_gives_a_token_for_the_clients_mailbox(server):
    answer = server.token(form(grant_type="client_credentials", client_id="app", client_secret="app-secret"))
    assert set(answer) == {"access_token", "token_type", "expires_in", "scope"}
    assert (answer["token_type"], answer["expires_in"], answer["scope"]) == ("Bearer", 3600, "imap smtp")
    seen = introspect(server, answer["access_token"])
    assert seen["active"] is True and seen["email"] == "probe@example.test"
    assert seen["client_id"] == "app" and seen["exp"] == 1_000_000 + 3600


def test_http_basic_is_as_good_as_the_body(server):
    answer = server.token(form(grant_type="client_credentials"), basic("app", "app-secret"))
    assert introspect(server, answer["access_token"])["active"] is True


@pytest.mark.parametrize("fields, authorization, description", [
    ({"client_id": "app", "client_secret": "wrong"}, None, "wrong client secret for 'app'"),
    ({"client_id": "nobody", "client_secret": "x"}, None, "unknown client 'nobody'"),
    ({"client_id": "app"}, None, "client 'app' sent no client secret"),
    ({}, None, "no client authentication (client_id and client_secret, or HTTP Basic)"),
    ({}, basic("app", "wrong"), "wrong client secret for 'app'"),
    ({}, "Basic !!!", "malformed HTTP Basic credentials"),
    ({}, "Bearer abc", "unsupported Authorization scheme 'Bearer' (use Basic)"),
    ({"client_id": "public", "client_secret": "x"}, None,
     "public client 'public' must not send a client secret"),
])
def test_a_client_that_cannot_authenticate_is_invalid_client_401(server, fields, authorization, description):
    request = form(grant_type="client_credentials", **fields)
    assert error_of(server.token, request, authorization) == (401, "invalid_client", description)


def test_basic_and_a_body_secret_together_are_an_invalid_request(server):
    request = form(grant_type="client_credentials", client_secret="app-secret")
    assert error_of(server.token, request, basic("app", "app-secret"))[:2] == (400, "invalid_request")


def test_basic_credentials_are_form_decoded_as_rfc_6749_says(clock):
    clients = {"a b": dict(CLIENTS["app"], secret="p:w%")}
    server = authserver.AuthorizationServer(clients, clock=clock)
    encoded = basic(urllib.parse.quote_plus("a b"), urllib.parse.quote_plus("p:w%"))
    assert server.token(form(grant_type="client_credentials"), encoded)["token_type"] == "Bearer"


@pytest.mark.parametrize("fields, expected", [
    ({"grant_type": "password"}, (400, "unsupported_grant_type",
                                  "grant_type 'password' is not supported "
                                  "(supported: client_credentials, refresh_token)")),
    ({}, (400, "invalid_request", "missing parameter grant_type")),
    ({"grant_type": "client_credentials", "scope": "imap admin"},
     (400, "invalid_scope", "scope 'admin' is not granted to client 'app' (granted: 'imap smtp')")),
])
def test_request_errors(server, fields, expected):
    request = form(client_id="app", client_secret="app-secret", **fields)
    assert error_of(server.token, request) == expected


def test_a_client_may_use_only_its_own_grant_types(server):
    request = form(grant_type="client_credentials", client_id="delegated", client_secret="delegated-secret")
    assert error_of(server.token, request) == (
        400, "unauthorized_client", "client 'delegated' may not use grant_type 'client_credentials'")


def test_a_narrower_scope_is_granted_as_asked(server):
    answer = server.token(form(grant_type="client_credentials", client_id="app", client_secret="app-secret",
                               scope="smtp"))
    assert answer["scope"] == "smtp" and introspect(server, answer["access_token"])["scope"] == "smtp"


def test_repeated_parameters_are_refused():
    with pytest.raises(authserver.OAuthError, match="'scope' given more than once"):
        authserver.parse_form(b"grant_type=client_credentials&scope=a&scope=b")
    assert authserver.parse_form(b"a=1&b=x+y%21&c=") == {"a": ["1"], "b": ["x y!"], "c": [""]}


# -- refresh tokens ---------------------------------------------------------------------
def refresh(server, token, client_id="delegated", secret="delegated-secret", **extra):
    return server.token(form(grant_type="refresh_token", refresh_token=token, client_id=client_id,
                             client_secret=secret, **extra) if secret else
                        form(grant_type="refresh_token", refresh_token=token, client_id=client_id, **extra))


def test_each_refresh_rotates_the_refresh_token_and_the_old_one_dies(server):
    first = server.issue_refresh_token("probe@example.test", "delegated")["refresh_token"]
    answer = refresh(server, first)
    assert set(answer) == {"access_token", "token_type", "expires_in", "scope", "refresh_token"}
    assert answer["refresh_token"] != first and answer["expires_in"] == 600
    assert introspect(server, answer["access_token"])["email"] == "probe@example.test"
    assert error_of(refresh, server, first) == (
        400, "invalid_grant", "the refresh token was already used (it is rotated at every refresh: "
                              "use the one from the last answer)")
    again = refresh(server, answer["refresh_token"])        # the new one works, once
    assert server.token_state(answer["refresh_token"])["state"] == "used"
    assert server.token_state(again["refresh_token"])["state"] == "active"
    # the access token from the earlier answer lives on until it expires
    assert introspect(server, answer["access_token"])["active"] is True


@pytest.mark.parametrize("spoil, description", [
    (lambda server, token, clock: server.revoke_refresh_token(token), "the refresh token was revoked"),
    (lambda server, token, clock: setattr(clock, "now", clock.now + 61), "the refresh token has expired"),
])
def test_a_revoked_or_expired_refresh_token_is_invalid_grant(server, clock, spoil, description):
    token = server.issue_refresh_token("other@example.test", "delegated", lifetime=60)["refresh_token"]
    spoil(server, token, clock)
    assert error_of(refresh, server, token) == (400, "invalid_grant", description)


def test_a_refresh_token_belongs_to_its_client(server):
    token = server.issue_refresh_token("probe@example.test", "public")["refresh_token"]
    assert error_of(refresh, server, token)[2] == "the refresh token was issued to another client"
    assert error_of(refresh, server, "nonsense")[2] == "unknown refresh token"
    assert refresh(server, token, client_id="public", secret=None)["token_type"] == "Bearer"


def test_a_refresh_may_narrow_the_scope_and_the_next_one_still_has_the_grant(server):
    token = server.issue_refresh_token("probe@example.test", "delegated", scope="imap smtp")["refresh_token"]
    narrow = refresh(server, token, scope="imap")
    assert narrow["scope"] == "imap"
    assert refresh(server, narrow["refresh_token"])["scope"] == "imap smtp"
    failed = server.issue_refresh_token("probe@example.test", "delegated", scope="imap")["refresh_token"]
    assert error_of(lambda: refresh(server, failed, scope="smtp"))[1] == "invalid_scope"
    assert server.token_state(failed)["state"] == "active"      # a refused request used nothing up


def test_refresh_tokens_are_not_access_tokens(server):
    token = server.issue_refresh_token("probe@example.test", "delegated")["refresh_token"]
    assert introspect(server, token) == {"active": False}
    with pytest.raises(ValueError, match="does not use refresh tokens"):
        server.issue_refresh_token("probe@example.test", "app")


# -- introspection -------------------------------------------------------------------
def test_unknown_expired_and_revoked_tokens_are_inactive(server, clock):
    assert introspect(server, "nonsense") == {"active": False}
    short = server.issue_token("probe@example.test", lifetime=5)["access_token"]
    revoked = server.issue_token("probe@example.test")["access_token"]
    assert introspect(server, short)["active"] and server.revoke_token(revoked)
    assert introspect(server, revoked) == {"active": False}
    clock.now += 5
    assert introspect(server, short) == {"active": False}
    assert server.token_state(short)["state"] == "expired"
    assert server.token_state(revoked)["state"] == "revoked"
    assert server.revoke_token("nonsense") is False


def test_a_token_minted_with_no_lifetime_left_has_expired_already(server):
    token = server.issue_token("probe@example.test", lifetime=0)["access_token"]
    assert introspect(server, token) == {"active": False}


def test_introspection_wants_an_introspecting_client(server):
    token = server.issue_token("probe@example.test")["access_token"]
    asked_by_app = form(token=token, client_id="app", client_secret="app-secret")
    assert error_of(server.introspect, asked_by_app) == (
        401, "invalid_client", "client 'app' may not introspect tokens")
    wrong = form(token=token, client_id="dovecot", client_secret="nope")
    assert error_of(server.introspect, wrong)[:2] == (401, "invalid_client")
    assert error_of(server.introspect, DOVECOT)[:2] == (400, "invalid_request")


def test_the_active_answer_is_flat_as_dovecot_needs(server):
    token = server.issue_token("probe@example.test", scope="imap")["access_token"]
    answer = introspect(server, token)
    assert all(isinstance(value, (str, int, bool)) for value in answer.values())
    assert answer["scope"] == "imap" and answer["iss"] == "https://idp.test"


def test_tokens_of_a_given_length(server):
    assert len(server.issue_token("probe@example.test", length=3000)["access_token"]) == 3000
    assert len(authserver.new_token()) == 43 and len(authserver.new_token(5)) == 5


def test_expired_tokens_are_forgotten_after_a_while(server, clock):
    old = server.issue_token("probe@example.test", lifetime=1)["access_token"]
    clock.now += authserver.FORGET_AFTER + 2
    server.issue_token("probe@example.test")
    assert old not in server.access and introspect(server, old) == {"active": False}


# -- knobs -------------------------------------------------------------------------------
def test_expires_in_per_client_and_reset(server):
    assert server.set_client("app", 2)["expires_in"] == 2
    answer = server.token(form(grant_type="client_credentials", client_id="app", client_secret="app-secret"))
    assert answer["expires_in"] == 2
    server.reset()
    assert server.public_client("app")["expires_in"] == 3600


def test_an_endpoint_knob_for_a_number_of_requests(server):
    server.set_endpoint("token", status=503, body={"error": "temporarily_unavailable"}, times=2)
    assert [server.take_behaviour("token")["status"] for _ in range(3)] == [503, 503, None]
    assert server.set_endpoint("introspect", delay=1.5)["body"] == ""
    assert server.take_behaviour("introspect")["delay"] == 1.5 == server.take_behaviour("introspect")["delay"]
    server.reset()
    assert server.take_behaviour("introspect") == authserver.normal_behaviour()
    for bad in ({"endpoint": "userinfo"}, {"endpoint": "token", "status": 99},
                {"endpoint": "token", "times": 0}):
        with pytest.raises(ValueError):
            server.set_endpoint(**bad)


def test_counters_and_the_request_log(server):
    server.count("token", "client_credentials")
    server.count("token", "refresh_token")
    server.count("token", "client_credentials")
    server.record({"endpoint": "token", "status": 200})
    state = server.state()
    assert state["counters"]["token"] == {"client_credentials": 2, "refresh_token": 1, "total": 3}
    assert state["requests"] == [{"endpoint": "token", "status": 200, "at": 1_000_000.0}]
    server.reset_counters()
    assert server.state()["counters"] == {"token": {}, "introspect": {}} and server.state()["requests"] == []


# -- HTTPS -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    where = tmp_path_factory.mktemp("idp-tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


@pytest.fixture
def https(certificate):
    cert, key = certificate
    state = authserver.AuthorizationServer(CLIENTS, issuer="https://localhost")
    server = idp.IdPServer(("127.0.0.1", 0), state, idp.server_context(cert, key), admin_secret="admin")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def connect(server, certificate, host="127.0.0.1"):
    context = ssl.create_default_context(cafile=certificate[0])
    return http.client.HTTPSConnection(host, server.server_address[1], context=context, timeout=10)


def post(conn, path, fields, headers=None, content_type=idp.FORM):
    body = urllib.parse.urlencode(fields) if isinstance(fields, dict) else fields
    conn.request("POST", path, body=body, headers={"Content-Type": content_type, **(headers or {})})
    response = conn.getresponse()
    return response, response.read()


def test_one_connection_carries_many_answers_each_with_content_length(https, certificate):
    conn = connect(https, certificate)
    answers = [post(conn, "/token", {"grant_type": "client_credentials", "client_id": "app",
                                     "client_secret": SECRETS["app"]}),
               post(conn, "/token", {"grant_type": "client_credentials", "client_id": "app",
                                     "client_secret": "wrong"}),
               post(conn, "/token", {"grant_type": "nonsense", "client_id": "app",
                                     "client_secret": SECRETS["app"]}),
               post(conn, "/nowhere", {}),
               post(conn, "/token", "grant_type=client_credentials", content_type="application/json")]
    conn.request("GET", "/token")
    response = conn.getresponse()
    answers.append((response, response.read()))
    assert [r.status for r, _ in answers] == [200, 401, 400, 404, 400, 405]
    for response, body in answers:
        assert response.version == 11 and int(response.getheader("Content-Length")) == len(body)
        assert response.getheader("Connection") is None      # kept open
    first, unauthorized = answers[0][0], answers[1][0]
    assert first.getheader("Cache-Control") == "no-store"
    assert first.getheader("Content-Type") == "application/json"
    assert unauthorized.getheader("WWW-Authenticate") == 'Basic realm="mailstack-idp"'
    assert json.loads(answers[1][1]) == {"error": "invalid_client",
                                         "error_description": "wrong client secret for 'app'"}
    assert json.loads(answers[4][1])["error_description"] == f"Content-Type must be {idp.FORM}"
    # the one with the wrong Content-Type was not read as a form: no grant_type
    assert https.idp.state()["counters"]["token"] == {"client_credentials": 2, "nonsense": 1, "(none)": 1,
                                                      "total": 4}


def test_the_certificate_is_good_by_name_and_by_address(https, certificate):
    for host in ("localhost", "127.0.0.1"):
        conn = connect(https, certificate, host)
        conn.request("GET", "/.well-known/oauth-authorization-server")
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["token_endpoint"] == "https://localhost/token"


def test_dovecots_introspection_request_as_it_is_on_the_wire(https, certificate):
    token = https.idp.issue_token("probe@example.test")["access_token"]
    body = f"token={token}&client_id=dovecot&client_secret={SECRETS['dovecot']}".encode()
    request = (b"POST /introspect HTTP/1.1\r\nHost: 127.0.0.1\r\nDate: Wed, 02 Dec 2026 03:00:00 GMT\r\n"
               b"User-Agent: dovecot-oauth2-passdb/2.3.19.1\r\nContent-Length: " + str(len(body)).encode()
               + b"\r\nConnection: Keep-Alive\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n"
               + body)
    context = ssl.create_default_context(cafile=certificate[0])
    with socket.create_connection(https.server_address, timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        stream = tls.makefile("rb")
        for _ in range(2):          # twice on one connection, as Dovecot reuses it
            tls.sendall(request)
            response = http.client.HTTPResponse(tls)
            response.begin()
            answer = json.loads(response.read())
            assert response.status == 200 and answer["active"] is True
            assert answer["email"] == "probe@example.test"
        stream.close()
    assert https.idp.state()["counters"]["introspect"] == {"requests": 2, "total": 2}


def test_a_silent_client_does_not_hold_up_the_others(https, certificate):
    silent = socket.create_connection(https.server_address, timeout=10)    # no handshake, ever
    try:
        conn = connect(https, certificate)
        started = time.monotonic()
        response, _ = post(conn, "/token", {"grant_type": "client_credentials", "client_id": "app",
                                            "client_secret": SECRETS["app"]})
        assert response.status == 200 and time.monotonic() - started < 2
    finally:
        silent.close()


def test_slow_and_failing_token_endpoint(https, certificate):
    https.idp.set_endpoint("token", delay=0.5, status=503, body="busy", content_type="text/plain", times=1)
    conn = connect(https, certificate)
    started = time.monotonic()
    response, body = post(conn, "/token", {"grant_type": "client_credentials"})
    assert time.monotonic() - started >= 0.5
    assert (response.status, body, response.getheader("Content-Type")) == (503, b"busy", "text/plain")
    response, _ = post(conn, "/token", {"grant_type": "client_credentials"})
    assert response.status == 401                       # back to normal after `times`
    log = https.idp.state()["requests"]
    assert [(e["status"], e.get("fault")) for e in log] == [(503, True), (401, None)]


def test_admin_wants_its_secret_and_answers_json(https, certificate):
    conn = connect(https, certificate)
    response, body = post(conn, "/admin/issue-token", json.dumps({"user": "probe@example.test"}),
                          content_type="application/json")
    assert response.status == 401 and json.loads(body) == {"error": "admin secret required"}
    admin = {"Authorization": "Bearer admin"}
    mint = json.dumps({"user": "probe@example.test", "lifetime": 60})
    response, body = post(conn, "/admin/issue-token", mint, admin, "application/json")
    token = json.loads(body)["access_token"]
    assert response.status == 200 and https.idp.token_state(token)["state"] == "active"
    response, body = post(conn, "/admin/endpoint", json.dumps({"endpoint": "nowhere"}), admin,
                          "application/json")
    assert response.status == 400 and "no endpoint 'nowhere'" in json.loads(body)["error"]
    response, body = post(conn, "/admin/fly", "{}", admin, "application/json")
    assert response.status == 404 and "issue-token" in json.loads(body)["actions"]


def test_a_request_without_content_length_is_refused_and_the_connection_closed(https, certificate):
    context = ssl.create_default_context(cafile=certificate[0])
    with socket.create_connection(https.server_address, timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"POST /token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        response = http.client.HTTPResponse(tls)
        response.begin()
        assert response.status == 411 and response.getheader("Connection") == "close"
        assert int(response.getheader("Content-Length")) == len(response.read())


# -- the daemon stands alone ----------------------------------------------------------------
def imported_modules(path):
    names = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_daemon_imports_the_standard_library_and_its_two_siblings_only():
    stdlib = getattr(sys, "stdlib_module_names", None)
    for module in (idp, authserver):
        names = imported_modules(module.__file__) - {"authserver", "auxd"}
        if stdlib is not None:
            assert names <= stdlib, (module.__name__, names - stdlib)


def test_a_copy_of_the_three_files_runs_as_a_daemon(tmp_path, certificate, free_port):
    # as the stack's daemons: started by root, it drops to "nobody"
    assert os.geteuid() == 0, "the daemon drops root privileges: run the tests as root, as the stack needs"
    for module in (idp, authserver, idp.auxd):
        shutil.copy(module.__file__, tmp_path / os.path.basename(module.__file__))
    (tmp_path / "admin").write_text("admin-secret\n")
    (tmp_path / "app").write_text("app-secret\n")
    cfg = {"host": "127.0.0.1", "port": free_port, "issuer": f"https://localhost:{free_port}",
           "cert": certificate[0], "key": certificate[1], "admin_secret_file": str(tmp_path / "admin"),
           "clients": {"app": {"secret_file": str(tmp_path / "app"), "grant_types": ["client_credentials"],
                               "mailbox": "probe@example.test", "scopes": ["imap"], "expires_in": 60}},
           "pidfile": str(tmp_path / "idp.pid"), "log": str(tmp_path / "idp.log"), "user": "nobody"}
    (tmp_path / "idp.json").write_text(json.dumps(cfg))
    subprocess.run([sys.executable, str(tmp_path / "idp.py"), str(tmp_path / "idp.json")], check=True,
                   timeout=30, stdin=subprocess.DEVNULL, capture_output=True)
    pid = read_pidfile(str(tmp_path / "idp.pid"))
    try:
        conn = http.client.HTTPSConnection("127.0.0.1", free_port, timeout=10,
                                           context=ssl.create_default_context(cafile=certificate[0]))
        response, body = post(conn, "/token", {"grant_type": "client_credentials"},
                              {"Authorization": basic("app", "app-secret")})
        assert response.status == 200 and json.loads(body)["expires_in"] == 60
        assert "idp: started pid" in (tmp_path / "idp.log").read_text()
    finally:
        os.kill(pid, signal.SIGTERM)
