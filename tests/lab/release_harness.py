"""What the release tests share: the CLI, the served color, a restored lab.

The standing rule of the lab suite (docs/lab.md): a lab test that adds more than 30 s of
lab time states the time it adds in its docstring, as `make test-times` measured it. The
lab part of `make test` is paid by every change; a figure in the docstring is how a
reviewer sees what a new test costs, and where to look when the suite grows slower.
"""

from __future__ import annotations

import io
import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2

from mcpdeploy.engine import docker_client
from mcpdeploy.fleet import lab_fleet
from mcpdeploy.gates import gate_key
from mcpdeploy.images import app_source_tag, release_image
from mcpdeploy.lab import STATE_DIR
from mcpdeploy.lab.topology import REGISTRY_NAME, REGISTRY_PORT
from mcpdeploy.settings import load_settings
from mcpdeploy.switch import pyinfra

ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = ROOT / "Pulumi.lab.yaml"
BIN = Path(sys.executable).parent
SSH = ["ssh", "-F", str(STATE_DIR / "ssh_config")]
REPOSITORY = "mcpdeploy/app"
APP_HOSTS = ("app-blue", "app-green")
# How soon after `ops disable|enable|cache|rotate-key` returns every worker answers by it:
# each re-reads the operator's switches every app.settingsCacheSeconds (1 s in the lab, at
# most the guide's 5 s), plus 1 s for a poll and its request on a busy machine.
SWITCH_SECONDS = load_settings("lab").app.settings_cache_seconds + 1.0
# Remote shell: wait (bounded) until the service answers its readiness check again.
READY = (
    "for i in $(seq 90); do python3 -c 'import urllib.request; "
    'urllib.request.urlopen("http://127.0.0.1:3000/health/mcp", timeout=2)\' && exit 0; '
    "sleep 1; done; exit 1"
)


def run(
    *argv: str, timeout: float = 1200, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )


def mcpdeploy(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    return run(str(BIN / "mcpdeploy"), *args, timeout=timeout)


class BackgroundRelease:
    """``mcpdeploy release --image IMAGE`` running: its progress (stderr) is read on a
    thread as it comes, each line with the time it arrived (``time.monotonic()``), so a
    test can place what it observes between two steps of the release."""

    def __init__(self, image: str) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "mcpdeploy"), "release", "--image", image],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._out: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_progress, args=(self.process.stderr,)),
            threading.Thread(target=self._out.extend, args=(self.process.stdout,)),
        ]
        for reader in self._readers:
            reader.start()

    def _read_progress(self, stream: io.TextIOBase) -> None:
        for line in stream:
            self.lines.append((time.monotonic(), line))

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def poll(self) -> int | None:
        return self.process.poll()

    def line_at(self, text: str) -> float | None:
        """When the first progress line containing ``text`` arrived; None if none has."""
        return next((at for at, line in list(self.lines) if text in line), None)

    def communicate(self, timeout: float) -> tuple[str, str]:
        """Wait for the release to end: (stdout, all of its progress)."""
        self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=30)
        return "".join(self._out), "".join(line for _, line in self.lines)


def lab_status() -> dict:
    """What `mcpdeploy lab status --json` tells a client: URL, CA, API key file, SSH."""
    doc = json.loads(mcpdeploy("lab", "status", "--json").stdout)
    assert doc["up"] and doc["ca_cert"] and doc["api_key_file"], doc
    return doc


def served() -> tuple[str, int]:
    """(X-MCP-Color, status) of /health/mcp through the edge."""
    settings = load_settings("lab")
    context = ssl.create_default_context(cafile=str(STATE_DIR / "ca.crt"))
    with httpx2.Client(verify=context, timeout=10) as client:
        response = client.get(f"https://127.0.0.1:{settings.lab.https_port}/health/mcp")
    return response.headers.get("x-mcp-color", "?"), response.status_code


def status() -> dict:
    result = mcpdeploy("status", "--json")
    return json.loads(result.stdout)


def drift() -> dict[str, str]:
    """How the lab differs from what Pulumi.lab.yaml says a release leaves, by host: {}
    when the edge serves the file's active color, no release lock is held, and every app
    host answers ready and runs the image the file gives its color."""
    settings = load_settings("lab")
    doc = status()
    found = {"edge": f"the release lock is held: {doc['lock']}"} if doc["lock"] else {}
    color, code = served()
    if (color, code) != (settings.active_color, 200):
        found["edge"] = f"the edge serves {color} ({code}), not {settings.active_color}"
    for entry in doc["hosts"]:
        wanted = release_image(settings.image_for(entry["color"]))
        if (entry["health"], entry["image"]) != (200, wanted):
            found[entry["name"]] = f"health {entry['health']}, runs {entry['image']}"
    return found


def restore(original: str) -> None:
    """Put Pulumi.lab.yaml back and converge the hosts that :func:`drift` finds off it
    (a deploy limited to them: a release and its rollback leave the hosts as they were,
    and a deploy of every host then changes nothing and costs some 25 s)."""
    if STACK_FILE.read_text() != original:
        STACK_FILE.write_text(original)
    run(*SSH, "edge", "rm -f /var/lib/mcpdeploy/releases/lock.json")
    for host in APP_HOSTS:
        run(*SSH, host, "systemctl start mcp-service")
    for host in APP_HOSTS:
        run(*SSH, host, READY)
    found = drift()
    if not found:
        return
    result = pyinfra(lab_fleet(), sorted(found))
    assert result.returncode == 0, result.stdout[-3000:]
    left = drift()
    assert left == {}, f"after a deploy of {sorted(found)}: {left}"


def switched_colors() -> Iterator[tuple[str, str]]:
    """Fixture body for tests that switch: yields (active, idle); afterwards the stack
    file is put back and, if it had changed, the edge's part of the deploy run again."""
    original = STACK_FILE.read_text()
    active = load_settings("lab").active_color
    yield active, "green" if active == "blue" else "blue"
    if STACK_FILE.read_text() != original:
        STACK_FILE.write_text(original)
        result = pyinfra(lab_fleet(), ["edge"], deploy="deploy_edge.py")
        assert result.returncode == 0, result.stdout[-2000:]


def started_at(host: str) -> str:
    """When ``host``'s service container started (a restart changes it)."""
    started = ["docker", "inspect", "--format", "'{{.State.StartedAt}}'", "mcp-service"]
    result = run(*SSH, host, *started)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# Run on an app host: the service's pool gauges, read as the performance check reads them.
_POOL_GAUGES = r"""
import urllib.request
env = dict(l.split("=", 1) for l in open("/etc/mcp-service/env").read().splitlines() if "=" in l)
request = urllib.request.Request("http://127.0.0.1:3000/api/v1/mcp/metrics",
                                 headers={"Authorization": "Bearer " + env["MCP_METRICS_TOKEN"]})
text = urllib.request.urlopen(request, timeout=5).read().decode()
print("\n".join(l for l in text.splitlines() if l.startswith("mcp_db_pool")))
"""


def service_report(hosts: tuple[str, ...] = APP_HOSTS, lines: int = 20) -> str:
    """For a failure message under load: each app host's last service warnings and errors
    (15 minutes) and its pool gauges, so a 503 is explained by the run that saw it."""
    level = """'"level": "(WARNING|ERROR|CRITICAL)"'"""
    parts = []
    for host in hosts:
        logs = run(
            *SSH,
            host,
            f"docker logs --since 15m mcp-service 2>&1 | grep -E {level} | tail -n {lines}",
            timeout=60,
        )
        gauges = run(*SSH, host, "python3", "-", timeout=60, stdin=_POOL_GAUGES)
        found = (logs.stdout + gauges.stdout + gauges.stderr[-300:]).strip()
        parts.append(f"--- {host}\n{found or '(no warnings)'}")
    return "\n" + "\n".join(parts)


def current_image() -> str:
    """The digest-pinned image of the lab's sources (built and pushed when missing)."""
    return release_image(load_settings("lab").image)


def variant_image(tag: str, dockerfile_tail: str) -> str:
    """The current image with ``dockerfile_tail`` on top, in the lab registry as ``tag``."""
    current_image()
    client = docker_client()
    source = f"127.0.0.1:{REGISTRY_PORT}/{REPOSITORY}:{app_source_tag()}"
    client.images.pull(source)
    dockerfile = f"FROM {source}\n{dockerfile_tail}\n"
    image, _ = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), rm=True, pull=False)
    image.tag(f"127.0.0.1:{REGISTRY_PORT}/{REPOSITORY}", tag)
    for line in client.images.push(
        f"127.0.0.1:{REGISTRY_PORT}/{REPOSITORY}", tag, stream=True, decode=True
    ):
        assert "error" not in line, line
    return f"{REGISTRY_NAME}:{REGISTRY_PORT}/{REPOSITORY}:{tag}"


def wait_for(condition, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def restored_lab() -> Iterator[str]:
    """Fixture body: yields the stack file's text; restores file, hosts and edge after."""
    original = STACK_FILE.read_text()
    assert load_settings("lab").active_color == "blue"
    yield original
    restore(original)
    assert served() == ("blue", 200)


# Run on the edge: one MCP tools/call against an app host's address, as the edge reaches it.
_TOOL_CALL = r"""
import json, ssl, sys, urllib.error, urllib.request
args = json.load(sys.stdin)
context = ssl.create_default_context(cafile="/etc/nginx/tls/upstream-ca.crt")
context.check_hostname = False
body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": args["tool"], "arguments": args["arguments"]}}
request = urllib.request.Request(
    "https://" + args["address"] + "/api/v1/mcp/", data=json.dumps(body).encode(),
    headers={"Host": args["domain"], "Authorization": "Bearer " + args["key"],
             "Accept": "application/json, text/event-stream", "Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request, context=context, timeout=15) as response:
        status, text = response.status, response.read().decode()
except urllib.error.HTTPError as error:
    status, text = error.code, error.read().decode()
data = next((l[5:] for l in text.splitlines() if l.startswith("data:")), text)
print(json.dumps({"status": status, "body": json.loads(data)}))
"""


def tool_call_on(host: str, tool: str, arguments: dict) -> dict:
    """``tools/call`` on app ``host`` directly (from the edge), with a key of its own."""
    fleet = lab_fleet()
    target = next(h for h in fleet.hosts if h.name == host)
    request = {"tool": tool, "arguments": arguments, "address": target.address}
    request["domain"] = load_settings("lab").domain
    with gate_key(fleet, target, minutes=5) as key:
        result = fleet.run(
            "edge", ["python3", "-c", _TOOL_CALL], stdin=json.dumps({**request, "key": key})
        )
    return json.loads(result.stdout)


def psql(query: str) -> list[str]:
    """Rows of ``query`` on the service's database (as postgres, on the data host)."""
    result = run(
        *SSH, "data", f'runuser -u postgres -- psql -d railspress_production -Atc "{query}"'
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def posts_columns() -> set[str]:
    """The columns of the service's posts table, as PostgreSQL on the data host has them."""
    return set(
        psql("SELECT column_name FROM information_schema.columns WHERE table_name = 'posts'")
    )
