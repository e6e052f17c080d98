"""The rendered nginx configuration passes a real ``nginx -t`` and keeps the guide's intent."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mcpdeploy.lab.pki import LabCA
from mcpdeploy.settings import load_settings
from roles.nginx import HTTP_CONF, SITE_CONF, render_config

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def render(tmp_path: Path, **overrides) -> dict[str, str]:
    settings = load_settings("lab")
    ca = LabCA(tmp_path)
    cert, key = ca.issue(tmp_path, "app", ["app-blue", "127.0.0.1"])
    args = {
        "domain": settings.domain,
        "trusted_proxies": ["172.30.77.10"],
        "admin_cidrs": [str(c) for c in settings.admin_cidrs],
        "zones": settings.nginx_rate_limits,
        "timeouts": settings.timeouts,
        "max_request_bytes": settings.max_request_bytes,
        "certificate_path": str(cert),
        "key_path": str(key),
    }
    args.update(overrides)
    return render_config(**args)


def nginx_t(tmp_path: Path, config: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run nginx -t on a main config that includes ours the way Debian's does."""
    (tmp_path / "http.conf").write_text(config[HTTP_CONF])
    (tmp_path / "site.conf").write_text(config[SITE_CONF])
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events {}\nhttp {\n"
        f"  include /etc/nginx/mime.types;\n  include {tmp_path}/http.conf;\n"
        f"  include {tmp_path}/site.conf;\n}}\n"
    )
    site = (
        (tmp_path / "site.conf")
        .read_text()
        .replace("/var/log/nginx/mcp.access.log", str(tmp_path / "access.log"))
    )
    (tmp_path / "site.conf").write_text(site)
    return subprocess.run(
        [NGINX, "-t", "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        check=False,
    )


def test_rendered_config_passes_nginx_t(tmp_path):
    result = nginx_t(tmp_path, render(tmp_path))
    assert result.returncode == 0, result.stderr


def test_both_spellings_of_the_endpoint_have_the_mcp_limits_and_proxy(tmp_path):
    config = render(tmp_path)
    assert nginx_t(tmp_path, config).returncode == 0
    site = config[SITE_CONF]
    exact = re.search(r"location = /api/v1/mcp \{([^}]*)\}", site)
    prefix = re.search(r"location /api/v1/mcp/ \{([^}]*)\}", site)
    assert exact and prefix, site
    # The same zone, buffering and proxy settings: nothing answers /api/v1/mcp differently.
    assert exact[1] == prefix[1]
    assert "limit_req zone=mcp " in exact[1] and "proxy_pass http://mcp_service;" in exact[1]


def test_idle_upstream_connections_close_before_the_service_closes_them(tmp_path):
    """A request on a kept-alive connection the service is closing fails with a 502 (a
    release under load saw one): nginx must give up idle connections first."""
    config = render(tmp_path)
    assert nginx_t(tmp_path, config).returncode == 0
    upstream = re.search(r"upstream mcp_service \{([^}]*)\}", config[HTTP_CONF])
    assert upstream, config[HTTP_CONF]
    ours = re.search(r"keepalive_timeout (\d+)s;", upstream[1])
    service = re.search(
        r'"timeout_keep_alive": (\d+)',
        (Path(__file__).parents[2] / "app_image/mcp_service/cli.py").read_text(),
    )
    assert ours and service, upstream[1]
    assert int(ours[1]) < int(service[1])


def test_the_guides_config_mistake_fails_nginx_t(tmp_path):
    """The check can fail: limit_req_zone inside server{} (the guide's version) is refused."""
    config = render(tmp_path)
    zone = re.search(r"^limit_req_zone .*zone=mcp.*$", config[HTTP_CONF], re.MULTILINE)[0]
    config[HTTP_CONF] = config[HTTP_CONF].replace(zone, "")
    config[SITE_CONF] = config[SITE_CONF].replace(
        "listen 443 ssl http2;", f"listen 443 ssl http2;\n    {zone}"
    )
    result = nginx_t(tmp_path, config)
    assert result.returncode != 0
    assert "limit_req_zone" in result.stderr and "not allowed" in result.stderr


def test_rate_limit_zones_follow_settings(tmp_path):
    http = render(tmp_path)[HTTP_CONF]
    assert "zone=mcp:10m rate=10r/s" in http and "zone=api:10m rate=100r/s" in http
    site = render(tmp_path)[SITE_CONF]
    assert "limit_req zone=mcp burst=20 nodelay;" in site
    assert "limit_req zone=api burst=50 nodelay;" in site


def openssl_knows(cipher: str) -> bool:
    # "-s -tls1_2": only suites this OpenSSL would really offer over TLS 1.2.
    result = subprocess.run(
        ["openssl", "ciphers", "-s", "-tls1_2", cipher], capture_output=True, text=True
    )
    return result.returncode == 0 and cipher in result.stdout.strip().split(":")


def test_only_tls12_and_13_with_suites_that_exist(tmp_path):
    site = render(tmp_path)[SITE_CONF]
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in site
    ciphers = re.search(r"ssl_ciphers (\S+);", site)[1].split(":")
    assert ciphers and all(openssl_knows(c) for c in ciphers), ciphers
    # The guide's suite is not a cipher OpenSSL knows: the same check rejects it.
    assert not openssl_knows("ECDHE-RSA-AES256-GCM-SHA512")


def test_headers_are_sent_always_and_only_at_server_level(tmp_path):
    site = render(tmp_path)[SITE_CONF]
    headers = re.findall(r"add_header (\S+) .* always;", site)
    assert set(headers) >= {
        "Strict-Transport-Security",
        "X-Frame-Options",
        "X-Content-Type-Options",
        "Content-Security-Policy",
        "Referrer-Policy",
        "X-XSS-Protection",
    }
    # add_header inside a location would silently drop the server-level ones there.
    for block in re.findall(r"location [^{]+\{([^}]*)\}", site):
        assert "add_header" not in block


def test_real_client_address_is_trusted_from_the_balancer_only(tmp_path):
    site = render(tmp_path, trusted_proxies=["10.0.1.0/24"])[SITE_CONF]
    assert re.findall(r"set_real_ip_from (\S+);", site) == ["10.0.1.0/24"]
    assert "real_ip_header X-Forwarded-For;" in site and "real_ip_recursive on;" in site


@pytest.mark.parametrize("bad", ["10.0.0.0/8; include /etc/passwd", "x y"])
def test_config_injection_through_settings_is_impossible(tmp_path, bad):
    """Values reach templates only after the schema; a crafted one still breaks nginx -t."""
    result = nginx_t(tmp_path, render(tmp_path, trusted_proxies=[bad]))
    assert result.returncode != 0
