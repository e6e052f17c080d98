"""mcp_service.tokens against a real issuer: an HTTPS server (its own CA) started here,
serving RFC 8414 metadata (or only OpenID discovery) and a JWKS it can rotate or stop.

Tokens are signed with real RSA keys by PyJWT; forged ones by whoever the test plays.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from issuer_harness import AUDIENCE, Issuer, SigningKey
from mcp_service import metrics
from mcp_service.config import AuthConfig
from mcp_service.tokens import IssuerKeys, Refusal, TokenVerifier, looks_like_jwt, metadata_urls


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[Issuer]:
    server = Issuer(tmp_path)
    yield server
    server.stop()


def verifier_for(issuer: Issuer, refetch_seconds: float = 5.0, **config: Any) -> TokenVerifier:
    settings = AuthConfig(
        mode="oauth", issuer=issuer.url, audience=AUDIENCE, ca_file=str(issuer.ca), **config
    )
    return TokenVerifier(settings, IssuerKeys(settings, refetch_seconds=refetch_seconds))


def refused(verifier: TokenVerifier, token: str) -> Refusal:
    with pytest.raises(Refusal) as caught:
        asyncio.run(verifier.check(token))
    return caught.value


def test_a_valid_token_gives_its_scopes_subject_and_client(issuer: Issuer):
    access = asyncio.run(verifier_for(issuer).check(issuer.token(scope="mcp:tools extra")))
    assert access.scopes == ["mcp:tools", "extra"]
    assert (access.subject, access.client_id, access.resource) == ("user-1", "client-1", AUDIENCE)
    assert access.claims and access.claims["iss"] == issuer.url
    assert issuer.jwks_fetches == 1


def test_openid_discovery_is_the_fallback(tmp_path: Path):
    server = Issuer(tmp_path, openid_only=True)
    try:
        access = asyncio.run(verifier_for(server).check(server.token(scp=["mcp:tools"])))
        assert access.scopes == ["mcp:tools"]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("claims", "reason", "verified"),
    [
        ({"iss": "https://elsewhere.example.test"}, "wrong issuer", True),
        ({"aud": "https://other.example.test/api/v1/mcp"}, "wrong audience", True),
        ({"exp": int(time.time()) - 3600}, "expired", True),
        ({"nbf": int(time.time()) + 3600}, "not yet valid (nbf)", True),
        ({"exp": None}, "missing claim exp", True),
    ],
)
def test_claims_outside_the_rules_are_refused_with_their_reason(
    issuer: Issuer, claims: dict[str, Any], reason: str, verified: bool
):
    refusal = refused(verifier_for(issuer), issuer.token(**claims))
    assert (refusal.reason, refusal.verified) == (reason, verified)
    # What the audit log may record: the subject, flagged as the issuer's.
    assert refusal.claims["sub"] == "user-1"


def test_forged_tokens_are_refused_and_their_claims_flagged_unverified(issuer: Issuer):
    verifier = verifier_for(issuer)
    good = issuer.token()
    header, payload, signature = good.split(".")
    # Someone else's key, the issuer's key id.
    other = SigningKey()
    other.kid = issuer.keys[0].kid
    forged = refused(verifier, issuer.token(key=other, sub="admin"))
    assert (forged.reason, forged.verified, forged.claims["sub"]) == (
        "bad signature",
        False,
        "admin",
    )
    # alg=none, and HS256 "signed" with the issuer's public key as the secret.
    assert "not allowed" in refused(verifier, issuer.unsigned_token()).reason
    assert "not allowed" in refused(verifier, issuer.hs256_token()).reason
    assert refused(verifier, f"{header}.{payload}.{signature[:-4]}AAAA").verified is False
    assert refused(verifier, "not-a-token").reason == "not a JWT"


def test_a_new_key_is_fetched_once_and_unknown_ids_cost_the_issuer_one_request(issuer: Issuer):
    verifier = verifier_for(issuer, refetch_seconds=0.5)

    async def scenario() -> None:
        await verifier.check(issuer.token())
        assert issuer.jwks_fetches == 1
        # The issuer rotates: a token with the new key id makes the service ask again, once.
        new = SigningKey()
        issuer.keys.append(new)
        await asyncio.sleep(0.6)
        await verifier.check(issuer.token(key=new))
        assert issuer.jwks_fetches == 2
        # 20 tokens with key ids the issuer never had, within a second: at most one fetch.
        await asyncio.sleep(0.6)
        stranger, strangers = SigningKey(), []
        for _ in range(20):
            stranger.kid = uuid.uuid4().hex[:12]
            strangers.append(issuer.token(key=stranger))
        results = await asyncio.gather(
            *(verifier.check(token) for token in strangers), return_exceptions=True
        )
        assert all(isinstance(r, Refusal) and r.reason == "unknown signing key" for r in results)
        assert issuer.jwks_fetches <= 3

    asyncio.run(scenario())


def test_with_the_issuer_down_known_keys_work_and_unknown_ones_are_refused(issuer: Issuer):
    verifier = verifier_for(issuer, refetch_seconds=0.1)
    known = issuer.token()
    stranger = issuer.token(key=SigningKey())

    async def scenario() -> None:
        await verifier.check(known)
        issuer.stop()
        before = metrics.AUTH_ISSUER_ERRORS._value.get()
        await asyncio.sleep(0.2)
        refusal = None
        try:
            await verifier.check(stranger)
        except Refusal as exc:
            refusal = exc
        assert refusal is not None and refusal.reason == "unknown signing key"
        assert metrics.AUTH_ISSUER_ERRORS._value.get() == before + 1
        # Cached keys keep working through the outage.
        assert (await verifier.check(known)).subject == "user-1"

    asyncio.run(scenario())


def test_the_metadata_must_name_the_configured_issuer(issuer: Issuer):
    # Served at the issuer's own metadata URL, naming another issuer (RFC 8414 section 3.3).
    issuer.named = issuer.url + "/impostor"
    verifier = verifier_for(issuer)
    assert refused(verifier, issuer.token()).reason == "unknown signing key"
    assert issuer.jwks_fetches == 0


def test_an_issuer_without_the_stack_ca_is_not_trusted(issuer: Issuer):
    settings = AuthConfig(mode="oauth", issuer=issuer.url, audience=AUDIENCE)
    verifier = TokenVerifier(settings)  # the system store only
    assert refused(verifier, issuer.token()).reason == "unknown signing key"


def test_shapes_and_metadata_locations():
    assert looks_like_jwt("a.b.c") and not looks_like_jwt("0123abcd" * 8)
    assert not looks_like_jwt("a.b.c" + "x" * 9000)
    assert metadata_urls("https://id.example/tenant") == [
        "https://id.example/.well-known/oauth-authorization-server/tenant",
        "https://id.example/tenant/.well-known/openid-configuration",
    ]


def test_an_old_cache_is_refreshed_behind_a_known_key_never_in_its_way(issuer: Issuer):
    verifier = verifier_for(issuer, refetch_seconds=0.1, jwks_cache_seconds=0.2)
    token = issuer.token()

    async def scenario() -> None:
        await verifier.check(token)
        await asyncio.sleep(0.3)
        # The cache is past its period: the known key answers at once, the refresh follows.
        await verifier.check(token)
        assert issuer.jwks_fetches == 1
        await asyncio.sleep(0.3)
        assert issuer.jwks_fetches == 2
        # The issuer gone and the cache old again: still answered from the cache.
        issuer.stop()
        before = metrics.AUTH_ISSUER_ERRORS._value.get()
        await asyncio.sleep(0.3)
        assert (await verifier.check(token)).subject == "user-1"
        await asyncio.sleep(0.5)
        assert metrics.AUTH_ISSUER_ERRORS._value.get() == before + 1

    asyncio.run(scenario())
