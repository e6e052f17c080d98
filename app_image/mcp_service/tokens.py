"""OAuth 2.1 access tokens (JWT, RFC 9068): the issuer's keys and the verification.

The service is a resource server: it never issues tokens. It finds the issuer's JWKS
through the issuer's RFC 8414 metadata (then OpenID discovery) unless ``MCP_AUTH_JWKS_URI``
names it, keeps the keys ``MCP_AUTH_JWKS_CACHE_SECONDS``, and asks again for a key id it
does not know at most once per :data:`REFETCH_SECONDS`, so a flood of forged key ids costs
the issuer one request. Keys already fetched keep working while the issuer is down.

Signatures and claims are checked by PyJWT (no JOSE parsing here): the algorithm is one of
``MCP_AUTH_ALGORITHMS`` (asymmetric only) and the key's own, ``iss`` is the issuer exactly,
``aud`` holds the audience, ``exp`` and ``nbf`` hold within the clock skew. A refusal says
why, with the claims the audit log needs, and whether they come from a verified token:
nothing decides, counts or names a caller from a claim whose signature did not verify.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from typing import Any

import httpx2
import jwt
from mcp.server.auth.provider import AccessToken

from mcp_service import metrics
from mcp_service.config import AuthConfig, well_known

log = logging.getLogger(__name__)

# An unknown key id makes the service ask the issuer again at most this often.
REFETCH_SECONDS = 5.0
# Bearers longer than this are refused unread (an API key is at most 256 characters).
MAX_TOKEN_LENGTH = 8192
# Audit fields taken from a token are cut to this many characters.
MAX_CLAIM_LENGTH = 256
FETCH_TIMEOUT_SECONDS = 5.0
MAX_DOCUMENT_BYTES = 512 * 1024
# PyJWT errors raised after the signature verified: the claims are the issuer's.
_AFTER_SIGNATURE = (
    jwt.ExpiredSignatureError,
    jwt.ImmatureSignatureError,
    jwt.InvalidAudienceError,
    jwt.InvalidIssuerError,
    jwt.InvalidIssuedAtError,
    jwt.MissingRequiredClaimError,
)


class IssuerError(Exception):
    """The issuer's metadata or keys could not be had (unreachable, bad answer)."""


class Refusal(Exception):
    """Why a token was refused, with what the audit log may record of it.

    ``claims`` holds ``iss``, ``sub``, ``client_id`` and ``aud`` as the token states them
    (each at most :data:`MAX_CLAIM_LENGTH` characters); ``verified`` says whether its
    signature verified, i.e. whether the issuer stated them or anyone could have.
    """

    def __init__(
        self, reason: str, claims: dict[str, str] | None = None, verified: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claims = claims or {}
        self.verified = verified


def looks_like_jwt(bearer: str) -> bool:
    """Whether a bearer has a JWS's shape (three base64url parts), as ``both`` mode tells
    tokens from API keys (hex, no dots)."""
    parts = bearer.split(".")
    return len(parts) == 3 and all(parts[:2]) and len(bearer) <= MAX_TOKEN_LENGTH


def metadata_urls(issuer: str) -> list[str]:
    """Where the issuer's metadata may be: RFC 8414 section 3.1 (``/.well-known/`` inserted
    before the issuer's path), then OpenID Connect Discovery (appended to it)."""
    oauth = well_known(issuer, "oauth-authorization-server")
    return [oauth, f"{issuer.rstrip('/')}/.well-known/openid-configuration"]


class IssuerKeys:
    """The issuer's signing keys by key id: fetched on first use, kept for the cache period,
    asked for again for an unknown key id at most every ``refetch_seconds``."""

    def __init__(self, config: AuthConfig, refetch_seconds: float = REFETCH_SECONDS) -> None:
        self.config = config
        self.refetch_seconds = refetch_seconds
        context = ssl.create_default_context()
        if config.ca_file:
            context.load_verify_locations(cafile=config.ca_file)
        self._context = context
        self._jwks_uri = config.jwks_uri
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")  # last successful fetch
        self._tried_at = float("-inf")  # last attempt, successful or not
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The key for ``kid`` (or the only key, for a token without one), or None.

        A known key is answered at once; when the cache is older than its period it is
        refreshed behind the request, so an issuer that hangs never delays a caller whose
        key is cached. An unknown key id waits for one fetch (or for the one under way).
        """
        found = self._find(kid)
        if found is not None:
            stale = time.monotonic() - self._fetched_at >= self.config.jwks_cache_seconds
            if stale and self._may_try() and not self._lock.locked():
                self._background = asyncio.create_task(self._refresh())
            return found
        await self._refresh()
        return self._find(kid)

    def _may_try(self) -> bool:
        return time.monotonic() - self._tried_at >= self.refetch_seconds

    async def _refresh(self) -> None:
        async with self._lock:
            # A fetch that ended while this one waited for the lock counts as this one's.
            if not self._may_try():
                return
            self._tried_at = time.monotonic()
            try:
                await self._fetch()
            except IssuerError as exc:
                # Keep what was fetched before: cached keys outlive an outage.
                metrics.AUTH_ISSUER_ERRORS.inc()
                log.warning("issuer keys unavailable", extra={"error": str(exc)})

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _fetch(self) -> None:
        async with httpx2.AsyncClient(
            verify=self._context, timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False
        ) as client:
            if not self._jwks_uri:
                self._jwks_uri = await self._discover(client)
            document = await _get_json(client, self._jwks_uri)
        try:
            found = jwt.PyJWKSet.from_dict(document)
        except (jwt.PyJWKSetError, jwt.InvalidKeyError, TypeError, KeyError) as exc:
            raise IssuerError(f"{self._jwks_uri}: not a usable JWKS ({exc})") from None
        keys = {
            key.key_id or "": key
            for key in found.keys
            if key.public_key_use in (None, "sig") and not _is_symmetric(key)
        }
        if not keys:
            raise IssuerError(f"{self._jwks_uri}: no public signing key")
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def _discover(self, client: httpx2.AsyncClient) -> str:
        problems = []
        for url in metadata_urls(self.config.issuer):
            try:
                metadata = await _get_json(client, url)
            except IssuerError as exc:
                problems.append(str(exc))
                continue
            # RFC 8414 section 3.3: the metadata must name exactly the configured issuer.
            if metadata.get("issuer") != self.config.issuer:
                problems.append(f"{url}: names issuer {metadata.get('issuer')!r}")
                continue
            jwks_uri = metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith("https://"):
                problems.append(f"{url}: no https jwks_uri")
                continue
            return jwks_uri
        raise IssuerError("; ".join(problems))


def _is_symmetric(key: jwt.PyJWK) -> bool:
    return key.key_type == "oct"


async def _get_json(client: httpx2.AsyncClient, url: str) -> dict[str, Any]:
    try:
        response = await client.get(url, headers={"Accept": "application/json"})
    except httpx2.HTTPError as exc:
        raise IssuerError(f"{url}: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        raise IssuerError(f"{url}: HTTP {response.status_code}")
    if len(response.content) > MAX_DOCUMENT_BYTES:
        raise IssuerError(f"{url}: larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(response.content)
    except ValueError:
        raise IssuerError(f"{url}: not JSON") from None
    if not isinstance(document, dict):
        raise IssuerError(f"{url}: not a JSON object")
    return document


def _clean(value: object) -> str:
    """A claim as text fit for a log line: control characters replaced, length bounded."""
    if isinstance(value, list):
        value = " ".join(str(item) for item in value)
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value))
    return text[:MAX_CLAIM_LENGTH]


def _audit_claims(claims: dict[str, Any]) -> dict[str, str]:
    return {
        name: _clean(claims[name])
        for name in ("iss", "sub", "client_id", "aud")
        if claims.get(name) is not None
    }


def _unverified_claims(token: str) -> dict[str, str]:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return _audit_claims(claims) if isinstance(claims, dict) else {}


def _scopes(claims: dict[str, Any]) -> list[str]:
    scope = claims.get("scope", claims.get("scp", ""))
    if isinstance(scope, list):
        return [str(item) for item in scope]
    return str(scope).split()


class TokenVerifier:
    """Verifies access tokens against the configured issuer and audience (the SDK's
    ``TokenVerifier`` protocol, plus :meth:`check`, which says why it refuses)."""

    def __init__(self, config: AuthConfig, keys: IssuerKeys | None = None) -> None:
        self.config = config
        self.keys = keys or IssuerKeys(config)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            return await self.check(token)
        except Refusal:
            return None

    async def check(self, token: str) -> AccessToken:
        """The token's access, or :class:`Refusal` naming why not."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise Refusal(f"longer than {MAX_TOKEN_LENGTH} characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Refusal("not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self.config.algorithms:
            raise Refusal(
                f"algorithm {str(algorithm)[:20]!r} not allowed", _unverified_claims(token)
            )
        kid = header.get("kid")
        key = await self.keys.key(kid if isinstance(kid, str) else None)
        if key is None:
            raise Refusal("unknown signing key", _unverified_claims(token))
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.clock_skew_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except _AFTER_SIGNATURE as exc:
            raise Refusal(_reason(exc), _unverified_claims(token), verified=True) from None
        except jwt.PyJWTError as exc:
            raise Refusal(_reason(exc), _unverified_claims(token)) from None
        client_id = claims.get("client_id") or claims.get("azp") or ""
        return AccessToken(
            token=token,
            client_id=_clean(client_id),
            scopes=_scopes(claims),
            expires_at=int(claims["exp"]),
            resource=self.config.audience,
            subject=_clean(claims["sub"]) if claims.get("sub") else None,
            claims=_audit_claims(claims),
        )


def _reason(exc: jwt.PyJWTError) -> str:
    reasons = {
        jwt.ExpiredSignatureError: "expired",
        jwt.ImmatureSignatureError: "not yet valid (nbf)",
        jwt.InvalidAudienceError: "wrong audience",
        jwt.InvalidIssuerError: "wrong issuer",
        jwt.InvalidSignatureError: "bad signature",
        jwt.InvalidAlgorithmError: "algorithm not allowed for this key",
    }
    for kind, reason in reasons.items():
        if isinstance(exc, kind):
            return reason
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing claim {exc.claim}"
    return "malformed token"
