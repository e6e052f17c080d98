"""mcpdeploy.switch.pyinfra limits a run to each host it is given, through the real
pyinfra CLI: pyinfra reads ``--limit a,b`` as one name that matches nothing, runs on no
host and exits 0 (a switch on a stack with two edges once did exactly that)."""

from __future__ import annotations

import socket
from pathlib import Path

from mcpdeploy.fleet import Fleet
from mcpdeploy.switch import pyinfra


def closed_port() -> int:
    """A local port nothing listens on: pyinfra's SSH connection is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_each_host_given_is_one_the_run_tries(tmp_path: Path) -> None:
    port = closed_port()
    inventory = tmp_path / "inventory.py"
    inventory.write_text(
        "edge = [\n"
        + "".join(
            f"    ('{name}', {{'ssh_hostname': '127.0.0.1', 'ssh_port': {port}}}),\n"
            for name in ("edge-a", "edge-b", "edge-c")
        )
        + "]\n"
    )
    fleet = Fleet(stack="lab", ssh=("ssh",), hosts=(), inventory=str(inventory))
    result = pyinfra(fleet, ["edge-a", "edge-b"], timeout=120, deploy="deploy_edge.py")
    output = result.stdout + result.stderr
    assert "No host matches" not in output, output
    # Both were tried (and refused: nothing listens), the third was left out.
    assert "edge-a" in output and "edge-b" in output, output
    assert "edge-c" not in output, output
    assert result.returncode != 0, output
