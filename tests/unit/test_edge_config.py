"""The edge's rendered configuration passes a real nginx -t and sends traffic to one color."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
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
