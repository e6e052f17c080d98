"""The edge's rendered configuration passes a real nginx -t and sends traffic to one color."""

from __future__ import annotations

import getpass
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from mcpdeploy.lab.pki import LabCA
from mcpdeploy.settings import load_settings
from roles.edge import (
    ACTIVE_DIR,
    HTTP_CONF,
    MAINTENANCE_BODY,
    MAINTENANCE_RETRY_AFTER_SECONDS,
    SITE_CONF,
    active_flags,
    render_edge_config,
)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
COLORS = {"blue": ["172.30.77.100", "172.30.77.101"], "green": ["172.30.77.120"]}
FLAG = "/var/lib/mcp-edge/maintenance"


def render(tmp_path: Path, **overrides) -> dict[str, str]:
    settings = load_settings("lab")
    ca = LabCA(tmp_path)
    cert, key = ca.issue(tmp_path, "edge", ["mcp.lab.test", "127.0.0.1"])
    args = {
        "domain": settings.domain,
        "colors": COLORS,
        "timeouts": settings.timeouts,
        "max_request_bytes": settings.max_request_bytes,
        "maintenance_flag": FLAG,
        "certificate_path": str(cert),
        "key_path": str(key),
        "upstream_ca_path": str(ca.cert_path),
    }
    args.update(overrides)
    return render_edge_config(**args)


def nginx_t(tmp_path: Path, config: dict[str, str]) -> subprocess.CompletedProcess[str]:
    http, site = tmp_path / "http.conf", tmp_path / "site.conf"
    http.write_text(config[HTTP_CONF])
    site.write_text(config[SITE_CONF].replace("/var/log/nginx/", f"{tmp_path}/"))
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  include /etc/nginx/mime.types;\n  include {http};\n  include {site};\n}}\n"
    )
    return subprocess.run(
        [NGINX, "-t", "-c", str(main), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        check=False,
    )


def test_rendered_edge_config_passes_nginx_t(tmp_path):
    result = nginx_t(tmp_path, render(tmp_path))
    assert result.returncode == 0, result.stderr


def test_every_location_forwards_to_the_color_whose_flag_exists(tmp_path):
    """The configuration is the same for either color: a switch changes a flag file only,
    so nginx is not reloaded and no keep-alive connection is closed."""
    site = render(tmp_path)[SITE_CONF]
    assert set(re.findall(r"proxy_pass (\S+);", site)) == {"https://mcp_$mcp_color"}
    assert "add_header X-MCP-Color $mcp_color always;" in site
    # Each server picks the color per request from the flag files, and refuses without one.
    for color in COLORS:
        assert site.count(f"if (-f {ACTIVE_DIR}/{color}) {{") == 2
    assert site.count('if ($mcp_color = "") {\n        return 503;') == 2


@pytest.mark.parametrize("active", ["blue", "green"])
def test_only_the_active_colors_flag_is_present_and_it_is_written_first(active):
    flags = active_flags(active, COLORS)
    other = "green" if active == "blue" else "blue"
    assert list(flags.items()) == [
        (f"{ACTIVE_DIR}/{active}", True),
        (f"{ACTIVE_DIR}/{other}", False),
    ]


def test_both_colors_have_their_hosts_with_passive_health_checks(tmp_path):
    site = render(tmp_path)[SITE_CONF]
    for color, addresses in COLORS.items():
        block = re.search(rf"upstream mcp_{color} \{{(.*?)\}}", site, re.S)[1]
        assert re.findall(r"server (\S+):443 max_fails=3 fail_timeout=10s;", block) == addresses


def test_app_hosts_are_verified_and_client_forwarding_is_replaced(tmp_path):
    site = render(tmp_path)[SITE_CONF]
    assert site.count("proxy_ssl_verify on;") == site.count("proxy_pass ") == 3
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in site
    assert "$proxy_add_x_forwarded_for" not in site


def test_an_active_color_without_hosts_is_refused():
    with pytest.raises(ValueError, match="active color 'green' has no app hosts"):
        active_flags("green", {"blue": ["10.0.0.1"], "green": []})


def blocks(text: str, opening: str) -> list[str]:
    """The bodies of every block whose header starts with ``opening``, nested braces kept."""
    found = []
    for match in re.finditer(rf"^\s*{re.escape(opening)}[^{{;]*\{{", text, re.M):
        depth, start = 1, match.end()
        for index in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            if depth == 0:
                found.append(text[start:index])
                break
    return found


def test_upstream_security_headers_are_replaced_not_doubled(tmp_path):
    site = render(tmp_path)[SITE_CONF]
    added = set(re.findall(r"add_header (\S+) ", site)) - {"X-MCP-Color", "Retry-After"}
    for location in blocks(site, "location "):
        if "proxy_pass" in location:
            assert set(re.findall(r"proxy_hide_header (\S+);", location)) == added


def test_maintenance_answers_the_api_itself_with_json_and_retry_after(tmp_path):
    site = render(tmp_path)[SITE_CONF]
    (api,) = blocks(site, "location /api/")
    (flagged,) = blocks(api, "if ")
    assert f"if (-f {FLAG})" in api
    assert f"add_header Retry-After {MAINTENANCE_RETRY_AFTER_SECONDS} always;" in flagged
    body = re.search(r"return 503 '(.*)';", flagged)[1]
    assert json.loads(body) == MAINTENANCE_BODY
    assert "default_type application/json;" in api
    # The maintenance response carries the same security headers as every other one.
    server_headers = set(re.findall(r"^    add_header (\S+) ", site, re.M)) - {"X-MCP-Color"}
    assert server_headers <= set(re.findall(r"add_header (\S+) ", flagged))


def test_health_is_never_behind_the_maintenance_flag(tmp_path):
    config = render(tmp_path)
    site = config[SITE_CONF]
    assert site.count(f"if (-f {FLAG})") == 1 and FLAG not in config[HTTP_CONF]
    (api,) = blocks(site, "location /api/")
    others = [body for body in blocks(site, "location ") if body != api]
    assert others and all(FLAG not in body for body in others)
    # /health and /health/mcp: plain HTTP's own location, and HTTPS's catch-all.
    assert len([body for body in others if "proxy_pass https://mcp_$mcp_color;" in body]) == 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def running_edge(tmp_path):
    """The rendered edge run by a real nginx on two loopback ports (blue active, its
    upstreams refusing): (http port, https port, CA file)."""
    flags = tmp_path / "active"
    flags.mkdir()
    (flags / "blue").touch()
    config = render(tmp_path, active_dir=str(flags))
    ports = free_port(), free_port()
    site = config[SITE_CONF]
    site = site.replace("listen 80", f"listen 127.0.0.1:{ports[0]}")
    site = site.replace("listen 443", f"listen 127.0.0.1:{ports[1]}")
    # Upstreams that refuse at once (bound, never listening), whatever this machine's
    # network: a lab host's address may be up, down or unroutable here.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refusing = f"127.0.0.1:{closed.getsockname()[1]}"
    for address in (a for addresses in COLORS.values() for a in addresses):
        site = site.replace(f"server {address}:443 ", f"server {refusing} ")
    config[SITE_CONF] = site
    assert nginx_t(tmp_path, config).returncode == 0
    main = tmp_path / "nginx.conf"
    # Workers as the test's own user: they read the flag files under the private tmp_path.
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    main.write_text(main.read_text().replace("events", f"daemon off;\n{user}events", 1))
    process = subprocess.Popen([NGINX, "-c", str(main), "-e", str(tmp_path / "error.log")])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", ports[1])) == 0:
                break
        time.sleep(0.05)
    yield ports[0], ports[1], str(tmp_path / "ca.crt")
    process.terminate()
    process.wait(10)
    closed.close()


def ask(port: int, host: str, path: str, ca: str | None = None) -> tuple[int, dict[str, str]]:
    if ca:
        context = ssl.create_default_context(cafile=ca)
        # By address, as a client of the lab calls: no SNI is sent.
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path, headers={"Host": host})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}


def test_names_the_edge_does_not_serve_get_421_and_its_own_names_pass(running_edge):
    plain, tls, ca = running_edge
    for port, cafile in ((plain, None), (tls, ca)):
        status, headers = ask(port, "evil.example", "/api/v1/mcp", cafile)
        assert status == 421, (port, status)
        assert "x-mcp-color" not in headers  # nothing was proxied
        assert headers["x-content-type-options"] == "nosniff"
    assert ask(plain, "mcp.lab.test", "/api/v1/mcp")[0] == 301
    for name in ("mcp.lab.test", "127.0.0.1", "localhost"):
        # Reaches the blue upstream (refusing here: 502), whatever name the TLS
        # handshake was made for.
        status, headers = ask(tls, name, "/health", ca)
        assert (status, headers.get("x-mcp-color")) == (502, "blue"), (name, status)
