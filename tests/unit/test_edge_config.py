"""The edge's rendered configuration passes a real nginx -t and sends traffic to one color."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mcpdeploy.lab.pki import LabCA
from mcpdeploy.settings import load_settings
from roles.edge import HTTP_CONF, SITE_CONF, render_edge_config

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
COLORS = {"blue": ["172.30.77.100", "172.30.77.101"], "green": ["172.30.77.120"]}


def render(tmp_path: Path, **overrides) -> dict[str, str]:
    settings = load_settings("lab")
    ca = LabCA(tmp_path)
    cert, key = ca.issue(tmp_path, "edge", ["mcp.lab.test", "127.0.0.1"])
    args = {
        "domain": settings.domain,
        "active_color": "blue",
        "colors": COLORS,
        "timeouts": settings.timeouts,
        "max_request_bytes": settings.max_request_bytes,
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


@pytest.mark.parametrize("active", ["blue", "green"])
def test_every_location_forwards_to_the_active_color_only(tmp_path, active):
    site = render(tmp_path, active_color=active)[SITE_CONF]
    targets = set(re.findall(r"proxy_pass https://mcp_(\w+);", site))
    assert targets == {active}
    assert f"add_header X-MCP-Color {active} always;" in site


def test_both_colors_have_their_hosts_with_passive_health_checks(tmp_path):
    site = render(tmp_path)[SITE_CONF]
    for color, addresses in COLORS.items():
        block = re.search(rf"upstream mcp_{color} \{{(.*?)\}}", site, re.S)[1]
        assert re.findall(r"server (\S+):443 max_fails=3 fail_timeout=10s;", block) == addresses


def test_app_hosts_are_verified_and_client_forwarding_is_replaced(tmp_path):
    site = render(tmp_path)[SITE_CONF]
    assert site.count("proxy_ssl_verify on;") == 2
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in site
    assert "$proxy_add_x_forwarded_for" not in site


def test_an_active_color_without_hosts_is_refused(tmp_path):
    with pytest.raises(ValueError, match="active color 'green' has no app hosts"):
        render(tmp_path, active_color="green", colors={"blue": ["10.0.0.1"], "green": []})


def test_upstream_security_headers_are_replaced_not_doubled(tmp_path):
    site = render(tmp_path)[SITE_CONF]
    added = set(re.findall(r"add_header (\S+) ", site)) - {"X-MCP-Color"}
    for location in re.findall(r"location [^{]+\{([^}]*)\}", site):
        if "proxy_pass" in location:
            assert set(re.findall(r"proxy_hide_header (\S+);", location)) == added
