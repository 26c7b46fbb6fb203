"""Row 9: what OAuth2 sign-in costs a round trip, against the stack's own IdP.

Three series of our plugin, interleaved run by run (password, OAuth2 from a
warm token cache, OAuth2 from a stale cache), same command line but for how
the logins prove themselves:

- password: `--smtp-password-file` (AUTH PLAIN, IMAP LOGIN), as rows 1-8;
- warm: `--auth xoauth2` with the built-in client-credentials grant
  (`probe-app`), its token cache filled by one run before the series, so
  that every measured run signs in without asking the token endpoint;
- stale: the same grant with a cache of its own whose token has run out, so
  that every measured run makes exactly one token request.  The IdP hands
  this client 2-second tokens during the series (its admin interface,
  `client` action), the bench waits until the last one is stale, and puts
  the default lifetime back afterwards; the warm cache's token was issued
  before, with the default hour.

Every fact (URLs, client, secret file, admin secret) comes from stack.json's
"oauth" section.  The IdP's own counters (reset before, read after) say how
many token requests the series made; each run's `oauth_token` perfdata says
whether that run made one.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import tempfile
import time
from urllib.parse import urlsplit

from runner import log, med, perf, ratio

STALE_LIFETIME = 2  # seconds: the IdP's expires_in for the client while the stale series runs


class IdpAdmin:
    """The stack IdP's admin interface (stack.json oauth.admin), stdlib only."""

    def __init__(self, st: dict):
        oauth = st["oauth"]
        url = urlsplit(oauth["admin"]["url"])
        self.host, self.port, self.path = url.hostname, url.port, url.path
        with open(oauth["admin"]["secret_file"]) as fh:
            self.secret = fh.read().strip()
        self.context = ssl.create_default_context(cafile=oauth["ca"])

    def __call__(self, action: str, **args) -> dict:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=30)
        try:
            headers = {"Authorization": f"Bearer {self.secret}", "Content-Type": "application/json"}
            conn.request("POST", self.path + action, body=json.dumps(args), headers=headers)
            response = conn.getresponse()
            answer = json.loads(response.read() or b"{}")
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"IdP admin {action}: {response.status} {answer}")
        return answer

    def token_requests(self) -> int:
        return self("state")["counters"]["token"].get("total", 0)


def sign_in(st: dict) -> list[str]:
    """The plugin's options for the client-credentials grant of the stack's app client."""
    oauth = st["oauth"]
    client = oauth["app_client"]
    return ["--auth", "xoauth2", "--oauth-token-url", oauth["token_url"], "--oauth-client-id", client,
            "--oauth-client-secret-file", oauth["clients"][client]["secret_file"]]


def figures(trips) -> dict:
    ok = [t for t in trips if t.ok]
    text = [t.proc.text for t in ok]
    asked = [perf(x, "oauth_token") for x in text]
    return dict(n=len(ok), of=len(trips), wall=med([t.proc.wall for t in ok]),
                smtp_auth=med([perf(x, "smtp_auth") for x in text]),
                imap_retrieval=med([t.imap_retrieval for t in ok]),
                oauth_token=med(asked), requested=sum(a is not None for a in asked))


def series(bench, n: int) -> dict:
    """n rounds of (password, warm, stale); figures of each, the IdP's request count."""
    st, ours = bench.st, bench.ours
    admin = IdpAdmin(st)
    client = st["oauth"]["app_client"]
    homes = {k: tempfile.mkdtemp(prefix=f"bench-oauth-{k}-") for k in ("warm", "stale")}
    env = {k: dict(os.environ, XDG_STATE_HOME=home) for k, home in homes.items()}
    oauth = sign_in(st)
    trips: dict[str, list] = {"password": [], "warm": [], "stale": []}
    admin("reset-counters")
    try:
        # fill both caches: the warm one with an hour's token, the stale one with a short-lived one
        bench.trip(ours, sign_in=oauth, env=env["warm"])
        admin("client", client_id=client, expires_in=STALE_LIFETIME)
        bench.trip(ours, sign_in=oauth, env=env["stale"])
        stale_since = time.monotonic() + STALE_LIFETIME
        for _ in range(n):
            trips["password"].append(bench.trip(ours))
            trips["warm"].append(bench.trip(ours, sign_in=oauth, env=env["warm"]))
            time.sleep(max(0.0, stale_since + 0.05 - time.monotonic()))
            trips["stale"].append(bench.trip(ours, sign_in=oauth, env=env["stale"]))
            stale_since = time.monotonic() + STALE_LIFETIME
    finally:
        admin("client", client_id=client, expires_in=None)
    requests = admin.token_requests()
    fig = {k: figures(ts) for k, ts in trips.items()}
    fig.update(n=n, requests=requests, expected=2 + n,
               warm_vs_password=ratio(fig["warm"]["wall"], fig["password"]["wall"]),
               stale_vs_password=ratio(fig["stale"]["wall"], fig["password"]["wall"]))
    for k in trips:
        f = fig[k]
        log(f"  {k}: wall {f['wall']}, smtp_auth {f['smtp_auth']}, imap_retrieval {f['imap_retrieval']}, "
            f"oauth_token {f['oauth_token']} (requests {f['requested']}; {f['n']}/{f['of']} OK)")
    log(f"  IdP token requests: {requests} (expected {2 + n}: two cache fills and one per stale run)")
    return fig
