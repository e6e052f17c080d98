"""nginx on the app hosts (roles/nginx; guide: Nginx Configuration) as the edge sees it.

Every request is sent from the edge host, the only host UFW lets reach an app host's 443,
so the real-IP path is the production one: nginx trusts the edge's X-Forwarded-For and
nothing else. The client is python3 on the edge (http.client + ssl), verifying the app
host's certificate with the lab CA for the stack's domain.
"""

from __future__ import annotations

import json
import random
import re

import pytest

from roles.nginx import WORKER_CONNECTIONS

# The app-host checks `mcpdeploy release` runs on the idle color (mcpdeploy/gates.py).
pytestmark = pytest.mark.gate

LAB_CA_ON_HOSTS = "/usr/local/share/ca-certificates/mcpdeploy-lab-ca.crt"
EXPECTED_HEADERS = {
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'self'",
    "referrer-policy": "no-referrer",
    "x-xss-protection": "0",
}

# Send a list of requests over one keep-alive TLS connection (reconnecting if the server
# closes it); print [[status, {header: value}], ...]. Spec items: method, path, headers,
# body_bytes, count.
CLIENT = r"""
import http.client, json, socket, ssl, sys
address, domain, ca, spec = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
context = ssl.create_default_context(cafile=ca)
class Connection(http.client.HTTPSConnection):
    def connect(self):  # to the address, with SNI and certificate name the stack's domain
        raw = socket.create_connection((address, 443), self.timeout)
        self.sock = context.wrap_socket(raw, server_hostname=domain)
def connect():
    return Connection(address, 443, timeout=10)
connection, results = connect(), []
for item in spec:
    for _ in range(item.get("count", 1)):
        body = b"x" * item.get("body_bytes", 0) if item.get("body_bytes") else None
        headers = {"Host": domain, **item.get("headers", {})}
        try:
            connection.request(item.get("method", "GET"), item["path"], body=body, headers=headers)
            response = connection.getresponse()
        except (ConnectionError, http.client.HTTPException):
            connection.close()
            connection = connect()
            connection.request(item.get("method", "GET"), item["path"], body=body, headers=headers)
            response = connection.getresponse()
        response.read()
        results.append([response.status, {k.lower(): v for k, v in response.getheaders()}])
        if response.will_close:
            connection.close()
            connection = connect()
print(json.dumps(results))
"""

# Handshake with one TLS version; print "ok <version> <alpn>" or the error.
TLS_PROBE = r"""
import socket, ssl, sys
address, domain, ca, version = sys.argv[1:5]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.load_verify_locations(ca)
# Let the client offer old versions, so a refusal can only come from the server.
context.set_ciphers("DEFAULT:@SECLEVEL=0")
context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
context.set_alpn_protocols(["h2", "http/1.1"])
try:
    with socket.create_connection((address, 443), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=domain) as tls:
            print("ok", tls.version(), tls.selected_alpn_protocol())
except (ssl.SSLError, OSError) as exc:
    print("refused", exc)
"""


@pytest.fixture(scope="module")
def edge_host(lab_hosts, topology):
    names = [name for name, h in topology.items() if h["role"] == "edge"]
    if not names:
        pytest.skip("no edge host in the topology")
    return lab_hosts[names[0]]


@pytest.fixture(scope="module", params=["app-blue", "app-green"])
def app(request, lab_hosts, topology):
    """Each app host: (name, address, testinfra host)."""
    name = request.param
    if name not in topology:
        pytest.skip(f"no {name} in the topology")
    return name, topology[name]["address"], lab_hosts[name]


@pytest.fixture(scope="module")
def send(edge_host, settings):
    """Run :data:`CLIENT` on the edge against an app host's address."""

    def run(address: str, spec: list[dict]) -> list[tuple[int, dict[str, str]]]:
        out = edge_host.check_output(
            "python3 -c %s %s %s %s %s",
            CLIENT, address, settings.domain, LAB_CA_ON_HOSTS, json.dumps(spec),
        )  # fmt: skip
        return [(status, headers) for status, headers in json.loads(out)]

    return run


def client_address() -> str:
    """A fresh documentation address (RFC 5737), so runs never share a rate-limit bucket."""
    return f"198.51.100.{random.randint(1, 254)}"


def test_nginx_active_enabled_and_config_valid(app):
    _, _, host = app
    assert host.service("nginx").is_running and host.service("nginx").is_enabled
    assert host.run("nginx -t").rc == 0


def test_tls_key_root_only(app):
    _, _, host = app
    key = host.file("/etc/nginx/tls/server.key")
    assert (key.user, key.group, key.mode) == ("root", "root", 0o600)
    assert host.file("/etc/nginx/tls").mode == 0o700


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_tls_12_and_13_accepted_with_http2(app, edge_host, settings, version):
    _, address, _ = app
    out = edge_host.check_output(
        "python3 -c %s %s %s %s %s", TLS_PROBE, address, settings.domain, LAB_CA_ON_HOSTS, version
    )
    assert out.startswith("ok "), out
    assert out.split()[2] == "h2", out  # guide: listen 443 ssl http2


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_10_and_11_refused_by_the_server(app, edge_host, settings, version):
    _, address, _ = app
    out = edge_host.check_output(
        "python3 -c %s %s %s %s %s", TLS_PROBE, address, settings.domain, LAB_CA_ON_HOSTS, version
    )
    # The server's protocol_version alert, not the client failing to offer the version.
    assert out.startswith("refused") and "PROTOCOL_VERSION" in out.upper(), out


def test_security_headers_on_200_404_413_and_429(app, send, settings):
    _, address, _ = app
    zone = settings.nginx_rate_limits.mcp
    burst = zone.burst + zone.rate_per_second + 10
    flood = {"X-Forwarded-For": client_address()}
    results = send(
        address,
        [
            {"path": "/health"},
            {"path": "/no-such-page"},
            {
                "method": "POST",
                "path": "/api/v1/mcp/",
                "body_bytes": settings.max_request_bytes + 1,
            },
            {"path": "/api/v1/mcp/session/handshake", "headers": flood, "count": burst},
        ],
    )
    by_status = {}
    for status, headers in results:
        by_status.setdefault(status, headers)
    assert {200, 404, 413, 429} <= set(by_status), sorted(by_status)
    for status in (200, 404, 413, 429):
        headers = by_status[status]
        missing = {k: v for k, v in EXPECTED_HEADERS.items() if headers.get(k) != v}
        assert not missing, f"HTTP {status} lacks {missing}"
        assert headers.get("server") == "nginx", headers.get("server")  # server_tokens off


def test_body_over_the_limit_gets_413(app, send, settings):
    _, address, _ = app
    [(status, _)] = send(
        address,
        [{"method": "POST", "path": "/api/v1/mcp/", "body_bytes": settings.max_request_bytes + 1}],
    )
    assert status == 413


def test_rate_limit_is_per_client_through_the_edge(app, send, settings):
    """A burst from one client gets 429s; another client behind the same edge still gets 200."""
    _, address, _ = app
    zone = settings.nginx_rate_limits.mcp
    first, second = client_address(), client_address()
    while second == first:
        second = client_address()
    path = "/api/v1/mcp/session/handshake"
    results = send(
        address,
        [
            {"path": path, "headers": {"X-Forwarded-For": first}, "count": zone.burst + 20},
            {"path": path, "headers": {"X-Forwarded-For": second}},
        ],
    )
    statuses = [status for status, _ in results]
    assert 429 in statuses[:-1], statuses
    assert statuses[-1] == 200, statuses


def test_forwarded_for_from_a_non_proxy_is_ignored(app, settings):
    """Only the edge is trusted: from elsewhere X-Forwarded-For cannot pick a bucket."""
    _, _, host = app
    # The app host itself (loopback is not a trusted proxy): every request is 127.0.0.1.
    # A user agent of its own picks this test's lines out of whatever else is logged.
    agent = f"mcpdeploy-test-{random.randint(0, 2**32)}"
    out = host.check_output(
        "python3 -c %s 127.0.0.1 %s %s %s",
        CLIENT, settings.domain, LAB_CA_ON_HOSTS,
        json.dumps([{"path": "/api/v1/mcp/session/handshake", "count": 40,
                     "headers": {"X-Forwarded-For": client_address(), "User-Agent": agent}}]),
    )  # fmt: skip
    log = host.check_output("tail -n 400 /var/log/nginx/mcp.access.log")
    ours = [entry for entry in map(json.loads, log.splitlines()) if entry["user_agent"] == agent]
    assert len(ours) == 40
    clients = {entry["client"] for entry in ours}
    assert clients == {"127.0.0.1"}, clients
    assert 429 in [status for status, _ in json.loads(out)]


def test_admin_only_from_admin_networks(app, send):
    _, address, _ = app
    [(status, _)] = send(
        address, [{"path": "/admin/", "headers": {"X-Forwarded-For": client_address()}}]
    )
    assert status == 403


def test_plain_http_redirects_to_https_except_health(app, settings):
    _, _, host = app
    probe = (
        "import http.client, sys\n"
        "c = http.client.HTTPConnection('127.0.0.1', 80, timeout=5)\n"
        "c.request('GET', sys.argv[1], headers={'Host': sys.argv[2]})\n"
        "r = c.getresponse(); print(r.status, r.getheader('Location'))\n"
    )
    health = host.check_output("python3 -c %s /health %s", probe, settings.domain)
    other = host.check_output("python3 -c %s /api/v1/mcp/ %s", probe, settings.domain)
    assert health.startswith("200"), health
    assert other == f"301 https://{settings.domain}/api/v1/mcp/", other


@pytest.mark.parametrize("role", ["edge", "app"])
def test_nginx_workers_take_thousands_of_connections(lab_hosts, topology, role):
    """Debian's 768 per worker would cap SSE streams (two sockets each at a proxy)."""
    names = [name for name, h in topology.items() if h["role"] == role]
    if not names:
        pytest.skip(f"no {role} host in the topology")
    host = lab_hosts[names[0]]
    config = host.check_output("nginx -T 2>/dev/null")
    assert re.search(rf"^\s*worker_connections {WORKER_CONNECTIONS};", config, re.M)
    # What the running workers really got, not only what the file says.
    worker = host.check_output("pgrep -f 'nginx: worker process'").split()[0]
    limits = host.file(f"/proc/{worker}/limits").content_string
    soft = int(re.search(r"^Max open files\s+(\d+)", limits, re.M).group(1))
    assert soft >= 2 * WORKER_CONNECTIONS
