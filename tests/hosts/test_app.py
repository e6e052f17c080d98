"""The MCP service on the app hosts (roles/app): unit, secrets, container limits, readiness.

Container checks read what the kernel applies inside the running container (``docker
exec``), not only what ``docker inspect`` says was asked for.
"""

from __future__ import annotations

import json
import random
import re

import pytest
from probes import CONNECT

from mcpdeploy.credentials import stack_credentials

# The app-host checks `mcpdeploy release` runs on the idle color (mcpdeploy/gates.py).
pytestmark = pytest.mark.gate

UNIT = "mcp-service.service"
# Justified ceiling: the unit only drives the docker client over /run/docker.sock (no
# capabilities, no network namespace access, read-only system); what remains is running
# as root (to read the 0600 environment file and the root-owned socket) and AF_UNIX.
MAX_EXPOSURE = 1.5
STATUS = (
    "import urllib.request, urllib.error, sys\n"
    "try:\n"
    "    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)\n"
    "except urllib.error.HTTPError as exc:\n"
    "    print(exc.code)\n"
)


@pytest.fixture(scope="module")
def app(app_name, lab_hosts, topology):
    """Each app host: (name, address, testinfra host)."""
    return app_name, topology[app_name]["address"], lab_hosts[app_name]


@pytest.fixture(scope="module")
def inspect(app):
    _, _, host = app
    return json.loads(host.check_output("docker inspect mcp-service"))[0]


@pytest.fixture(scope="module")
def secrets(pytestconfig):
    stack = pytestconfig.getoption("stack", default="lab")
    credentials = stack_credentials(stack, "file" if stack == "lab" else "aws")
    return [getattr(credentials, name) for name in credentials.__dataclass_fields__]


def in_container(host, command: str) -> str:
    return host.check_output(f"docker exec mcp-service {command}")


def test_unit_active_and_enabled(app):
    _, _, host = app
    assert host.service(UNIT).is_running and host.service(UNIT).is_enabled


def test_environment_file_root_only(app):
    _, _, host = app
    for path in ("/etc/mcp-service/env", "/etc/mcp-service/migrate.env"):
        env = host.file(path)
        assert (env.user, env.group, env.mode) == ("root", "root", 0o600), path
    assert host.file("/etc/mcp-service").mode == 0o700


def test_no_secret_in_ps_unit_or_journal(app, secrets):
    _, _, host = app
    visible = "\n".join(
        [
            host.check_output("ps -eo args"),
            host.file(f"/etc/systemd/system/{UNIT}").content_string,
            host.check_output(f"systemctl show {UNIT}"),
            host.check_output(f"journalctl -u {UNIT} -n 500 --no-pager"),
        ]
    )
    leaked = [i for i, secret in enumerate(secrets) if secret in visible]
    assert leaked == [], "a secret is visible outside the root-only environment file"


def test_container_runs_as_non_root_without_capabilities(app):
    _, _, host = app
    status = in_container(host, "cat /proc/1/status")
    uid = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)[1]
    assert uid != "0"
    assert re.search(r"^CapEff:\s+0+$", status, re.MULTILINE), status
    assert re.search(r"^CapBnd:\s+0+$", status, re.MULTILINE), status
    assert "NoNewPrivs:\t1" in status


def test_container_root_filesystem_read_only(app):
    _, _, host = app
    result = host.run("docker exec mcp-service /bin/touch /app/written")
    assert result.rc != 0 and "Read-only file system" in result.stderr
    # /tmp is the one writable place: a small tmpfs, nothing executes from it.
    assert "noexec" in in_container(host, "grep ' /tmp ' /proc/mounts")


def test_container_limits_set(app, inspect, settings):
    config = inspect["HostConfig"]
    assert config["ReadonlyRootfs"] is True
    assert config["CapDrop"] == ["ALL"] and not config["CapAdd"]
    assert "no-new-privileges" in config["SecurityOpt"]
    assert config["Memory"] > 0 and config["MemorySwap"] == config["Memory"]
    assert config["PidsLimit"] == settings.app.pids_limit
    assert config["Init"] is True
    _, _, host = app
    # What the kernel enforces, cgroup v2 or v1.
    pids = "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max"
    memory = (
        "cat /sys/fs/cgroup/memory.max 2>/dev/null "
        "|| cat /sys/fs/cgroup/memory/memory.limit_in_bytes"
    )
    assert (
        int(host.check_output("docker exec mcp-service sh -c %s", pids)) == settings.app.pids_limit
    )
    assert int(host.check_output("docker exec mcp-service sh -c %s", memory)) == config["Memory"]


def test_port_published_on_loopback_only(app, inspect):
    assert inspect["HostConfig"]["PortBindings"] == {
        "3000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "3000"}]
    }


def test_app_port_unreachable_from_edge(app, lab_hosts):
    _, address, _ = app
    out = lab_hosts["edge"].check_output("python3 -c %s %s 3000", CONNECT, address)
    assert out.startswith("closed"), out


def test_ready_through_loopback(app):
    _, _, host = app
    for path in ("/health", "/health/mcp"):
        assert (
            host.check_output("python3 -c %s %s", STATUS, f"http://127.0.0.1:3000{path}") == "200"
        )


def test_service_trusts_nginx_as_its_proxy(app, lab_hosts, settings):
    """Through edge -> nginx -> container, the service logs the client's address."""
    _, address, host = app
    client = f"198.51.100.{random.randint(1, 254)}"
    request = (
        "import http.client, socket, ssl, sys\n"
        "ctx = ssl.create_default_context(cafile=sys.argv[3])\n"
        "sock = ctx.wrap_socket(socket.create_connection((sys.argv[1], 443), 5),"
        " server_hostname=sys.argv[2])\n"
        "c = http.client.HTTPSConnection(sys.argv[2]); c.sock = sock\n"
        "c.request('GET', '/health', headers={'X-Forwarded-For': sys.argv[4]})\n"
        "print(c.getresponse().status)\n"
    )
    ca = "/usr/local/share/ca-certificates/mcpdeploy-lab-ca.crt"
    assert lab_hosts["edge"].check_output(
        "python3 -c %s %s %s %s %s", request, address, settings.domain, ca, client
    ) == "200"  # fmt: skip
    logs = host.check_output("docker logs --since 2m mcp-service 2>&1")
    clients = [json.loads(line).get("client_ip") for line in logs.splitlines() if "{" in line]
    assert client in clients, clients[-5:]


def test_migrations_ran_once_for_the_running_image(app, inspect):
    from roles.app import release_marker

    _, _, host = app
    assert host.file(release_marker(inspect["Config"]["Image"])).exists


def test_images_beyond_the_rollback_window_pruned(app, inspect, settings):
    from roles.app import image_repository

    _, _, host = app
    ids = host.check_output(
        "docker image ls --quiet --no-trunc %s", image_repository(inspect["Config"]["Image"])
    )
    assert 1 <= len(set(ids.split())) <= settings.app.keep_images + 1


def test_the_other_colors_image_is_kept_for_a_rollback(app, topology, settings):
    """Every app host holds the other color's release too, whatever app.keepImages says."""
    from mcpdeploy.images import release_image
    from roles.app import image_repository

    name, _, host = app
    other = "green" if topology[name]["color"] == "blue" else "blue"
    wanted = release_image(settings.image_for(other))
    digests = host.check_output(
        "docker image ls --digests --no-trunc --format '{{.Digest}}' %s",
        image_repository(wanted),
    )
    assert wanted.partition("@")[2] in digests.split(), (wanted, digests)


def test_unit_sandbox_exposure(app):
    """systemd-analyze security of the loaded unit and of the file alone (guide's: 8.9)."""
    _, _, host = app
    scores = []
    for command in (
        f"systemd-analyze security {UNIT}",
        f"systemd-analyze security --offline=true /etc/systemd/system/{UNIT}",
    ):
        out = host.check_output(command)
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
        assert match, out[-500:]
        scores.append(float(match[1]))
    print(f"{UNIT} exposure (loaded, offline): {scores}")
    assert max(scores) <= MAX_EXPOSURE, scores
