"""`mcpdeploy ops disable|enable|rotate-key|maintenance` against the lab, seen through the edge
(https://127.0.0.1:8443) as a client sees it.

Each test puts the lab back whatever happens: the MCP API enabled, maintenance off, and a
working API key in the lab's key file, deployed to the hosts.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest

# APP_HOSTS: the hosts whose environment holds the API key (roles/app), where a rotation
# is deployed.
from release_harness import APP_HOSTS, SWITCH_SECONDS

from mcpdeploy.settings import load_settings

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MCP = "/api/v1/mcp/"
CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "list_posts", "arguments": {"limit": 1}},
}
# Rotation test: the old key's grace period (18 s), short enough to watch it end and long
# enough for a client calling once a second to switch keys within it.
GRACE_HOURS = 0.005


def run(*argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def ops(*args: str) -> subprocess.CompletedProcess[str]:
    return run(str(BIN / "mcpdeploy"), "ops", *args, timeout=300)


def deploy(*limit: str) -> list[dict]:
    """``pyinfra -y --json [--limit HOST] hosts/lab.py deploy.py``: its per-operation results."""
    limits = [arg for host in limit for arg in ("--limit", host)]
    result = run(
        str(BIN / "pyinfra"), "-y", "--json", *limits, "hosts/lab.py", "deploy.py", timeout=1800
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)["results"]["operations"]


@pytest.fixture(scope="module")
def lab() -> dict:
    result = run(str(BIN / "mcpdeploy"), "lab", "status", "--json")
    doc = json.loads(result.stdout)
    assert doc["up"] and doc["api_key_file"], doc
    return doc


@pytest.fixture(scope="module")
def client(lab) -> Iterator[httpx2.Client]:
    trust = ssl.create_default_context(cafile=lab["ca_cert"])
    with httpx2.Client(base_url=lab["url"], verify=trust, timeout=15) as http:
        yield http


class Key(str):
    """An API key that shows as its prefix only: pytest prints the arguments of a failed
    assertion, and a key must not land in a test log either."""

    def __repr__(self) -> str:
        return f"<key {self[:8]}...>"


def key_now(lab: dict) -> Key:
    return Key(Path(lab["api_key_file"]).read_text().strip())


def mcp_call(client: httpx2.Client, key: str) -> httpx2.Response:
    """One MCP tools/call with ``key``, as a client of the stateless transport sends it."""
    return client.post(
        MCP,
        json=CALL,
        headers={
            "Authorization": f"Bearer {key}",
            "Accept": "application/json, text/event-stream",
        },
    )


def poll(
    probe: Callable[[], httpx2.Response],
    done: Callable[[httpx2.Response], bool],
    bound: float,
    every: float = 0.3,
) -> tuple[httpx2.Response, float]:
    """Call ``probe`` until ``done`` or ``bound`` seconds: the last answer and the time taken.

    Every call counts against the service's per-client rate limits (100 a minute): keep
    ``bound / every`` small.
    """
    started = time.monotonic()
    while True:
        response = probe()
        if done(response) or time.monotonic() - started > bound:
            return response, time.monotonic() - started
        time.sleep(every)


def client_limited(response: httpx2.Response) -> bool:
    """A 429 of a per-client limit (the service's or nginx's), not of the API key's.

    Every client on this machine reaches the edge from one address (the lab bridge's
    gateway), so they share one per-client budget, which other traffic may have spent
    for this minute. Such a 429 says nothing about the key.
    """
    return response.status_code == 429 and "per API key" not in response.text


def within_client_limit(probe: Callable[[], httpx2.Response]) -> httpx2.Response:
    """``probe``'s first answer that is not a per-client 429 (the window resets each minute)."""
    response, _ = poll(probe, lambda r: not client_limited(r), 65, every=5)
    return response


def ssh(lab: dict, host: str, command: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", lab["ssh_config"], host, command],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def test_key(lab) -> Iterator[str]:
    """A key of this module's own, revoked afterwards.

    The lab's key is shared: load tests may have spent its hourly budget (429 until the
    hour turns), and these tests need calls that reach the switches.
    """
    made = ssh(lab, "app-blue", "docker exec mcp-service mcp-service keys create --name lab-test")
    key = Key(json.loads(made.stdout)["key"])
    yield key
    ssh(lab, "app-blue", f"docker exec mcp-service mcp-service keys revoke {key[:8]}")


# -- the kill switch -------------------------------------------------------------------------


@pytest.fixture
def kill_switch() -> Iterator[None]:
    yield
    result = ops("enable")
    assert result.returncode == 0, result.stderr


def test_disable_turns_mcp_calls_to_503_within_5_s_and_enable_restores_them(
    lab, client, test_key, kill_switch
):
    key = test_key
    assert within_client_limit(lambda: mcp_call(client, key)).status_code == 200

    result = ops("disable")
    returned = time.monotonic()
    assert result.returncode == 0, result.stderr
    assert "MCP API disabled" in result.stdout
    response, elapsed = poll(
        lambda: mcp_call(client, key), lambda r: r.status_code == 503, 10, every=0.5
    )
    assert response.status_code == 503 and elapsed <= SWITCH_SECONDS, (response.text, elapsed)
    assert response.json()["error"]["code"] == -32004 and response.headers["retry-after"]
    # The promise is "every worker within 5 s" (the lab's: SWITCH_SECONDS): from then on,
    # no call gets through.
    time.sleep(max(0.0, returned + SWITCH_SECONDS - time.monotonic()))
    assert [mcp_call(client, key).status_code for _ in range(4)] == [503] * 4

    # Liveness and readiness stay truthful: up, and saying the API is switched off.
    assert client.get("/health").status_code == 200
    health = client.get("/health/mcp")
    assert health.status_code == 200 and health.json()["status"] == "disabled"
    # The idle color (not behind the edge now) sees the same switch.
    idle = "green" if load_settings("lab").active_color == "blue" else "blue"
    seen = ssh(
        lab,
        f"app-{idle}",
        "python3 -c 'import urllib.request; "
        'print(urllib.request.urlopen("http://127.0.0.1:3000/health/mcp").read().decode())\'',
    )
    assert json.loads(seen.stdout)["status"] == "disabled", seen.stderr

    result = ops("enable")
    assert result.returncode == 0, result.stderr
    response, elapsed = poll(
        lambda: mcp_call(client, key), lambda r: r.status_code == 200, 10, every=0.5
    )
    assert response.status_code == 200 and elapsed <= SWITCH_SECONDS, (response.text, elapsed)
    assert client.get("/health/mcp").json()["status"] == "ok"


# -- API key rotation ------------------------------------------------------------------------


@pytest.fixture
def key_restored(lab, client) -> Iterator[dict]:
    """Afterwards the key file's key works and is deployed, whatever the test did."""
    before = key_now(lab)
    progress = {"deployed": False}
    yield progress
    if within_client_limit(lambda: mcp_call(client, key_now(lab))).status_code == 401:
        result = ops("rotate-key", "--grace-hours", "0")
        assert result.returncode == 0, result.stderr
    if key_now(lab) != before and not progress["deployed"]:
        deploy(*APP_HOSTS)
    assert within_client_limit(lambda: mcp_call(client, key_now(lab))).status_code == 200


class KeyUser(threading.Thread):
    """A client calling the MCP API about once a second with whatever key it holds now."""

    def __init__(self, client: httpx2.Client, key: str) -> None:
        super().__init__(daemon=True)
        self.http, self.key = client, key
        self.stop = threading.Event()
        self.seen: list[tuple[float, Key, int, str]] = []  # (time, key, status, body)

    def run(self) -> None:
        while not self.stop.is_set():
            key = self.key
            response = mcp_call(self.http, key)
            status = 0 if client_limited(response) else response.status_code
            self.seen.append((time.monotonic(), key, status, response.text[:200]))
            self.stop.wait(1.0)

    def served(self, key: str, after: float = 0.0) -> int:
        """How many calls with ``key`` since ``after`` got a 200."""
        return sum(1 for t, k, s, _ in self.seen if k == key and s == 200 and t > after)


def logs_since(lab: dict, host: str, since: int) -> str:
    """``host``'s journal and the service container's output since ``since`` (epoch s)."""
    command = f"journalctl --no-pager -o cat --since @{since}"
    if host.startswith("app-"):
        command += f"; docker logs --since {since} mcp-service 2>&1"
    return ssh(lab, host, command).stdout


def run_performance_check(lab: dict, host: str) -> str:
    """Run ``host``'s ``mcp-perf-check`` now, as its timer would, and return what it logged.

    ``systemctl start`` of a oneshot returns when the run is over; a run that alerts fails
    (exit 1), which is fine here: what matters is whether it could read the metrics.
    """
    unit = "mcp-perf-check.service"
    result = ssh(
        lab,
        host,
        f"since=$(date +%s); systemctl start {unit}; "
        f"journalctl --no-pager -o cat -u {unit} --since @$since",
    )
    return result.stdout + result.stderr


def test_rotate_key_a_client_switching_within_the_grace_period_never_sees_a_401(
    lab, client, key_restored
):
    """Two rotations, the 18 s grace period waited out, the performance check on both app
    hosts and a deploy of them: about 45 s of lab time."""
    # The lab's key is shared and load tests may have spent its hourly budget (429): start
    # from a fresh deployment key, issued by a rotation without grace period, which must
    # refuse the previous key within 5 s (what an operator does with a leaked key).
    leaked = key_now(lab)
    first = ops("rotate-key", "--grace-hours", "0")
    assert first.returncode == 0, first.stderr
    refused, elapsed = poll(
        lambda: mcp_call(client, leaked), lambda r: r.status_code == 401, 10, every=0.5
    )
    assert refused.status_code == 401 and elapsed <= SWITCH_SECONDS, (refused.text, elapsed)
    old = key_now(lab)
    since = int(time.time()) - 1
    grace = GRACE_HOURS * 3600
    user = KeyUser(client, old)
    user.start()
    try:
        started = time.monotonic()
        result = ops("rotate-key", "--grace-hours", str(GRACE_HOURS))
        rotated = time.monotonic()
        assert result.returncode == 0, result.stderr
        new = key_now(lab)
        assert new != old
        # Where the key is, never the key.
        assert lab["api_key_file"] in result.stdout
        shown = any(k in result.stdout + result.stderr for k in (old, new))
        assert not shown
        assert oct(Path(lab["api_key_file"]).stat().st_mode & 0o777) == "0o600"
        # The client keeps the old key a little while, then switches within the grace period.
        while user.served(old, after=rotated) < 3:
            assert time.monotonic() - rotated < grace / 2, user.seen
            time.sleep(0.2)
        user.key = new
        while user.served(new) < 3:
            assert time.monotonic() - rotated < grace, user.seen
            time.sleep(0.2)
    finally:
        user.stop.set()
        user.join(timeout=30)
    # Every answer was a 200 (or a per-client 429, status 0 here, that says nothing of keys).
    assert {status for _, _, status, _ in user.seen} <= {200, 0}, user.seen

    # After the grace period the old key is refused, and not a moment before it ended.
    refused, _ = poll(
        lambda: mcp_call(client, old), lambda r: r.status_code == 401, grace + 20, every=2
    )
    assert refused.status_code == 401, refused.text
    assert time.monotonic() - started >= grace
    assert within_client_limit(lambda: mcp_call(client, new)).status_code == 200

    # No deploy yet, and every key the hosts were deployed with is refused: the performance
    # check on each app host still reads the metrics, with a token of its own.
    for host in ("app-blue", "app-green"):
        logged = run_performance_check(lab, host)
        assert "HTTP Error 401" not in logged, (host, logged)
        read = "MCP performance within thresholds" in logged or "MCP performance alert" in logged
        assert read, (host, logged)

    # The key is in no log: the journals, the service's output, the audit log, /var/log.
    for host in ("edge", "app-blue", "app-green", "data"):
        logs = logs_since(lab, host, since)
        logged = old in logs or new in logs
        assert not logged, host
        found = ssh(lab, host, "grep -rlF -f - /var/log", stdin=f"{old}\n{new}\n")
        assert found.returncode == 1, (host, found.stdout)
    audit = ssh(
        lab,
        "data",
        "sudo -u postgres psql -d railspress_production -Atc "
        "\"SELECT event || ' ' || details::text FROM audit_log "
        "WHERE occurred_at > now() - interval '15 minutes'\"",
    )
    assert f'key.rotate {{"name": "env:current", "prefix": "{new[:8]}"' in audit.stdout
    audited = old in audit.stdout or new in audit.stdout
    assert not audited

    # A redeploy of the app hosts writes the new key into their environment and revives
    # nothing.
    deploy(*APP_HOSTS)
    key_restored["deployed"] = True
    assert within_client_limit(lambda: mcp_call(client, new)).status_code == 200
    assert within_client_limit(lambda: mcp_call(client, old)).status_code == 401


# -- maintenance mode ------------------------------------------------------------------------


@pytest.fixture
def maintenance() -> Iterator[None]:
    yield
    result = ops("maintenance", "off")
    assert result.returncode == 0, result.stderr


def nginx_processes(lab: dict) -> str:
    """The edge's nginx master and worker PIDs: a reload or restart changes the workers."""
    return ssh(lab, "edge", "pgrep -d, nginx").stdout.strip()


def assert_in_maintenance(response: httpx2.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["retry-after"]) > 0
    assert response.headers["strict-transport-security"]  # security headers on it too
    body = response.json()
    assert body["error"]["data"]["maintenance"] is True and body["jsonrpc"] == "2.0"


def test_maintenance_answers_mcp_and_api_routes_with_503_while_health_stays_true(
    lab, client, test_key, maintenance
):
    key = test_key
    active = load_settings("lab").active_color
    processes = nginx_processes(lab)

    result = ops("maintenance", "on")
    assert result.returncode == 0, result.stderr
    assert "maintenance ON" in result.stdout
    assert_in_maintenance(mcp_call(client, key))
    assert_in_maintenance(client.get(f"{MCP}session/handshake"))
    assert_in_maintenance(client.get("/api/v1/mcp/metrics"))
    # Health still reaches the active color and reports it as it is.
    live = client.get("/health")
    assert live.status_code == 200 and live.headers["x-mcp-color"] == active
    ready = client.get("/health/mcp")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    status = ops("maintenance", "status", "--json")
    assert [(s["host"], s["on"]) for s in json.loads(status.stdout)] == [("edge", True)]

    result = ops("maintenance", "off")
    assert result.returncode == 0, result.stderr
    assert "maintenance off" in result.stdout
    assert within_client_limit(lambda: mcp_call(client, key)).status_code == 200
    status = ops("maintenance", "status", "--json")
    assert [(s["host"], s["on"]) for s in json.loads(status.stdout)] == [("edge", False)]
    # Toggled without touching nginx: the same processes served throughout.
    assert nginx_processes(lab) == processes


def test_maintenance_survives_a_redeploy_that_reports_no_change(lab, client, test_key, maintenance):
    result = ops("maintenance", "on")
    assert result.returncode == 0, result.stderr
    operations = deploy("edge")
    changed = {op["name"] for op in operations if op["success"]}
    assert changed == set()
    assert_in_maintenance(mcp_call(client, test_key))
    assert "maintenance ON" in ops("maintenance", "status").stdout
