"""Real PostgreSQL, Redis and service processes on 127.0.0.1 for the tests and the benchmark.

PostgreSQL refuses to run as root, so when the tests run as root its data directory is
owned by the `postgres` user and the server is started through `runuser`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import httpx2

APP_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY_BASE = "test-secret-key-base-" + "x" * 40


class HarnessError(RuntimeError):
    """A test dependency could not be started; the message says what to install or check."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: object, timeout: float, interval: float = 0.05) -> float:
    """Poll `predicate()` until true; return the seconds it took, or raise TimeoutError."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout} s")


class PostgresServer:
    """A throwaway PostgreSQL cluster (Debian's binaries) with trust auth on 127.0.0.1."""

    def __init__(self) -> None:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not candidates:
            raise HarnessError("PostgreSQL binaries missing: apt-get install -y postgresql")
        self.bin = Path(candidates[-1]).parent
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mcp-test-pg-"))
        self.data = self.root / "data"
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
        if result.returncode != 0:
            raise HarnessError(f"{tool} failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> None:
        """Start (or restart) the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-w",
            "-o",
            options,
            "start",
        )

    def stop(self) -> None:
        """Stop the server immediately (existing connections are cut)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        """A libpq URL for `database` on this server."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create a fresh database and return its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        """Stop the server and delete its files."""
        with contextlib.suppress(HarnessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """A throwaway redis-server without persistence on 127.0.0.1."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            raise HarnessError("redis-server missing: apt-get install -y redis-server")
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, 10)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def url(self, db: int = 0) -> str:
        """A redis:// URL for logical database `db`."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def close(self) -> None:
        """Stop the server."""
        self.process.terminate()
        self.process.wait(timeout=10)


def service_env(database_url: str, redis_url: str, **overrides: str) -> dict[str, str]:
    """Environment for the service: the test servers, generous limits, overrides last."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(APP_DIR),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY_BASE": SECRET_KEY_BASE,
        "MCP_RATE_LIMIT_PER_MINUTE": "100000",
        "MCP_RATE_LIMIT_PER_HOUR": "1000000",
        "MCP_RATE_LIMIT_PER_DAY": "10000000",
        "MCP_HOST": "127.0.0.1",
    }
    env.update(overrides)
    return env


def run_cli(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m mcp_service ARGS` with `env`."""
    return subprocess.run(
        [sys.executable, "-m", "mcp_service", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class ServiceProcess:
    """`python -m mcp_service serve` on a free port, logs captured to a file."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.port = free_port()
        # Its own stream state (close flag, open-stream markers), as each container has.
        state = tempfile.mkdtemp(prefix="mcp-streams-")
        self.env = {"MCP_STREAM_STATE_DIR": state, **env, "MCP_PORT": str(self.port)}
        self.log_path = Path(tempfile.mkstemp(prefix="mcp-service-", suffix=".log")[1])
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mcp_service", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(self._healthy, 30, 0.1)
        except TimeoutError:
            self.stop()
            raise HarnessError(
                f"service did not start; log:\n{self.log_path.read_text()}"
            ) from None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        """The MCP endpoint."""
        return f"{self.url}/api/v1/mcp/"

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise HarnessError(f"service exited; log:\n{self.log_path.read_text()}")
        try:
            return httpx2.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx2.HTTPError:
            return False

    def logs(self) -> str:
        """Everything the service wrote so far."""
        return self.log_path.read_text()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait for the graceful exit, return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return int(self.process.returncode)
