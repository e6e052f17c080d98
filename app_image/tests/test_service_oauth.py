"""MCP_AUTH_MODE through the running service: OAuth access tokens from a real issuer
(issuer_harness, HTTPS with its own CA), API keys, the challenges, the Protected Resource
Metadata, and what the audit log records of a refusal."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import psycopg
import pytest
from issuer_harness import Issuer, SigningKey
from mcp_service.middleware import PRM_PATHS
from service_harness import ServiceProcess, wait_until

AUDIENCE = "https://mcp.example.test/api/v1/mcp"
PRM_URL = "https://mcp.example.test/.well-known/oauth-protected-resource/api/v1/mcp"
METRICS_TOKEN = "metrics-" + "m" * 40
TOOLS_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issuer]:
    server = Issuer(tmp_path_factory.mktemp("issuer"))
    yield server
    server.stop()


def start(base_env: dict[str, str], issuer: Issuer, mode: str) -> ServiceProcess:
    return ServiceProcess(
        dict(
            base_env,
            MCP_AUTH_MODE=mode,
            MCP_AUTH_ISSUER=issuer.url,
            MCP_AUTH_AUDIENCE=AUDIENCE,
            MCP_AUTH_CA_FILE=str(issuer.ca),
            MCP_METRICS_TOKEN=METRICS_TOKEN,
        )
    )


@pytest.fixture(scope="module")
def oauth(base_env: dict[str, str], issuer: Issuer) -> Iterator[ServiceProcess]:
    process = start(base_env, issuer, "oauth")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def both(base_env: dict[str, str], issuer: Issuer) -> Iterator[ServiceProcess]:
    process = start(base_env, issuer, "both")
    yield process
    process.stop()


@contextlib.contextmanager
def own_issuer(
    base_env: dict[str, str], directory: Path
) -> Iterator[tuple[Issuer, ServiceProcess]]:
    """An issuer and an oauth service of their own, the service's first token served."""
    issuer = Issuer(directory)
    process = start(base_env, issuer, "oauth")
    try:
        assert call(process, **bearer(issuer.token(aud=AUDIENCE))).status_code == 200
        yield issuer, process
    finally:
        process.stop()
        issuer.stop()


def call(service: ServiceProcess, **headers: str) -> httpx2.Response:
    return httpx2.post(
        service.mcp_url, json=TOOLS_LIST, headers={**MCP_HEADERS, **headers}, timeout=30
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def challenge(response: httpx2.Response) -> dict[str, str]:
    """The WWW-Authenticate parameters of a Bearer challenge."""
    scheme, _, rest = response.headers["www-authenticate"].partition(" ")
    assert scheme == "Bearer", response.headers["www-authenticate"]
    pairs = (part.strip().split("=", 1) for part in rest.split(", "))
    return {name: value.strip('"') for name, value in pairs}


def test_a_valid_token_calls_tools_on_both_endpoint_paths(oauth: ServiceProcess, issuer: Issuer):
    token = issuer.token(aud=AUDIENCE)
    for url in (oauth.mcp_url, oauth.mcp_url.rstrip("/")):
        response = httpx2.post(url, json=TOOLS_LIST, headers={**MCP_HEADERS, **bearer(token)})
        assert response.status_code == 200, response.text
        assert response.json()["result"]["tools"]
    assert token not in oauth.logs()


def test_no_token_is_challenged_with_the_metadata_and_scope_and_no_error(oauth: ServiceProcess):
    for url in (oauth.mcp_url, oauth.mcp_url.rstrip("/")):
        response = httpx2.post(url, json=TOOLS_LIST, headers=MCP_HEADERS)
        assert response.status_code == 401
        assert challenge(response) == {"resource_metadata": PRM_URL, "scope": "mcp:tools"}


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "https://other.example.test/api/v1/mcp"},
        {"iss": "https://elsewhere.example.test"},
        {"exp": int(time.time()) - 3600},
        {"nbf": int(time.time()) + 3600},
    ],
    ids=["wrong-aud", "wrong-iss", "expired", "future-nbf"],
)
def test_tokens_outside_the_rules_are_invalid_token(
    oauth: ServiceProcess, issuer: Issuer, claims: dict
):
    token = issuer.token(**{"aud": AUDIENCE, **claims})
    response = call(oauth, **bearer(token))
    assert response.status_code == 401, response.text
    assert challenge(response) == {
        "resource_metadata": PRM_URL,
        "scope": "mcp:tools",
        "error": "invalid_token",
    }
    assert token not in oauth.logs()


def test_forged_tokens_and_an_api_key_are_invalid_token(
    oauth: ServiceProcess, issuer: Issuer, api_key: str
):
    forger = SigningKey()
    forger.kid = issuer.keys[0].kid
    for headers in (
        bearer(issuer.token(key=forger, aud=AUDIENCE)),  # someone else's key
        bearer(issuer.unsigned_token(aud=AUDIENCE)),  # alg=none
        bearer(issuer.hs256_token(aud=AUDIENCE)),  # HS256 keyed with the public key
        bearer(api_key),
    ):
        response = call(oauth, **headers)
        assert response.status_code == 401
        assert challenge(response)["error"] == "invalid_token"
    assert call(oauth, **{"X-API-Key": api_key}).status_code == 401


def test_a_token_without_the_scope_is_403_insufficient_scope(oauth: ServiceProcess, issuer: Issuer):
    response = call(oauth, **bearer(issuer.token(aud=AUDIENCE, scope="profile")))
    assert response.status_code == 403
    assert challenge(response) == {
        "error": "insufficient_scope",
        "resource_metadata": PRM_URL,
        "scope": "mcp:tools",
    }


def test_health_handshake_and_metadata_need_no_credential_metrics_its_token(
    oauth: ServiceProcess,
):
    assert httpx2.get(f"{oauth.url}/health/mcp").status_code == 200
    assert httpx2.get(f"{oauth.url}/api/v1/mcp/session/handshake").status_code == 200
    metrics = f"{oauth.url}/api/v1/mcp/metrics"
    assert httpx2.get(metrics, headers=bearer(METRICS_TOKEN)).status_code == 200
    assert httpx2.get(metrics).status_code == 401
    for path in PRM_PATHS:
        response = httpx2.get(oauth.url + path)
        assert response.status_code == 200, path
        assert response.json() == {
            "resource": AUDIENCE,
            "authorization_servers": [oauth.env["MCP_AUTH_ISSUER"]],
            "scopes_supported": ["mcp:tools"],
            "bearer_methods_supported": ["header"],
        }


def test_refusals_are_audited_with_reason_and_claims_flagged_verified_or_not(
    oauth: ServiceProcess, issuer: Issuer, database_url: str
):
    marker = f"audited-{time.time_ns()}"
    wrong_audience = issuer.token(sub=marker, aud="https://other.example.test/api/v1/mcp")
    forger = SigningKey()
    forger.kid = issuer.keys[0].kid
    forged = issuer.token(key=forger, sub=marker + "-forged", aud=AUDIENCE)
    assert call(oauth, **bearer(wrong_audience)).status_code == 401
    assert call(oauth, **bearer(forged)).status_code == 401
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT details FROM audit_log WHERE event = 'auth.failure'"
            " AND details->'claims'->>'sub' LIKE %s",
            (marker + "%",),
        ).fetchall()
    found = {row[0]["claims"]["sub"]: row[0] for row in rows}
    assert found[marker]["why"] == "wrong audience" and found[marker]["verified"] is True
    assert found[marker + "-forged"]["why"] == "bad signature"
    assert found[marker + "-forged"]["verified"] is False
    assert all(wrong_audience not in json.dumps(row[0]) for row in rows)


def test_both_takes_tokens_and_api_keys(both: ServiceProcess, issuer: Issuer, api_key: str):
    assert call(both, **bearer(issuer.token(aud=AUDIENCE))).status_code == 200
    assert call(both, **bearer(api_key)).status_code == 200
    assert call(both, **{"X-API-Key": api_key}).status_code == 200
    refused = call(both, **bearer("0" * 64))
    assert refused.status_code == 401 and challenge(refused)["error"] == "invalid_token"
    for path in PRM_PATHS:
        metadata = httpx2.get(both.url + path)
        assert metadata.status_code == 200 and metadata.json()["resource"] == AUDIENCE


def test_a_rotated_signing_key_is_fetched_once_and_unknown_ids_cost_one_fetch(
    base_env: dict[str, str], tmp_path: Path
):
    """Its own issuer and service: the fetches are counted from the service's start."""
    with own_issuer(base_env, tmp_path) as (issuer, process):
        assert issuer.jwks_fetches == 1
        # The issuer starts signing with a new key: the service asks again, once (at most
        # every 5 s), and serves it.
        new = SigningKey()
        issuer.keys.append(new)
        fresh = bearer(issuer.token(key=new, aud=AUDIENCE))
        wait_until(lambda: call(process, **fresh).status_code == 200, 10, 0.5)
        assert issuer.jwks_fetches == 2
        # 20 tokens with key ids the issuer never had, at once: one fetch at most.
        stranger = SigningKey()
        tokens = []
        for _ in range(20):
            stranger.kid = f"unknown-{len(tokens)}-{time.time_ns()}"
            tokens.append(issuer.token(key=stranger, aud=AUDIENCE))
        with ThreadPoolExecutor(max_workers=20) as pool:
            statuses = list(pool.map(lambda t: call(process, **bearer(t)).status_code, tokens))
        assert statuses == [401] * 20
        assert issuer.jwks_fetches <= 3


def test_api_key_mode_answers_as_before_and_has_no_metadata(service: ServiceProcess):
    response = call(service)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="mcp"'
    assert response.content == (
        b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32001, '
        b'"message": "Unauthorized: a valid API key is required"}}'
    )
    for path in PRM_PATHS:
        missing = httpx2.get(service.url + path)
        assert missing.status_code == 404 and "OAuth is off" in missing.json()["message"]


def test_with_the_issuer_down_known_keys_work_and_new_ones_are_refused(
    base_env: dict[str, str], tmp_path: Path
):
    with own_issuer(base_env, tmp_path) as (issuer, process):
        issuer.stop()
        assert call(process, **bearer(issuer.token(aud=AUDIENCE))).status_code == 200
        stranger = bearer(issuer.token(key=SigningKey(), aud=AUDIENCE))

        def issuer_errors() -> float:
            # An unknown key id sends the service to the issuer at most every 5 s.
            assert call(process, **stranger).status_code == 401
            metrics = httpx2.get(
                f"{process.url}/api/v1/mcp/metrics", headers=bearer(METRICS_TOKEN)
            ).text
            lines = [x for x in metrics.splitlines() if x.startswith("mcp_auth_issuer_errors")]
            return sum(float(line.split()[-1]) for line in lines if "_total" in line)

        wait_until(lambda: issuer_errors() >= 1, 10, 0.5)
        # Still served with the key it had.
        assert call(process, **bearer(issuer.token(aud=AUDIENCE))).status_code == 200
