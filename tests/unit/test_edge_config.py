"""The edge's rendered configuration passes a real nginx -t and sends traffic to one color."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mcpdeploy.lab.pki import LabCA
from mcpdeploy.settings import load_settings
from roles.edge import ACTIVE_DIR, HTTP_CONF, SITE_CONF, active_flags, render_edge_config

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
COLORS = {"blue": ["172.30.77.100", "172.30.77.101"], "green": ["172.30.77.120"]}


def render(tmp_path: Path, **overrides) -> dict[str, str]:
    settings = load_settings("lab")
    ca = LabCA(tmp_path)
    cert, key = ca.issue(tmp_path, "edge", ["mcp.lab.test", "127.0.0.1"])
    args = {
        "domain": settings.domain,
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
    assert site.count("proxy_ssl_verify on;") == 2
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in site
    assert "$proxy_add_x_forwarded_for" not in site


def test_an_active_color_without_hosts_is_refused():
    with pytest.raises(ValueError, match="active color 'green' has no app hosts"):
        active_flags("green", {"blue": ["10.0.0.1"], "green": []})


def test_upstream_security_headers_are_replaced_not_doubled(tmp_path):
    site = render(tmp_path)[SITE_CONF]
    added = set(re.findall(r"add_header (\S+) ", site)) - {"X-MCP-Color"}
    for location in re.findall(r"location [^{]+\{([^}]*)\}", site):
        if "proxy_pass" in location:
            assert set(re.findall(r"proxy_hide_header (\S+);", location)) == added
