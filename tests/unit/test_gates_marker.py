"""The release gate selects the host suite's tests by the `gate` marker, never by file name:
renaming or adding a file under tests/hosts cannot change what a release checks unnoticed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mcpdeploy import gates
from mcpdeploy.fleet import Fleet, FleetHost

ROOT = Path(__file__).resolve().parents[2]
EDGE = FleetHost("edge", "edge", None, "10.0.0.10")
GREEN = FleetHost("app-green", "app", "green", "10.0.0.120")
DATA = FleetHost("data", "data", None, "10.0.0.20")
# The app host's own checks: what the gate ran by file name before the marker.
GATE_FILES = {
    f"tests/hosts/test_{name}.py"
    for name in ("app", "docker", "nginx", "system", "sshd", "users", "firewall", "updates")
}


def test_the_gate_command_selects_by_marker_and_names_no_file(monkeypatch):
    seen: list[list[str]] = []

    def fake_run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0, "1 passed in 0.1s\n", "")

    monkeypatch.setattr(gates.subprocess, "run", fake_run)
    fleet = Fleet("lab", ("ssh",), (EDGE, GREEN, DATA), "hosts/lab.py")
    result = gates.testinfra_gate(fleet, [GREEN], "/dev/null")
    assert result.ok, result.detail
    (argv,) = seen
    marker = argv.index("gate and not disruptive")
    assert argv[marker - 1] == "-m", argv
    assert "tests/hosts" in argv
    assert not [arg for arg in argv if arg.endswith(".py")], argv


def test_the_gate_marker_selects_the_app_host_files(tmp_path):
    """What the marker collects (offline: an inventory file, no connection) is every test of
    the app host's own files, and nothing from the files that look across hosts."""
    status = tmp_path / "status.json"
    status.write_text(
        json.dumps(
            {
                "ssh_config": "/dev/null",
                "hosts": [
                    {"name": h.name, "role": h.role, "color": h.color, "address": h.address}
                    for h in (EDGE, GREEN, DATA)
                ],
            }
        )
    )
    common = [
        sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
        "--hosts=ssh://app-green", "--ssh-config=/dev/null", f"--lab-status={status}",
        "--stack=lab",
    ]  # fmt: skip

    def collected(*args: str) -> set[str]:
        result = subprocess.run(
            [*common, *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return {line for line in result.stdout.splitlines() if "::" in line}

    marked = collected("-m", "gate and not disruptive", "tests/hosts")
    by_file = collected("-m", "not disruptive", *sorted(GATE_FILES))
    assert marked == by_file
    assert {line.split("::")[0] for line in marked} == GATE_FILES
