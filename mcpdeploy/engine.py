"""The operator machine's Docker engine and host tools: present, started, healthy.

The lab and the image builds need ``docker.io`` and ``debootstrap`` from Debian and a
running engine. Nothing here assumes they exist: they are installed and started when
missing, and each failure says what to do next.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
from docker.errors import DockerException

DOCKERD_LOG = Path("/var/log/mcpdeploy-dockerd.log")
START_LOCK = Path("/run/mcpdeploy-dockerd.lock")
TOOLS = {"dockerd": "docker.io", "debootstrap": "debootstrap"}
MIN_FREE_GIB = 3


class EngineError(Exception):
    """The operator machine cannot run the lab or build images (message says why and what next)."""


Progress = Callable[[str], None]


def no_progress(_: str) -> None:
    return None


def require_root() -> None:
    """Refuse early: installing packages and driving Docker needs root."""
    if os.geteuid() != 0:
        raise EngineError(
            "this needs root (it installs packages and drives Docker): run it with sudo"
        )


def require_free_space(path: Path, gib: int = MIN_FREE_GIB) -> None:
    """Refuse when ``path``'s filesystem has less than ``gib`` GiB free."""
    path.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path).free / 2**30
    if free < gib:
        raise EngineError(
            f"only {free:.1f} GiB free under {path}; the lab needs {gib} GiB: "
            "free some space (docker system prune, apt-get clean) and retry"
        )


def ensure_tools(progress: Progress = no_progress) -> None:
    """Install Debian's ``docker.io`` and ``debootstrap`` when their commands are missing."""
    missing = sorted({pkg for tool, pkg in TOOLS.items() if not _which(tool)})
    if not missing:
        return
    progress(f"installing {' '.join(missing)} from Debian")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise EngineError(f"{' '.join(cmd)} failed: {' / '.join(tail)}")


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin")


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Other processes wait while this one holds the lock file ``path``, in a directory
    that exists (released when the process ends, however it ends)."""
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def docker_client(progress: Progress = no_progress, timeout: float = 60) -> docker.DockerClient:
    """A client for a running engine, starting ``dockerd`` when none answers (one process
    at a time: `make test` runs the service tests and the lab's setup at once)."""
    client = _ping()
    if client is not None:
        return client
    with exclusive(START_LOCK):
        return _ping() or _start(progress, timeout)


def _start(progress: Progress, timeout: float) -> docker.DockerClient:
    progress("starting the Docker engine")
    if Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "start", "docker"], check=False, capture_output=True)
    else:
        dockerd = _which("dockerd")
        if dockerd is None:
            raise EngineError("dockerd is not installed: apt-get install docker.io")
        with DOCKERD_LOG.open("ab") as log:
            subprocess.Popen([dockerd], stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = _ping()
        if client is not None:
            return client
        time.sleep(1)
    raise EngineError(
        f"the Docker engine did not answer within {timeout:.0f}s: see {DOCKERD_LOG} "
        "or 'journalctl -u docker'"
    )


def _ping() -> docker.DockerClient | None:
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except DockerException:
        return None
    return client
