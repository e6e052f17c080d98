"""The checks a color must pass before it gets traffic, and the watch after it does.

Gates run on the edge host, against each host of the idle color directly (the edge's
upstream CA, the service's domain as Host), so they prove what the edge will see before
a single client does: readiness (``/health/mcp`` 200 and ``ok``), the MCP handshake, and
``tools/list`` with an API key of the gates' own (:func:`gate_key`: created for this
release, expiring on its own, revoked after; it never eats into a client's rate limits
and never appears on a command line). The
testinfra suite limited to the idle hosts is the last gate. The watch reads the edge's
own access log for the new color's responses after a switch, with a light probe of its
own so a quiet service still gives a verdict.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcpdeploy.fleet import Fleet, FleetError, FleetHost
from mcpdeploy.settings import Release, project_root

EDGE_CA = "/etc/nginx/tls/upstream-ca.crt"
EDGE_ACCESS_LOG = "/var/log/nginx/edge.access.log"

_GATES = r"""
import json, ssl, sys, time, urllib.error, urllib.request
args = json.load(sys.stdin)
if args["ca"]:
    context = ssl.create_default_context(cafile=args["ca"])
    context.check_hostname = False  # app certificates name the domain; we dial addresses
else:  # a host asking its own nginx over loopback (the testinfra gate checks the certificate)
    context = ssl._create_unverified_context()

def call(url, body=None, key=None):
    headers = {"Host": args["domain"], "Accept": "application/json, text/event-stream"}
    if key:
        headers["Authorization"] = "Bearer " + key
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body).encode()
    request = urllib.request.Request(url, data=body, headers=headers)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, context=context, timeout=15) as response:
            status, text = response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode(errors="replace")
    except OSError as error:
        status, text = None, str(error)
    return status, text, round(time.monotonic() - started, 3)

def document(text):
    # Streamable HTTP answers JSON, or one SSE event whose data is the JSON.
    for line in text.splitlines():
        if line.startswith("data:"):
            return json.loads(line[5:])
    return json.loads(text)

results = []
for address in args["addresses"]:
    base = "https://" + address
    status, text, seconds = call(base + "/health/mcp")
    try:
        body = json.loads(text)
    except ValueError:
        body = {}
    ok = status == 200 and body.get("status") == "ok"
    results.append({"gate": "readiness", "address": address, "ok": ok, "seconds": seconds,
                    "detail": f"/health/mcp {status}: {text[:200]}"})
    status, text, seconds = call(base + "/api/v1/mcp/session/handshake", {}, args["key"])
    try:
        body = json.loads(text)
    except ValueError:
        body = {}
    ok = status == 200 and body.get("status") == "ok" and bool(body.get("protocol_version"))
    results.append({"gate": "handshake", "address": address, "ok": ok, "seconds": seconds,
                    "detail": f"handshake {status}: {text[:200]}"})
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    status, text, seconds = call(base + "/api/v1/mcp/", request, args["key"])
    try:
        tools = [t["name"] for t in document(text)["result"]["tools"]]
    except (ValueError, KeyError, TypeError):
        tools = []
    results.append({"gate": "tools/list", "address": address, "ok": status == 200 and bool(tools),
                    "seconds": seconds,
                    "detail": f"tools/list {status}: " + (", ".join(tools) or text[:200])})
print(json.dumps(results))
"""

_WATCH = r"""
import json, ssl, sys, time, urllib.error, urllib.request
args = json.load(sys.stdin)
log, addresses = args["log"], [a + ":" for a in args["addresses"]]
with open(log, "rb") as f:
    f.seek(0, 2)
    offset = f.tell()
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE  # the edge itself, on loopback
durations, errors, statuses = [], 0, {}
started = time.monotonic()
verdict, reason = "pass", ""

def probe():
    request = urllib.request.Request("https://127.0.0.1/health/mcp",
                                     headers={"Host": args["domain"]})
    try:
        urllib.request.urlopen(request, context=context, timeout=5).read()
    except (urllib.error.HTTPError, OSError):
        pass

def read_new():
    global offset, errors
    with open(log, "rb") as f:
        f.seek(offset)
        chunk = f.read()
    complete = chunk.rfind(b"\n") + 1
    offset += complete
    for line in chunk[:complete].splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        upstream = str(entry.get("upstream", ""))
        if not any(upstream.startswith(a) or (", " + a) in upstream for a in addresses):
            continue
        status = int(entry.get("status", 0))
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        durations.append(float(entry.get("duration", 0)))
        if status >= 500:
            errors += 1

def judge(final):
    total = len(durations)
    percent = 100.0 * errors / total if total else 0.0
    p99 = sorted(durations)[max(0, int(0.99 * total) - 1)] if total else 0.0
    if total >= args["min_requests"] or final:
        if percent > args["max_error_percent"]:
            return "fail", f"{errors} of {total} responses failed ({percent:.1f} %)", percent, p99
        if total >= args["min_requests"] and p99 > args["max_p99_seconds"]:
            return "fail", f"p99 {p99:.3f} s above {args['max_p99_seconds']} s", percent, p99
    return "pass", "", percent, p99

while time.monotonic() - started < args["seconds"]:
    probe()
    read_new()
    verdict, reason, percent, p99 = judge(False)
    if verdict == "fail":
        break
    time.sleep(0.5)
read_new()
if verdict == "pass":
    verdict, reason, percent, p99 = judge(True)
print(json.dumps({"verdict": verdict, "reason": reason, "requests": len(durations),
                  "errors": errors, "error_percent": round(percent, 2), "p99_seconds": p99,
                  "statuses": statuses, "seconds": round(time.monotonic() - started, 1)}))
"""

# Run where the connections are seen: the edge (its connections to the old color's
# addresses) or an old host itself (AWS: its inbound HTTPS from the ALB). "filters" are
# ss(8) filters; a connection matching one of them counts.
_DRAIN = r"""
import json, subprocess, sys, time
args = json.load(sys.stdin)

def count():
    return sum(
        sum(1 for line in subprocess.run(["ss", "-Htn", "state", "established", *f],
                                         capture_output=True, text=True).stdout.splitlines()
            if line.strip())
        for f in args["filters"])

before = count()
deadline = time.monotonic() + args["seconds"]
left = before
while left and time.monotonic() < deadline:
    time.sleep(0.5)
    left = count()
# With "cut", what is still open is closed from here: nginx sees a reset on those
# connections (a stream still running is cut), new requests are not touched.
for f in args["filters"] if left and args["cut"] else []:
    subprocess.run(["ss", "-K", "state", "established", *f], capture_output=True)
print(json.dumps({"before": before, "left": left,
                  "still_open": count() if left and args["cut"] else left}))
"""


@dataclass(frozen=True)
class GateResult:
    """One gate on one host."""

    gate: str
    host: str
    ok: bool
    seconds: float
    detail: str


def _edge(fleet: Fleet) -> FleetHost:
    return fleet.role("edge")[0]


@contextmanager
def gate_key(fleet: Fleet, host: FleetHost, minutes: int = 30) -> Iterator[str]:
    """A short-lived API key for the gates, created through ``host``'s service, revoked after."""
    create = ["docker", "exec", "mcp-service", "mcp-service", "keys", "create"]
    result = fleet.run(
        host.name, [*create, "--name", "release-gate", "--expires-minutes", str(minutes)]
    )
    created = json.loads(result.stdout)
    try:
        yield created["key"]
    finally:
        revoke = ["docker", "exec", "mcp-service", "mcp-service", "keys", "revoke"]
        fleet.run(host.name, [*revoke, created["prefix"]], check=False)


def service_gates(
    fleet: Fleet, hosts: list[FleetHost], domain: str, key: str, *, from_edge: bool = True
) -> list[GateResult]:
    """Readiness, handshake and tools/list on each of ``hosts``: from the edge (its
    upstream CA, each host's address), or with ``from_edge=False`` (AWS: the load balancer
    is not a host to run on) from each host itself, through its own nginx on loopback."""
    if from_edge:
        names = {h.address: h.name for h in hosts}
        request = {"ca": EDGE_CA, "domain": domain, "key": key, "addresses": list(names)}
        result = fleet.run(
            _edge(fleet).name, ["python3", "-c", _GATES], stdin=json.dumps(request), timeout=180
        )
        found = [(names[r["address"]], r) for r in json.loads(result.stdout)]
    else:
        found = []
        for host in hosts:
            request = {"ca": None, "domain": domain, "key": key, "addresses": ["127.0.0.1"]}
            result = fleet.run(
                host.name, ["python3", "-c", _GATES], stdin=json.dumps(request), timeout=180
            )
            found += [(host.name, r) for r in json.loads(result.stdout)]
    return [GateResult(r["gate"], name, r["ok"], r["seconds"], r["detail"]) for name, r in found]


# The host suite's tests about an app host itself are marked `gate` (a module-level
# pytestmark in each of their files). The others look across hosts (the firewall matrix,
# the data host, alerts) and some of them stop or wipe things on purpose (`disruptive`):
# a gate must never touch the serving color or the data.
GATE_MARKERS = "gate and not disruptive"


def testinfra_gate(fleet: Fleet, hosts: list[FleetHost], ssh_config: str) -> GateResult:
    """The app-host part of the testinfra suite (tests/hosts), on ``hosts`` only.

    The topology handed to the suite names ``hosts`` and the edge and data hosts (the
    suite probes an app host from the edge) but no other app host, so nothing reaches the
    serving color; tests marked ``disruptive`` are left out.
    """
    seen = [h for h in fleet.hosts if h in hosts or h.role != "app"]
    status = {
        "ssh_config": ssh_config,
        "hosts": [
            {"name": h.name, "role": h.role, "color": h.color, "address": h.address} for h in seen
        ],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as out:
        json.dump(status, out)
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-m",
                GATE_MARKERS,
                "tests/hosts",
                f"--hosts={','.join('ssh://' + h.name for h in hosts)}",
                f"--ssh-config={ssh_config}",
                f"--lab-status={out.name}",
                f"--stack={fleet.stack}",
            ],
            cwd=project_root(),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        Path(out.name).unlink()
    lines = result.stdout.strip().splitlines()
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    summary = lines[-1] if lines else result.stderr.strip()[-300:]
    detail = summary + ("; " + "; ".join(failed[:5]) if failed else "")
    return GateResult(
        "testinfra", ",".join(h.name for h in hosts), result.returncode == 0, 0.0, detail
    )


def watch(fleet: Fleet, hosts: list[FleetHost], domain: str, rules: Release) -> dict[str, Any]:
    """Judge ``hosts`` by the edge's access log for ``rules.watch_seconds``; stops early
    on a failure."""
    seconds = rules.watch_seconds
    request = {
        "log": EDGE_ACCESS_LOG,
        "addresses": [h.address for h in hosts],
        "domain": domain,
        "seconds": seconds,
        "max_error_percent": rules.max_error_percent,
        "max_p99_seconds": rules.max_p99_seconds,
        "min_requests": 20,
    }
    result = fleet.run(
        _edge(fleet).name,
        ["python3", "-c", _WATCH],
        stdin=json.dumps(request),
        timeout=seconds + 120,
    )
    return json.loads(result.stdout)


STREAMS = ["docker", "exec", "mcp-service", "mcp-service", "streams"]
# After the old color is asked to close its streams: they end within a second, and their
# edge connections then sit idle until the upstream keepalive_timeout (5 s) closes them.
CLOSE_WAIT_SECONDS = 10


Connections = Callable[[float, bool], dict[str, int]]


def edge_connections(fleet: Fleet, hosts: list[FleetHost]) -> Connections:
    """The edge's connections to ``hosts`` on :443 (the lab and self-hosted)."""
    filters = [["dst", h.address, "dport", "=", ":443"] for h in hosts]
    return lambda seconds, cut: _connections(fleet, [_edge(fleet)], filters, seconds, cut)


def inbound_connections(fleet: Fleet, hosts: list[FleetHost]) -> Connections:
    """Each of ``hosts``' own inbound connections on :443, summed (AWS: from the ALB)."""
    filters = [["sport", "=", ":443"]]
    return lambda seconds, cut: _connections(fleet, hosts, filters, seconds, cut)


def _connections(
    fleet: Fleet, where: list[FleetHost], filters: list[list[str]], seconds: float, cut: bool
) -> dict[str, int]:
    """Wait up to ``seconds`` for the connections matching ``filters`` on each host of
    ``where`` (at once) to end; with ``cut``, close what is left. {before, left,
    still_open}, summed."""
    request = json.dumps({"filters": filters, "seconds": seconds, "cut": cut})

    def one(host: FleetHost) -> dict[str, int]:
        command = ["python3", "-c", _DRAIN]
        result = fleet.run(host.name, command, stdin=request, timeout=seconds + 60)
        return json.loads(result.stdout)

    with ThreadPoolExecutor(max_workers=max(1, len(where))) as pool:
        counts = list(pool.map(one, where))
    return {key: sum(c[key] for c in counts) for key in ("before", "left", "still_open")}


def open_streams(fleet: Fleet, hosts: list[FleetHost]) -> int | None:
    """SSE streams open on ``hosts``, counted by the service (``mcp-service streams count``);
    None when a host cannot say (an image without the command, a host that is down)."""
    total = 0
    for host in hosts:
        try:
            result = fleet.run(host.name, [*STREAMS, "count"], timeout=60, check=False)
            total += int(json.loads(result.stdout)["open"])
        except (FleetError, ValueError, KeyError, TypeError):
            return None
    return total


def _close_streams(fleet: Fleet, host: FleetHost) -> bool:
    """Ask ``host``'s service to end its open streams cleanly; whether it could."""
    try:
        return fleet.run(host.name, [*STREAMS, "close"], timeout=60, check=False).returncode == 0
    except FleetError:
        return False


def drain(
    fleet: Fleet, hosts: list[FleetHost], seconds: int, connections: Connections | None = None
) -> dict[str, int]:
    """Drain ``hosts`` (the old color) after a switch; new requests already go elsewhere.

    ``connections`` counts and cuts what is still open to ``hosts`` (default: the edge's
    connections to them, :func:`edge_connections`; AWS: :func:`inbound_connections`).
    Those connections get ``seconds`` to finish (``drained``). If some
    are still open, the hosts are asked to end their streams cleanly (``mcp-service streams
    close``: each stream finishes its response and the client reconnects, to the new
    color); what ends within :data:`CLOSE_WAIT_SECONDS` is ``closed``. What is left then
    is closed where it was counted (``ss -K``): ``cut``. These count connections, and idle
    keep-alive connections of the edge are among them (they end within 5 s, as
    ``drained`` or ``closed``). Streams themselves are counted by the service, so the
    ``streams_*`` keys (present when every host could count) are exact: open at the
    switch, drained, closed cleanly, and still running when the edge cut (``streams_cut``).
    """
    connections = connections or edge_connections(fleet, hosts)
    streams_at_switch = open_streams(fleet, hosts)
    waited = connections(seconds, False)
    streams_left = open_streams(fleet, hosts) if streams_at_switch else streams_at_switch
    report = {"open_at_switch": waited["before"], "drained": waited["before"] - waited["left"]}
    left, closed, streams_after_close = waited["left"], 0, streams_left
    if left or streams_left:
        asked = [_close_streams(fleet, host) for host in hosts]
        # An image without the command (or a host that does not answer): nothing to wait for.
        wait = CLOSE_WAIT_SECONDS if all(asked) else 0
        after_close = connections(wait, False)
        closed, left = left - after_close["left"], after_close["left"]
        if streams_left is not None:
            streams_after_close = open_streams(fleet, hosts)
    still_open = connections(0, True)["still_open"] if left else 0
    report.update(closed=closed, cut=left, still_open=still_open)
    if None not in (streams_at_switch, streams_left, streams_after_close):
        report.update(
            streams_at_switch=streams_at_switch,
            streams_drained=streams_at_switch - streams_left,
            streams_closed=streams_left - streams_after_close,
            streams_cut=streams_after_close,
        )
    return report
