"""Which lab host reaches which port of which other host, for real, over TCP.

Each target gets a throwaway listener on every probed port nothing listens on yet; each
other host then tries a TCP connect to every (target, port). Exactly the pairs the
topology allows must connect (roles/firewall; guide, Firewall Configuration).
"""

from __future__ import annotations

import json

import pytest

PORTS = (22, 80, 443, 3000, 5432, 6379)
CONNECT_TIMEOUT_SECONDS = 1.5

# target role -> port -> source roles allowed ("*": any source).
ALLOWED: dict[str, dict[int, set[str]]] = {
    "edge": {80: {"*"}, 443: {"*"}},  # the public entry point
    "app": {443: {"edge"}},  # only the load balancer talks to an app host
    "data": {5432: {"app"}, 6379: {"app"}},  # PostgreSQL and Redis for the app hosts only
}

# Bound to the target's lab address: a service may hold 127.0.0.1:PORT (the app's 3000).
LISTENER = """
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], int(sys.argv[2])))
server.listen(16)
while True:
    server.accept()[0].close()
"""

# Connect to every (address, port) at once, each bounded by a timeout.
PROBE = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
targets, timeout = json.loads(sys.argv[1]), float(sys.argv[2])
def connects(target):
    try:
        socket.create_connection(tuple(target), timeout).close()
        return True
    except OSError:
        return False
with ThreadPoolExecutor(max_workers=32) as pool:
    print(json.dumps(list(pool.map(connects, targets))))
"""


def allowed(source_role: str, target_role: str, port: int) -> bool:
    sources = ALLOWED.get(target_role, {}).get(port, set())
    return "*" in sources or source_role in sources


def triples(topology):
    """Every (source, target, port) between two different hosts."""
    return [
        (source, target, port)
        for source in topology
        for target in topology
        if source != target
        for port in PORTS
    ]


@pytest.fixture(scope="module")
def reachable(lab_hosts, topology):
    """(source, target, port) -> did a TCP connect succeed."""
    started = []
    try:
        for name, host in lab_hosts.items():
            address = topology[name]["address"]
            for port in PORTS:
                if any(
                    host.socket(f"tcp://{bind}:{port}").is_listening
                    for bind in ("0.0.0.0", "::", address)
                ):
                    continue
                unit = f"mcpdeploy-probe-listen-{port}"
                host.check_output(
                    "systemd-run --collect --unit=%s python3 -c %s %s %s",
                    unit, LISTENER, address, str(port),
                )  # fmt: skip
                started.append((host, unit))
        if started:
            started[0][0].run("sleep 0.5")  # let the listeners bind before the probes
        results = {}
        for source, host in lab_hosts.items():
            cases = [case for case in triples(topology) if case[0] == source]
            targets = [[topology[target]["address"], port] for _, target, port in cases]
            out = host.check_output(
                "python3 -c %s %s %s", PROBE, json.dumps(targets), str(CONNECT_TIMEOUT_SECONDS)
            )
            results.update(zip(cases, json.loads(out), strict=True))
        yield results
    finally:
        for host, unit in started:
            host.run("systemctl stop %s", unit)


# conftest.py parametrizes ``triple``: test_allowed_* gets the pairs allowed() accepts,
# test_other_* the rest.
def test_allowed_port_reachable(reachable, triple):
    assert reachable[triple], f"{triple[1]}:{triple[2]} should accept {triple[0]}"


def test_other_port_unreachable(reachable, triple):
    assert not reachable[triple], f"{triple[1]}:{triple[2]} must refuse {triple[0]}"
