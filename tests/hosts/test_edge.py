"""The edge (roles/edge) as clients see it: public TLS policy, headers, redirect, color.

Requests go from the operator machine to the edge's published port and lab address.
"""

from __future__ import annotations

import http.client
import socket
import ssl

import pytest

from mcpdeploy.settings import COLORS
from roles.edge import ACTIVE_DIR

EXPECTED_HEADERS = {
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'self'",
    "referrer-policy": "no-referrer",
    "x-xss-protection": "0",
}


@pytest.fixture(scope="module")
def edge(topology):
    hosts = [h for h in topology.values() if h["role"] == "edge"]
    if not hosts:
        pytest.fail("no edge host in the topology (run against the lab or pass --lab-status)")
    return hosts[0]


@pytest.fixture(scope="module")
def lab_ca(pytestconfig):
    from mcpdeploy.lab import STATE_DIR

    return str(STATE_DIR / "ca.crt")


def https_get(lab_ca: str, path: str, settings, *, version=None) -> http.client.HTTPResponse:
    context = ssl.create_default_context(cafile=lab_ca)
    if version is not None:
        context.minimum_version = context.maximum_version = version
    connection = http.client.HTTPSConnection(
        "127.0.0.1", settings.lab.https_port, context=context, timeout=10
    )
    connection.request("GET", path, headers={"Host": settings.domain})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_edge_accepts_tls_12_and_13_with_a_certificate_the_lab_ca_signed(lab_ca, settings, version):
    assert https_get(lab_ca, "/health", settings, version=version).status == 200


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_edge_refuses_tls_10_and_11(settings, version):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
    # OpenSSL's default security level forbids these versions on the client too: lower it.
    context.set_ciphers("ALL:@SECLEVEL=0")
    address = ("127.0.0.1", settings.lab.https_port)
    with socket.create_connection(address, timeout=10) as raw, pytest.raises(ssl.SSLError) as err:
        context.wrap_socket(raw, server_hostname=settings.domain).close()
    # The server's alert, not this client refusing to offer the version.
    assert err.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", err.value


@pytest.mark.parametrize("path", ["/health", "/no-such-page"])
def test_security_headers_are_on_every_response(lab_ca, settings, path):
    response = https_get(lab_ca, path, settings)
    for name, value in EXPECTED_HEADERS.items():
        assert response.getheader(name) == value, (path, response.status, name)
    assert response.getheader("server") == "nginx"  # server_tokens off: no version


def test_edge_names_the_active_color(lab_ca, settings):
    assert https_get(lab_ca, "/health", settings).getheader("x-mcp-color") == settings.active_color


def test_only_the_active_colors_flag_exists(edge, lab_hosts, settings):
    """The edge serves the color whose flag exists (a switch does not reload nginx)."""
    host = lab_hosts[edge["name"]]
    present = {color for color in COLORS if host.file(f"{ACTIVE_DIR}/{color}").is_file}
    assert present == {settings.active_color}


def test_plain_http_redirects_to_https_except_health(edge, settings):
    connection = http.client.HTTPConnection(edge["address"], 80, timeout=10)
    connection.request("GET", "/api/v1/mcp/", headers={"Host": settings.domain})
    response = connection.getresponse()
    response.read()
    assert response.status == 301
    assert response.getheader("location") == f"https://{settings.domain}/api/v1/mcp/"
    connection.request("GET", "/health", headers={"Host": settings.domain})
    response = connection.getresponse()
    assert response.status != 301
    connection.close()
