"""testinfra against the lab by default, or any hosts given with ``--hosts``.

``pytest tests/hosts`` reads ``mcpdeploy lab status --json`` and targets every lab host
over SSH with the lab's ssh_config. ``--hosts=ssh://a,ssh://b --ssh-config=FILE`` targets
real servers; add ``--lab-status=FILE`` (the same JSON shape: ``hosts`` with ``name``,
``role``, ``address``) to run the role-specific and reachability tests there too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import testinfra

from mcpdeploy.settings import Settings, load_settings

MCPDEPLOY = Path(sys.executable).with_name("mcpdeploy")
HERE = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--lab-status",
        metavar="FILE",
        help="JSON in the shape of `mcpdeploy lab status --json` naming each host's role and "
        "address (default: ask mcpdeploy when --hosts is not given)",
    )
    parser.addoption(
        "--stack",
        default="lab",
        help="the stack whose settings the hosts were deployed with (default: lab)",
    )


def _lab_status() -> dict[str, Any] | None:
    result = subprocess.run(
        [str(MCPDEPLOY), "lab", "status", "--json"], capture_output=True, text=True, check=False
    )
    return json.loads(result.stdout) if result.returncode == 0 else None


def _asked_for_this_suite(config: pytest.Config) -> bool:
    return any(Path(arg.split("::")[0]).resolve().is_relative_to(HERE) for arg in config.args)


def pytest_configure(config: pytest.Config) -> None:
    status_file = config.getoption("lab_status", default=None)
    status: dict[str, Any] | None = None
    if status_file:
        status = json.loads(Path(status_file).read_text())
    elif config.option.hosts is None:
        status = _lab_status()
        if status is None and _asked_for_this_suite(config):
            raise pytest.UsageError(
                "no --hosts given and the lab is not up: run `mcpdeploy lab up` first, or "
                "pass --hosts=ssh://... --ssh-config=FILE for other servers"
            )
    if status is not None and config.option.hosts is None:
        config.option.hosts = ",".join(f"ssh://{h['name']}" for h in status["hosts"])
        config.option.ssh_config = config.option.ssh_config or status.get("ssh_config")
    config.stash[TOPOLOGY] = {h["name"]: h for h in status["hosts"]} if status else {}
    config.stash[ORIGINAL_SSH_CONFIG] = config.option.ssh_config
    if config.option.ssh_config and (config.option.connection in (None, "ssh")):
        config.option.ssh_config = _multiplexing_ssh_config(config.option.ssh_config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without hosts (a wider run while the lab is down) skip, never test this machine."""
    if config.option.hosts is not None:
        return
    skip = pytest.mark.skip(reason="no --hosts and the lab is not up (mcpdeploy lab up)")
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(skip)


TOPOLOGY = pytest.StashKey[dict[str, dict[str, Any]]]()
ORIGINAL_SSH_CONFIG = pytest.StashKey[str | None]()


def _multiplexing_ssh_config(ssh_config: str) -> str:
    """A wrapper config reusing one SSH connection per host.

    testinfra opens a connection per command unless a ControlPath is set, and UFW's
    ``limit`` on port 22 drops the 6th connection within 30 s from one address.
    """
    directory = Path(tempfile.mkdtemp(prefix="mcpdeploy-testinfra-"))
    wrapper = directory / "ssh_config"
    wrapper.write_text(
        f"Include {Path(ssh_config).resolve()}\n"
        f"Host *\n  ControlPath {directory}/%C\n  ControlPersist 60s\n"
    )
    return str(wrapper)


def pytest_unconfigure(config: pytest.Config) -> None:
    ssh_config = config.option.ssh_config
    if ssh_config and Path(ssh_config).parent.name.startswith("mcpdeploy-testinfra-"):
        for socket in Path(ssh_config).parent.iterdir():
            if socket.is_socket():
                subprocess.run(
                    ["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "_"],
                    capture_output=True,
                    check=False,
                )
        shutil.rmtree(Path(ssh_config).parent, ignore_errors=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``app_name`` with every app host of the topology, and ``triple`` with
    the (source, target, port) cases of the module's policy.

    ``test_allowed_*`` functions get the cases ``module.allowed(source_role, target_role,
    port)`` accepts, the other functions the cases it refuses.
    """
    if "app_name" in metafunc.fixturenames:
        apps = [n for n, h in metafunc.config.stash[TOPOLOGY].items() if h["role"] == "app"]
        metafunc.parametrize("app_name", apps, scope="module")
    if "triple" not in metafunc.fixturenames:
        return
    topology = metafunc.config.stash[TOPOLOGY]
    if not topology:
        metafunc.parametrize(
            "triple",
            [
                pytest.param(
                    None, marks=pytest.mark.skip(reason="no topology: pass --lab-status=FILE")
                )
            ],
        )
        return
    wanted = metafunc.function.__name__.startswith("test_allowed")
    cases = [
        (source, target, port)
        for source, target, port in metafunc.module.triples(topology)
        if metafunc.module.allowed(topology[source]["role"], topology[target]["role"], port)
        == wanted
    ]
    metafunc.parametrize(
        "triple", cases, ids=[f"{target}:{port}-from-{source}" for source, target, port in cases]
    )


@pytest.fixture(scope="session")
def settings(pytestconfig: pytest.Config) -> Settings:
    """The settings of the stack under test (``--stack``)."""
    return load_settings(pytestconfig.getoption("stack", default="lab"))


@pytest.fixture(scope="session")
def topology(pytestconfig: pytest.Config) -> dict[str, dict[str, Any]]:
    """Host name -> {"role", "address", ...}; empty when no lab status was given."""
    return pytestconfig.stash[TOPOLOGY]


@pytest.fixture(scope="session")
def in_container() -> Any:
    """Whether a host is a container (its kernel parameters belong to the machine)."""

    def check(host: Any) -> bool:
        return host.run("systemd-detect-virt --container").stdout.strip() not in ("", "none")

    return check


@pytest.fixture(scope="session")
def ssh_client(pytestconfig: pytest.Config) -> Any:
    """Run the operator's own ``ssh`` to a host alias, without connection sharing."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        ssh_config = pytestconfig.stash[ORIGINAL_SSH_CONFIG]
        command = ["ssh", "-o", "ControlPath=none", "-o", "ConnectTimeout=10"]
        command += ["-F", ssh_config] if ssh_config else []
        return subprocess.run(
            [*command, *args], capture_output=True, text=True, timeout=30, check=False
        )

    return run


@pytest.fixture(scope="session")
def lab_hosts(pytestconfig: pytest.Config, topology: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Host name -> testinfra host, for tests that look at several hosts at once."""
    return {
        name: testinfra.get_host(f"ssh://{name}", ssh_config=pytestconfig.option.ssh_config)
        for name in topology
    }
