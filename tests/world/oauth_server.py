#!/usr/bin/python3
"""A small OAuth 2.0 authorization server for the SocialVPN test world.

Authorization code grant with PKCE (S256 only) for one public client (the app, redirecting to
a loopback listener), built on oauthlib's WebApplicationServer; plus the REST calls ejabberd
23.01 makes with `oauth_db_type: rest` (POST <ext_api_url>/oauth/lookup and /oauth/store), so
that ejabberd accepts our tokens for SASL X-OAUTH2; and the check prosody-modules'
mod_auth_oauthbearer makes (GET /introspect/<token>), for prosody's SASL OAUTHBEARER. State
is in memory: a restart forgets all. Needs Debian's python3-oauthlib, i.e. /usr/bin/python3. See OAUTH-SERVER.md next to this file.
"""
import argparse
import base64
import hmac
import html
import json
import re
import secrets
import socket
import ssl
import sys
import threading
import time
import traceback
import types
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from oauthlib.oauth2 import RequestValidator, WebApplicationServer
from oauthlib.oauth2.rfc6749 import errors

CODE_TTL = 60            # seconds; RFC 6749 4.1.2 asks for short-lived codes
MAX_BODY = 16 * 1024     # every legitimate request here is tiny
SCOPES = {"sasl_auth"}   # ejabberd's X-OAUTH2 accepts a token only with this scope
CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")       # base64url(SHA-256), RFC 7636 4.2
VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 4.1


class Store:
    """Codes and tokens, behind one lock (the server is threaded, the data small)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.codes = {}   # code -> grant (see save_authorization_code)
        self.used = {}    # redeemed code -> (access token or None, when)
        self.tokens = {}  # access token -> {"user": jid, "scope": [..], "expire": unix}

    def prune(self, now):
        # Called with the lock held on every write, so long tests stay bounded in memory.
        self.codes = {c: g for c, g in self.codes.items() if g["expires"] >= now}
        self.used = {c: u for c, u in self.used.items() if u[1] + 10 * CODE_TTL >= now}
        self.tokens = {t: r for t, r in self.tokens.items() if r["expire"] >= now}


class Validator(RequestValidator):
    """The policy oauthlib asks about: one public client, loopback redirects, PKCE always.
    oauthlib passes extra positional/keyword arguments, hence the *a, **k."""

    def __init__(self, cfg, store):
        super().__init__()
        self.cfg, self.store = cfg, store

    def validate_client_id(self, client_id, request, *a, **k):
        if client_id != self.cfg.client_id:
            return False
        request.client = types.SimpleNamespace(client_id=client_id)  # oauthlib reads .client_id
        return True

    # A public client (RFC 8252) has no secret: the client id is checked, PKCE does the rest.
    authenticate_client_id = validate_client_id
    def client_authentication_required(self, *a, **k): return False
    def is_pkce_required(self, client_id, request): return True
    def validate_response_type(self, client_id, rtype, *a, **k): return rtype == "code"
    def validate_scopes(self, cid, scopes, *a, **k): return bool(scopes) and set(scopes) <= SCOPES
    def get_default_scopes(self, *a, **k): return sorted(SCOPES)
    # None: the client must name its (per-run loopback) redirect URI every time.
    def get_default_redirect_uri(self, *a, **k): return None

    def validate_redirect_uri(self, client_id, redirect_uri, request, *a, **k):
        # A bare prefix test would let "http://127.0.0.1:1@evil.example/" through.
        u = urllib.parse.urlsplit(redirect_uri)
        return (redirect_uri.startswith(self.cfg.redirect_uri_prefix) and not u.fragment
                and "@" not in u.netloc and "\\" not in redirect_uri)

    def save_authorization_code(self, client_id, code, request, *a, **k):
        now = time.time()
        with self.store.lock:
            self.store.prune(now)
            self.store.codes[code["code"]] = {
                "client_id": client_id, "user": request.user, "scopes": list(request.scopes),
                "redirect_uri": request.redirect_uri, "challenge": request.code_challenge,
                "method": request.code_challenge_method, "expires": now + CODE_TTL}

    def validate_grant_type(self, client_id, grant_type, *a, **k):
        return grant_type == "authorization_code"  # no refresh tokens: ejabberd has no use

    def validate_code(self, client_id, code, client, request, *a, **k):
        # The first exchange attempt spends the code, even one that then fails (wrong
        # verifier or redirect_uri): a guessed verifier gets one try. A code presented again
        # revokes the token it bought (RFC 6749 4.1.2).
        with self.store.lock:
            grant = self.store.codes.pop(code, None)
            if grant is None:
                self.store.tokens.pop(self.store.used.get(code, ("", 0))[0], None)
                return False
            self.store.used[code] = (None, time.time())
        if grant["expires"] < time.time() or grant["client_id"] != client_id:
            return False
        request.user, request.scopes, request.svpn_grant = grant["user"], grant["scopes"], grant
        return True

    # The next three run after validate_code, which left the grant on the request.
    def get_code_challenge(self, code, request): return request.svpn_grant["challenge"]
    def get_code_challenge_method(self, code, request): return request.svpn_grant["method"]

    def confirm_redirect_uri(self, client_id, code, redirect_uri, client, request, *a, **k):
        return redirect_uri == request.svpn_grant["redirect_uri"]

    def save_bearer_token(self, token, request, *a, **k):
        now = time.time()
        with self.store.lock:
            self.store.prune(now)
            self.store.tokens[token["access_token"]] = {
                "user": request.user, "scope": list(request.scopes),
                "expire": int(now) + int(token["expires_in"])}
            self.store.used[request.code] = (token["access_token"], now)

    def invalidate_authorization_code(self, client_id, code, request, *a, **k):
        pass  # validate_code removed it already


def s256_only(request):
    # oauthlib also accepts "plain" (its default when no method is given); we refuse it.
    if request.code_challenge_method != "S256":
        raise errors.UnsupportedCodeChallengeMethodError(request=request)
    if not CHALLENGE.fullmatch(request.code_challenge or ""):
        raise errors.InvalidRequestError(description="Malformed code_challenge.", request=request)
    return {}


def verifier_syntax(request):
    if request.code_verifier is not None and not VERIFIER.fullmatch(request.code_verifier):
        raise errors.InvalidRequestError(description="Malformed code_verifier.", request=request)


FORM = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign in</title></head><body>
<h1>Sign in to {client}</h1>{error}
<form method="post" action="/authorize"><input type="hidden" name="q" value="{q}">
<p><label>XMPP address <input name="username" value="{user}" autocomplete="username"></label>
<p><label>Password <input type="password" name="password" autocomplete="current-password">
</label><p><button type="submit">Sign in</button></form></body></html>
"""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # ejabberd's httpc keeps connections alive
    server_version = "svpn-test-as"
    timeout = 30                   # a stalled client frees its thread

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/introspect/"):
            return self.dispatch({path: self.introspect}, False)
        self.dispatch({"/authorize": self.authorize_form}, False)

    def do_POST(self):
        api = self.server.cfg.api_path
        self.dispatch({"/authorize": self.authorize_submit, "/token": self.token,
                       api + "/lookup": self.lookup, api + "/store": self.store_token,
                       "/admin/revoke": self.revoke}, True)

    def dispatch(self, routes, has_body):
        try:
            # Read the body whatever the answer: left unread on a kept-alive connection, it
            # would be parsed as the next request.
            self.data = self.body() if has_body else ""
            route = routes.get(urllib.parse.urlsplit(self.path).path)
            if route is None:
                return self.reply(404, {"error": "not_found"})
            route()
        except ValueError as e:  # also UnicodeDecodeError, JSONDecodeError, oauthlib's parsing
            self.reply(400, {"error": "invalid_request", "error_description": str(e)[:200]})
        except Exception:  # never a traceback to the client; keep it in our log
            traceback.print_exc()
            self.reply(500, {"error": "server_error"})

    def reply(self, status, body, headers=None):
        """body: a dict (sent as JSON), an HTML page, or oauthlib's JSON text."""
        page = isinstance(body, str) and body.startswith("<!DOCTYPE")
        data = (json.dumps(body) if isinstance(body, dict) else body or "").encode()
        headers = {"Cache-Control": "no-store", **(headers or {})}  # codes, tokens: no caching
        if data:
            headers.setdefault("Content-Type", "text/html; charset=utf-8" if page
                               else "application/json")
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_BODY:
            self.close_connection = True  # we cannot skip a body we do not read
            raise ValueError("Content-Length missing or over %d" % MAX_BODY)
        return self.rfile.read(int(length)).decode("utf-8")

    def form(self):
        fields = urllib.parse.parse_qs(self.data, keep_blank_values=True,
                                       strict_parsing=True, max_num_fields=20)
        return {k: v[0] for k, v in fields.items() if len(v) == 1}

    def json_object(self):
        obj = json.loads(self.data)
        if not isinstance(obj, dict):
            raise ValueError("JSON object expected")
        return obj

    def trusted(self):
        # The shared secret, as ejabberd sends it through `ext_api_headers`.
        secret, got = self.server.cfg.secret, self.headers.get("Authorization", "").strip()
        return secret is not None and hmac.compare_digest(got.encode(),
                                                          b"Bearer " + secret.encode())

    # -- authorization endpoint: GET shows the form, POST signs in and redirects -----------
    def check(self, query):
        """oauthlib's validation of the request; its scopes, or None after an error reply."""
        try:  # oauthlib only parses the query and insists on an https scheme
            return self.server.oauth.validate_authorization_request("https://as/?" + query)[0]
        except errors.FatalClientError as e:  # bad client or redirect: never redirect there
            self.reply(400, {"error": e.error, "error_description": e.description})
        except errors.OAuth2Error as e:
            self.reply(302, "", {"Location": e.in_uri(e.redirect_uri)})
        return None

    def authorize_form(self, query=None, error="", user=""):
        query = urllib.parse.urlsplit(self.path).query if query is None else query
        if error or self.check(query) is not None:
            # The original query rides in a hidden field; the POST revalidates all of it.
            self.reply(200, FORM.format(client=html.escape(self.server.cfg.client_id),
                                        error=error, q=html.escape(query), user=html.escape(user)))

    def authorize_submit(self):
        f = self.form()
        query = f.get("q", "")
        scopes = self.check(query)
        if scopes is None:
            return
        user = f.get("username", "").strip().lower()
        known = self.server.users.get(user)
        password = f.get("password", "").encode()
        if known is None or not hmac.compare_digest(known.encode(), password):
            return self.authorize_form(query, '<p role="alert">Wrong address or password.', user)
        headers, _, status = self.server.oauth.create_authorization_response(
            "https://as/?" + query, scopes=scopes, credentials={"user": user})
        self.reply(status, "", headers)

    def token(self):
        self.form()  # 400 unless a form: oauthlib would quietly see no parameters
        headers, text, status = self.server.oauth.create_token_response(
            "https://as/token", "POST", self.data, dict(self.headers))
        self.reply(status, text, headers)

    # -- what ejabberd calls (src/ejabberd_oauth_rest.erl) ---------------------------------
    def lookup(self):
        if self.server.cfg.secret is not None and not self.trusted():
            return self.reply(401, {})
        token = self.json_object().get("token")
        if not isinstance(token, str):
            raise ValueError("token missing")
        with self.server.store.lock:
            rec = self.server.store.tokens.get(token)
        if rec is None or rec["expire"] <= time.time():
            return self.reply(404, {})  # ejabberd parses even a 404's body: send JSON
        self.reply(200, rec)

    def store_token(self):
        # ejabberd's own issuing (`ejabberdctl oauth_issue_token`, its /oauth/token) ends up
        # here. It mints tokens, so it always needs the secret.
        if not self.trusted():
            return self.reply(403, {})
        o = self.json_object()
        token, user, scope, expire = (o.get(k) for k in ("token", "user", "scope", "expire"))
        if not (isinstance(token, str) and token and isinstance(user, str) and "@" in user
                and isinstance(scope, list) and all(isinstance(s, str) for s in scope)
                and isinstance(expire, int)):
            raise ValueError("token, user, scope, expire expected")
        with self.server.store.lock:
            self.server.store.prune(time.time())
            self.server.store.tokens[token] = {"user": user, "scope": scope, "expire": expire}
        self.reply(200, {})

    # -- what prosody-modules' mod_auth_oauthbearer calls ------------------------------------
    def introspect(self):
        # GET <oauth_url> with the token in the path and HTTP Basic client_id:secret; any 2xx
        # means valid. That module cannot ask whose token it is (its URL template knows only
        # the client id and the token), so it does not bind tokens to users.
        secret = self.server.cfg.secret
        expected = "Basic " + base64.b64encode(
            f"{self.server.cfg.client_id}:{secret}".encode()).decode()
        got = self.headers.get("Authorization", "").strip()
        if secret is None or not hmac.compare_digest(got.encode(), expected.encode()):
            return self.reply(401, {})
        token = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path[len("/introspect/"):])
        with self.server.store.lock:
            rec = self.server.store.tokens.get(token)
        if rec is None or rec["expire"] <= time.time():
            return self.reply(404, {})
        self.reply(200, {"active": True, "sub": rec["user"], "scope": " ".join(rec["scope"])})

    def revoke(self):
        # Test control: {"token": T} revokes T, {"user": JID} every token of that user.
        if not self.trusted():
            return self.reply(403, {})
        o = self.json_object()
        with self.server.store.lock:
            tokens = self.server.store.tokens
            gone = [t for t, r in tokens.items()
                    if t == o.get("token") or r["user"] == o.get("user")]
            for t in gone:
                del tokens[t]
        self.reply(200, {"revoked": len(gone)})


class Server(ThreadingHTTPServer):  # its threads are daemon threads already
    def handle_error(self, request, client_address):
        # TLS handshake failures and resets: one line, not a traceback per port probe.
        print(f"{client_address[0]}: {sys.exc_info()[1]!r}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="ADDRESS:PORT ([v6]:PORT)")
    ap.add_argument("--cert", required=True, help="PEM certificate chain")
    ap.add_argument("--key", required=True, help="PEM private key")
    ap.add_argument("--users", required=True, help='JSON file {"jid": "password", ...}')
    ap.add_argument("--client-id", default="socialvpn")
    ap.add_argument("--redirect-uri-prefix", default="http://127.0.0.1:")
    ap.add_argument("--token-ttl", type=int, default=3600, help="seconds")
    ap.add_argument("--secret", help="shared with ejabberd (ext_api_headers) and tests: needed "
                    "on /oauth/store and /admin/revoke, and on /oauth/lookup once set")
    ap.add_argument("--api-path", default="/oauth", help="ejabberd's ext_api_path_oauth")
    cfg = ap.parse_args()
    host, _, port = cfg.listen.rpartition(":")
    host = host.strip("[]")
    with open(cfg.users, encoding="utf-8") as f:
        users = json.load(f)
    if not isinstance(users, dict) or not all(isinstance(v, str) for v in users.values()):
        sys.exit("--users: a JSON object of JID -> password expected")

    store = Store()
    oauth = WebApplicationServer(Validator(cfg, store), token_expires_in=cfg.token_ttl,
                                 token_generator=lambda _request: secrets.token_urlsafe(32))
    oauth.auth_grant.refresh_token = False
    oauth.auth_grant.custom_validators.post_auth.append(s256_only)
    oauth.auth_grant.custom_validators.pre_token.append(verifier_syntax)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg.cert, cfg.key)
    Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = Server((host, int(port)), Handler)
    # The handshake then happens in the connection's thread (first read), not in accept().
    server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                    do_handshake_on_connect=False)
    server.cfg, server.store, server.oauth = cfg, store, oauth
    server.users = {k.lower(): v for k, v in users.items()}
    print(f"listening on {cfg.listen}", flush=True)  # a test can wait for this line
    server.serve_forever()


if __name__ == "__main__":
    main()
