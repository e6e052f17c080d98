"""A real OAuth authorization server's public half for the service tests: an HTTPS server
(its own CA) on 127.0.0.1 serving RFC 8414 metadata (or only OpenID discovery) and a JWKS
it can rotate or stop, and the RSA keys that sign its tokens."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import http.server
import ipaddress
import json
import ssl
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

AUDIENCE = "https://mcp.example.test/api/v1/mcp"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 it signed: (ca, cert, key) files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test issuer CA"))
        .issuer_name(_name("test issuer CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    """An RSA key with its id: signs tokens, publishes its public JWK."""

    def __init__(self) -> None:
        self.kid = uuid.uuid4().hex[:12]
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class Issuer:
    """An HTTPS authorization server's discovery and JWKS endpoints, on 127.0.0.1."""

    def __init__(self, directory: Path, openid_only: bool = False) -> None:
        self.ca, cert, key = _certificates(directory)
        self.keys = [SigningKey()]
        self.jwks_fetches = 0
        self.openid_only = openid_only
        # The issuer its metadata names (a test may make it name another).
        self.named = ""
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                oauth = "/.well-known/oauth-authorization-server"
                openid = "/.well-known/openid-configuration"
                if self.path == "/jwks":
                    issuer.jwks_fetches += 1
                    body = {"keys": [k.jwk() for k in issuer.keys]}
                elif self.path == openid or (self.path == oauth and not issuer.openid_only):
                    body = issuer.metadata()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def metadata(self) -> dict[str, Any]:
        return {"issuer": self.named or self.url, "jwks_uri": f"{self.url}/jwks"}

    def token(self, key: SigningKey | None = None, **claims: Any) -> str:
        """An RS256 token signed by ``key`` (the issuer's first), the usual claims overridden
        by ``claims`` (None drops one)."""
        key = key or self.keys[0]
        return jwt.encode(
            self.claims(**claims), key.private, algorithm="RS256", headers={"kid": key.kid}
        )

    def claims(self, **claims: Any) -> dict[str, Any]:
        now = int(time.time())
        body = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "user-1",
            "client_id": "client-1",
            "scope": "mcp:tools",
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        return {name: value for name, value in body.items() if value is not None}

    def unsigned_token(self, **claims: Any) -> str:
        """An ``alg: none`` token with the issuer's claims: no signature at all."""
        return jwt.encode(self.claims(**claims), None, algorithm="none")

    def hs256_token(self, **claims: Any) -> str:
        """HS256 with the issuer's *public* key as the HMAC secret (the key-confusion
        attack). PyJWT refuses to make one: it is assembled by hand."""
        key = self.keys[0]
        header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
        signing_input = ".".join(
            _b64(json.dumps(part).encode()) for part in (header, self.claims(**claims))
        )
        mac = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256)
        return f"{signing_input}.{_b64(mac.digest())}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
