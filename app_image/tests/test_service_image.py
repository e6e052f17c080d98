"""The image: built by mcpdeploy.images.build_app_image(), run locked down, serving /health."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator

import httpx2
import pytest
from service_harness import free_port, wait_until

pytestmark = pytest.mark.docker

LOCKED_DOWN = {
    "read_only": True,
    "tmpfs": {"/tmp": "rw,noexec,nosuid,size=64m"},
    "cap_drop": ["ALL"],
    "user": "10001",
    "security_opt": ["no-new-privileges"],
}


@pytest.fixture(scope="module")
def image() -> str:
    # build_app_image starts the Docker engine when none answers, as `make test` promises
    # on a clean machine: a stopped engine is not a reason for this test to fail.
    from mcpdeploy.images import build_app_image

    return build_app_image()


@pytest.fixture
def container(image: str, base_env: dict[str, str]) -> Iterator[tuple[object, int]]:
    from mcpdeploy.engine import docker_client

    port = free_port()
    env = {k: v for k, v in base_env.items() if k not in ("PATH", "PYTHONPATH")}
    env.update(MCP_PORT=str(port), MCP_HOST="127.0.0.1", MCP_WORKERS="2")
    client = docker_client()
    # Host networking lets the container reach the test PostgreSQL and Redis on 127.0.0.1.
    running = client.containers.run(
        image, detach=True, network_mode="host", environment=env, **LOCKED_DOWN
    )
    try:
        yield running, port
    finally:
        running.remove(force=True)


def test_image_runs_locked_down_and_serves(container: tuple[object, int], api_key: str):
    running, port = container
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        running.reload()  # type: ignore[attr-defined]
        if running.status == "exited":  # type: ignore[attr-defined]
            pytest.fail(f"container exited: {running.logs().decode()[-2000:]}")  # type: ignore[attr-defined]
        try:
            return httpx2.get(f"{url}/health", timeout=1).status_code == 200
        except httpx2.HTTPError:
            return False

    wait_until(healthy, 60, 0.2)
    assert httpx2.get(f"{url}/health/mcp").json()["status"] == "ok"
    response = httpx2.post(
        f"{url}/api/v1/mcp/",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "get_page", "arguments": {"slug": "about"}},
        },
        headers={
            "X-API-Key": api_key,
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-11-25",
        },
    )
    assert response.status_code == 200, response.text
    metrics = httpx2.get(f"{url}/api/v1/mcp/metrics", headers={"X-API-Key": api_key}).text
    assert "mcp_http_requests_total" in metrics

    config = running.image.attrs["Config"]  # type: ignore[attr-defined]
    assert config["User"] == "10001:10001"
    assert "3000/tcp" in config["ExposedPorts"]
    probe = config["Healthcheck"]["Test"][1:]
    exit_code, output = running.exec_run(probe)  # type: ignore[attr-defined]
    assert exit_code == 0, output
    exit_code, output = running.exec_run(["mcp-service", "status"])  # type: ignore[attr-defined]
    assert exit_code == 0 and json.loads(output.decode().splitlines()[-1])["mcp_enabled"]
    exit_code, _ = running.exec_run(["sh", "-c", "command -v gcc cc || exit 1"])  # type: ignore[attr-defined]
    assert exit_code != 0, "a compiler is present in the final image"

    started = time.monotonic()
    running.stop(timeout=30)  # type: ignore[attr-defined]
    assert time.monotonic() - started < 25, "SIGTERM did not stop the service promptly"
    logs = running.logs().decode().splitlines()  # type: ignore[attr-defined]
    assert all(json.loads(line)["service"] == "railspress-mcp" for line in logs if line), (
        shlex.quote(logs[-1])
    )
