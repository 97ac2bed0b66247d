"""A real registry with token auth, and a stand-in for GitHub's token service (ghcr.io's way).

ghcr.io speaks only Bearer tokens: `GET /v2/` and every repository call answer 401 with
`WWW-Authenticate: Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:OWNER/NAME:pull"`,
and the client asks the realm `GET /token?service=...&scope=repository:OWNER/NAME:pull,push` with
Basic credentials, getting `{"token": ..., "access_token": ..., "expires_in": N}` back. The
registry here is Debian's docker-registry (distribution 2.8) with `auth: token`, verifying the
JWTs for real: the issuer, the audience (the service), the expiry, the signature, and a key
whose certificate chain (the `x5c` header) leads to the root certificate bundle it was given.

`TokenService` stands in for GitHub's token service; it is not GitHub's. It grants, per user and
per repository pattern, only the actions it was told to (the intersection with what was asked,
as the token spec says: a pull-only user asking for pull,push gets a pull token and the registry
refuses the push), anonymous pull where a pattern allows it, and tokens that expire after
`expires_in` seconds (changeable while it runs). POST (the OAuth2 password grant containerd
tries first) answers 405, as token services without it do; containerd then falls back to GET.

distribution 2.8 accepts a token up to 60 s past its `exp` (token.Leeway, clock skew). So that a
token really stops working after `expires_in` seconds, as the client is told, the JWT's `exp`
is `issued + expires_in - 60`: the registry refuses it at `issued + expires_in`.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import fnmatch
import http.server
import json
import pathlib
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.registry_fixture import ServerCertificate, free_port

SERVICE = "dimbybot2-test-registry"
ISSUER = "dimbybot2-test-token-service"
LEEWAY = 60  # distribution's token.Leeway (registry/auth/token/token.go, v2.8)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclasses.dataclass
class SigningKeys:
    """A root CA (the registry's rootcertbundle) and a signing certificate it issued."""

    root_pem: bytes
    leaf_der: bytes
    key: rsa.RSAPrivateKey

    @classmethod
    def make(cls) -> SigningKeys:
        now = datetime.datetime.now(datetime.UTC)
        root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dimbybot2 test token root")])
        root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
                .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .sign(root_key, hashes.SHA256()))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        leaf = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dimbybot2 test token signer")]))
                .issuer_name(root_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(root_key, hashes.SHA256()))
        return cls(root.public_bytes(serialization.Encoding.PEM), leaf.public_bytes(serialization.Encoding.DER), key)

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.leaf_der).decode()]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


@dataclasses.dataclass
class User:
    password: str
    grants: dict[str, frozenset[str]]  # repository pattern (fnmatch) -> actions


@dataclasses.dataclass
class Issued:
    user: str | None
    scopes: list[str]
    granted: list[dict[str, Any]]
    status: int
    user_agent: str
    at: float = dataclasses.field(default_factory=time.time)  # when it was asked for (wall clock)
    token: str = dataclasses.field(default="", repr=False)  # what was issued ("" when refused)


class TokenService:
    """GitHub's token service, as far as a registry client sees it (a stand-in, not GitHub's)."""

    def __init__(self, keys: SigningKeys, users: dict[str, User], anonymous: dict[str, frozenset[str]],
                 expires_in: int = 300, address: str = "127.0.0.1", certificate: ServerCertificate | None = None) -> None:
        """`address` and `certificate`: listen there over TLS (where a Dagger engine's containers
        reach it, tests/dagger_engine.py) instead of plain HTTP on the loopback."""
        self.keys, self.users, self.anonymous = keys, users, anonymous
        self.address, self.tls = address, certificate is not None
        self.expires_in = expires_in
        # What the answer says of the lifetime, when it should differ from the truth (a token
        # the registry stops honouring early: revoked, or clocks that disagree).
        self.reported_expires_in: int | None = None
        self.issued: list[Issued] = []
        self.lock = threading.Lock()
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                code, body = service.answer(self.path, self.headers.get("Authorization"), self.headers.get("User-Agent", ""))
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                if code == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="token service"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                if length := int(self.headers.get("Content-Length", "0") or 0):
                    self.rfile.read(length)  # the form carries the password: read, never kept
                body = b'{"errors":[{"code":"UNSUPPORTED","message":"method not allowed"}]}'
                self.send_response(405)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((address, 0), Handler)
        if certificate is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(certificate.cert), str(certificate.key))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def realm(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}:{self.port}/token"

    def _who(self, authorization: str | None) -> tuple[bool, str | None]:
        """(credentials acceptable, user name or None for anonymous)."""
        if not authorization:
            return True, None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            name, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False, None
        user = self.users.get(name)
        return (user is not None and user.password == password), name

    def answer(self, path: str, authorization: str | None, user_agent: str) -> tuple[int, bytes]:
        url = urllib.parse.urlsplit(path)
        query = urllib.parse.parse_qs(url.query)
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        if url.path != "/token" or query.get("service") != [SERVICE]:
            self._record(None, scopes, [], 400, user_agent)
            return 400, b'{"errors":[{"code":"UNSUPPORTED","message":"unknown service"}]}'
        good, name = self._who(authorization)
        if not good:
            self._record(name, scopes, [], 401, user_agent)
            return 401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
        grants = self.users[name].grants if name is not None else self.anonymous
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            repository, _, actions = rest.rpartition(":")
            if kind != "repository" or not repository:
                continue
            allowed = set().union(*(a for pattern, a in grants.items() if fnmatch.fnmatchcase(repository, pattern)))
            granted = sorted(set(actions.split(",")) & allowed)
            if granted:
                access.append({"type": "repository", "name": repository, "actions": granted})
        if name is None and scopes and not access:
            # ghcr.io: anonymous with nothing granted is refused at the token service.
            self._record(name, scopes, [], 401, user_agent)
            return 401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
        now = int(time.time())
        lifetime = self.expires_in
        claims = {"iss": ISSUER, "sub": name or "", "aud": SERVICE, "iat": now, "nbf": now,
                  "exp": now + lifetime - LEEWAY, "jti": uuid.uuid4().hex, "access": access}
        token = self.keys.sign(claims)
        self._record(name, scopes, access, 200, user_agent, token)
        return 200, json.dumps({"token": token, "access_token": token,
                                "expires_in": lifetime if self.reported_expires_in is None else self.reported_expires_in,
                                "issued_at": datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat()}).encode()

    def _record(self, user: str | None, scopes: list[str], granted: list[dict[str, Any]], status: int, user_agent: str,
                token: str = "") -> None:
        with self.lock:
            self.issued.append(Issued(user, scopes, granted, status, user_agent, token=token))

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@dataclasses.dataclass
class TokenRegistry:
    host: str
    tokens: TokenService
    storage: pathlib.Path
    log: pathlib.Path


def start_token_registry(directory: pathlib.Path, users: dict[str, User], anonymous: dict[str, frozenset[str]],
                         expires_in: int = 300, address: str = "127.0.0.1", certificate: ServerCertificate | None = None,
                         ca: pathlib.Path | None = None) -> Iterator[TokenRegistry]:
    """docker-registry with `auth: token` on 127.0.0.1 (plain HTTP), and its token service. Given
    an address and a certificate (for that address; `ca` signed it), both listen there over TLS
    instead: a token registry as a Dagger engine's containers see one."""
    keys = SigningKeys.make()
    bundle = directory / "token-root.pem"
    bundle.write_bytes(keys.root_pem)
    storage = directory / "storage"
    storage.mkdir(parents=True)
    tokens = TokenService(keys, users, anonymous, expires_in, address, certificate)
    port = free_port()
    config = directory / "config.yml"
    tls = f"  tls: {{certificate: {certificate.cert}, key: {certificate.key}}}\n" if certificate else ""
    config.write_text(f"""version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {address}:{port}
{tls}auth:
  token:
    realm: {tokens.realm}
    service: {SERVICE}
    issuer: {ISSUER}
    rootcertbundle: {bundle}
""")
    log_path = directory / "registry.log"
    log = log_path.open("w")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    context = ssl.create_default_context(cafile=str(ca)) if certificate else None
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{'https' if certificate else 'http'}://{address}:{port}/v2/", timeout=1, context=context)
            except urllib.error.HTTPError:
                break  # 401: up, and asking for a token
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        if proc.poll() is not None:
            raise RuntimeError(f"registry did not start: {log_path.read_text()}")
        yield TokenRegistry(f"{address}:{port}", tokens, storage, log_path)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        tokens.stop()
