"""Docker on the app hosts (roles/docker): hardened daemon, verified registry, no UFW bypass.

The bypass test publishes a throwaway listener on 0.0.0.0 on purpose and checks that only
the host itself reaches it: the DOCKER-USER rules, not the publish address, stop the edge.
"""

from __future__ import annotations

import json

import pytest
from probes import CONNECT

from mcpdeploy.lab.topology import REGISTRY_NAME, REGISTRY_PORT

# The app-host checks `mcpdeploy release` runs on the idle color (mcpdeploy/gates.py).
pytestmark = pytest.mark.gate

PROBE_CONTAINER = "mcpdeploy-bypass-probe"
PROBE_PORT = 8099


@pytest.fixture(scope="module")
def app_host(app_name, lab_hosts):
    return lab_hosts[app_name]


@pytest.fixture(scope="module")
def docker_info(app_host):
    return json.loads(app_host.check_output("docker info --format '{{json .}}'"))


def service_image(host) -> str:
    return host.check_output("docker inspect --format '{{.Config.Image}}' mcp-service")


def test_docker_active_and_enabled(app_host):
    assert app_host.service("docker").is_running
    assert app_host.service("docker").is_enabled


def test_daemon_json_root_owned(app_host):
    daemon = app_host.file("/etc/docker/daemon.json")
    assert (daemon.user, daemon.group, daemon.mode) == ("root", "root", 0o644)


def test_logs_rotated_json_file_10m_x3(app_host, docker_info, settings):
    """Guide, Log Aggregation: json-file, max-size 10m, max-file 3 (as the daemon applies it)."""
    assert docker_info["LoggingDriver"] == "json-file"
    log = json.loads(
        app_host.check_output(
            "docker inspect --format '{{json .HostConfig.LogConfig}}' mcp-service"
        )
    )
    assert log == {
        "Type": "json-file",
        "Config": {
            "max-file": str(settings.app.log_max_files),
            "max-size": settings.app.log_max_size,
        },
    }


def test_live_restore_on(docker_info):
    assert docker_info["LiveRestoreEnabled"] is True


def test_no_new_privileges_is_the_daemon_default(app_host):
    """A container started without --security-opt still cannot gain privileges."""
    status = app_host.check_output(
        "docker run --rm --entrypoint /bin/cat %s /proc/self/status", service_image(app_host)
    )
    assert "NoNewPrivs:\t1" in status


def test_inter_container_communication_off(app_host):
    options = json.loads(
        app_host.check_output("docker network inspect bridge --format '{{json .Options}}'")
    )
    assert options["com.docker.network.bridge.enable_icc"] == "false"


def test_no_userland_proxy_process(app_host):
    """Published ports are kernel NAT only: no docker-proxy listens on the host."""
    assert app_host.run("pgrep -x docker-proxy").rc == 1
    assert not app_host.socket("tcp://0.0.0.0:3000").is_listening


def test_bridge_address_is_the_configured_one(app_host, settings):
    addresses = app_host.interface("docker0").addresses
    assert str(settings.app.docker_bridge.ip) in addresses


def test_registry_trusted_with_its_ca_not_insecure(app_host, docker_info):
    registry = f"{REGISTRY_NAME}:{REGISTRY_PORT}"
    ca = app_host.file(f"/etc/docker/certs.d/{registry}/ca.crt")
    assert ca.exists and ca.mode == 0o644
    assert docker_info["RegistryConfig"]["InsecureRegistryCIDRs"] == ["127.0.0.0/8"]
    assert docker_info["RegistryConfig"]["IndexConfigs"].get(registry, {}).get("Secure", True)


def test_docker_user_drops_new_connections_from_outside_the_bridges(app_host):
    rules = app_host.check_output("iptables -S DOCKER-USER").splitlines()
    assert "-A DOCKER-USER -m conntrack --ctstate NEW -j DROP" in rules
    assert "-A DOCKER-USER -i docker0 -j RETURN" in rules
    forward = app_host.check_output("iptables -S FORWARD").splitlines()
    assert forward[1] == "-A FORWARD -j DOCKER-USER", forward[:3]


def test_docker_user_rules_survive_a_ufw_reload(app_host):
    """after.rules re-creates them on every UFW start, so boot and reload keep them."""
    before = app_host.check_output("iptables -S DOCKER-USER")
    app_host.check_output("ufw reload")
    assert app_host.check_output("iptables -S DOCKER-USER") == before
    assert app_host.file("/etc/ufw/after.rules").contains(
        "^-A DOCKER-USER -m conntrack --ctstate NEW -j DROP$"
    )


@pytest.fixture
def probe_app(topology) -> str:
    """The first app host of the topology (app-blue in the lab; the idle one in a gate)."""
    return next(name for name, entry in topology.items() if entry["role"] == "app")


@pytest.fixture
def published_everywhere(lab_hosts, topology, probe_app):
    """A listener in a container on an app host, published on 0.0.0.0 by mistake."""
    host = lab_hosts[probe_app]
    host.run("docker rm --force %s", PROBE_CONTAINER)
    host.check_output(
        "docker run --detach --rm --name %s --publish 0.0.0.0:%s:%s --entrypoint "
        "/opt/venv/bin/python %s -m http.server %s",
        PROBE_CONTAINER, str(PROBE_PORT), str(PROBE_PORT), service_image(host), str(PROBE_PORT),
    )  # fmt: skip
    try:
        host.check_output("sleep 1")
        yield topology[probe_app]["address"]
    finally:
        host.run("docker rm --force %s", PROBE_CONTAINER)


def test_port_published_on_all_addresses_unreachable_from_another_host(
    published_everywhere, lab_hosts, probe_app
):
    """The Docker/UFW bypass is closed: the edge cannot reach it, the app host itself can."""
    from_itself = lab_hosts[probe_app].check_output(
        "python3 -c %s %s %s", CONNECT, published_everywhere, str(PROBE_PORT)
    )
    from_edge = lab_hosts["edge"].check_output(
        "python3 -c %s %s %s", CONNECT, published_everywhere, str(PROBE_PORT)
    )
    assert from_itself == "open", from_itself
    assert from_edge.startswith("closed"), from_edge
