"""``mcpdeploy lab down`` and ``up``: exactly the labelled objects go, the same lab comes back.

Runs first in the lab suite (make test-lab), apart from tests/lab: it leaves a freshly
created, undeployed lab.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import docker
import pytest

from mcpdeploy.engine import docker_client
from mcpdeploy.lab import Lab, LabError, topology
from mcpdeploy.lab.topology import LABEL
from mcpdeploy.settings import load_settings

pytestmark = pytest.mark.lab
MCPDEPLOY = str(Path(sys.executable).with_name("mcpdeploy"))


def mcpdeploy(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([MCPDEPLOY, *args], capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"mcpdeploy {' '.join(args)}: {result.stderr}")
    return result


def status() -> tuple[int, dict]:
    result = mcpdeploy("lab", "status", "--json", check=False)
    return result.returncode, json.loads(result.stdout)


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    return docker_client()


@pytest.fixture(scope="module")
def bystanders(client):
    """Objects that look like the lab's but are not labelled: down must leave them."""
    volume = client.volumes.create("mcpdeploy-lab-bystander")
    network = client.networks.create("mcpdeploy-lab-bystander-net", driver="bridge")
    yield volume, network
    volume.remove(force=True)
    network.remove()


def labelled(client) -> list[str]:
    return (
        [c.name for c in client.containers.list(all=True, filters={"label": LABEL})]
        + [n.name for n in client.networks.list(filters={"label": LABEL})]
        + [v.name for v in client.volumes.list(filters={"label": LABEL})]
    )


def test_down_removes_every_labelled_object_and_nothing_else(client, bystanders):
    mcpdeploy("lab", "down")
    assert labelled(client) == []
    volume, network = bystanders
    client.volumes.get(volume.name)
    client.networks.get(network.id)
    code, doc = status()
    assert code == 1 and not doc["up"]
    assert {h["state"] for h in doc["hosts"]} == {"absent"}


def test_up_creates_the_four_hosts_and_status_json_describes_them():
    mcpdeploy("lab", "up")
    code, doc = status()
    assert code == 0 and doc["up"]
    assert [(h["name"], h["role"], h["color"]) for h in doc["hosts"]] == [
        ("edge", "edge", None),
        ("app-blue", "app", "blue"),
        ("app-green", "app", "green"),
        ("data", "data", None),
    ]
    assert doc["url"] == "https://127.0.0.1:8443"
    assert Path(doc["ssh_key"]).stat().st_mode & 0o077 == 0
    assert Path(doc["ssh_key"]).parent.stat().st_mode & 0o077 == 0
    assert {"network", "hosts", "ssh_key", "url", "ca_cert", "api_key_file"} <= set(doc)


def test_every_host_runs_systemd_and_answers_ssh_with_the_lab_key():
    _, doc = status()
    for host in doc["hosts"]:
        result = subprocess.run(
            [
                "ssh",
                "-F",
                doc["ssh_config"],
                host["name"],
                "systemctl is-system-running; hostname -I",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        state, addresses = result.stdout.split("\n", 1)
        assert state in ("running", "degraded"), (host["name"], result.stderr)
        assert host["address"] in addresses.split()


def test_ssh_refuses_a_key_that_is_not_the_lab_key(tmp_path):
    _, doc = status()
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    stranger = subprocess.run(
        [
            "ssh",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            str(key),
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={doc['known_hosts']}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-p",
            str(doc["hosts"][0]["ssh_port"]),
            "root@127.0.0.1",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stranger.returncode == 255 and "Permission denied" in stranger.stderr


def test_published_ports_listen_on_loopback_only(client):
    for container in client.containers.list(filters={"label": LABEL}):
        for bindings in container.attrs["HostConfig"]["PortBindings"].values():
            assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}, container.name


def test_registry_serves_tls_signed_by_the_lab_ca():
    _, doc = status()
    context = ssl.create_default_context(cafile=doc["ca_cert"])
    url = f"https://{doc['registry']['push']}/v2/"
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        assert response.status == 200
    with pytest.raises(ssl.SSLError):
        ssl.create_default_context().wrap_socket(
            socket.create_connection(("127.0.0.1", doc["registry"]["port"]), timeout=10),
            server_hostname="127.0.0.1",
        ).close()


def test_second_up_changes_nothing(client):
    before = {c.name: c.id for c in client.containers.list(filters={"label": LABEL})}
    result = mcpdeploy("lab", "up")
    after = {c.name: c.id for c in client.containers.list(filters={"label": LABEL})}
    assert before == after
    assert "creating" not in result.stderr and "replacing" not in result.stderr


def test_a_port_taken_by_another_program_is_named(client):
    lab = Lab(topology(load_settings("lab")))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    lab.topo = type(lab.topo)(lab.topo.subnet, lab.topo.hosts, port, lab.topo.registry_address)
    try:
        with pytest.raises(LabError, match=rf"127\.0\.0\.1:{port} is already in use"):
            lab._check_ports_free(client)
    finally:
        taken.close()
