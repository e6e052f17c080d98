"""Steady load through the edge: what a switch or a release looks like to clients.

Open-loop pacing: request *i* is due ``i / rate`` seconds after the start whatever became
of the earlier ones, so a slow server shows up as latency (measured from when the request
was due, queueing in the client included) and never as a lower rate. The requests mix
``/health``, ``/health/mcp`` and an MCP ``tools/call``, come from several client addresses
in turn, and are planned within the stack's rate limits per client and per API key
(checked before the first request). Every request is recorded: when it was due and sent,
its status or error, its latency and the color that served it (``X-MCP-Color``).

In the lab, whatever connects to ``127.0.0.1:<httpsPort>`` reaches the edge through
Docker's userland proxy and so arrives from the bridge's gateway: one client. Distinct
clients are secondary addresses on the host's side of the lab bridge (``.200`` and up,
outside every lab host's address) connecting to the edge's own address (docs/load.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from mcpdeploy.lab import Lab, Topology, topology
from mcpdeploy.settings import Settings, load_settings

DEFAULT_RATE = 220.0  # requests/s: ≥ 200 achieved with room for the pacer's jitter
DEFAULT_CLIENTS = 12
DEFAULT_MIX: Mapping[str, int] = {"health": 1, "health_mcp": 1, "tools_call": 1}
DEFAULT_MAX_SECONDS = 600.0  # every load is bounded in time, even if nobody stops it
DEFAULT_TIMEOUT = 10.0
# A plan may use at most this share of any limit: room for jitter in arrival times and for
# fixed windows that a run shares with whatever came just before it.
HEADROOM = 0.8
# Lab client addresses: subnet .200 and up; lab hosts stop below .140 (topology.py).
FIRST_CLIENT_HOST = 200
MAX_CLIENTS = 50
COLOR_HEADER = "x-mcp-color"
MCP_PROTOCOL_VERSION = "2025-11-25"


class LoadPlanError(Exception):
    """The load cannot be run as asked (a limit it would exceed, a bad mix, no address)."""


@dataclass(frozen=True)
class Probe:
    """One kind of request. ``mcp``: under /api/v1/mcp/, so the MCP limits and key apply."""

    method: str
    path: str
    body: Mapping[str, Any] | None = None
    mcp: bool = False


PROBES: Mapping[str, Probe] = {
    "health": Probe("GET", "/health"),
    "health_mcp": Probe("GET", "/health/mcp"),
    # The SDK's stateless Streamable HTTP: one POST, no session, a JSON answer.
    "tools_call": Probe(
        "POST",
        "/api/v1/mcp/",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "list_posts", "arguments": {"limit": 5}},
        },
        mcp=True,
    ),
}


def mix_pattern(mix: Mapping[str, int]) -> tuple[str, ...]:
    """One period of the mix, interleaved (nginx's smooth weighted round robin).

    ``{"a": 2, "b": 1}`` gives ``("a", "b", "a")``: each kind as often as its weight, spread
    out rather than in runs, so every stretch of the load has the same mix.
    """
    unknown = sorted(set(mix) - set(PROBES))
    if unknown or not mix or any(weight <= 0 for weight in mix.values()):
        raise LoadPlanError(
            f"a mix gives each of {', '.join(PROBES)} a positive weight; got {dict(mix)}"
        )
    total = sum(mix.values())
    current = dict.fromkeys(mix, 0)
    pattern = []
    for _ in range(total):
        for kind, weight in mix.items():
            current[kind] += weight
        chosen = max(current, key=lambda kind: current[kind])
        current[chosen] -= total
        pattern.append(chosen)
    return tuple(pattern)


@dataclass(frozen=True)
class Slot:
    """Request ``index`` of a plan: due ``due`` seconds after the start, from ``client``."""

    index: int
    due: float
    client: int
    kind: str


@dataclass(frozen=True)
class LoadPlan:
    """What to send: ``rate`` requests/s from ``clients`` (source addresses) in turn."""

    rate: float
    clients: tuple[str, ...]
    mix: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_MIX))
    max_seconds: float = DEFAULT_MAX_SECONDS
    pattern: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.rate > 0 or not self.max_seconds > 0:
            raise LoadPlanError("the rate and the time bound must be positive")
        if not self.clients or len(set(self.clients)) != len(self.clients):
            raise LoadPlanError("a plan needs at least one client, each a distinct address")
        object.__setattr__(self, "pattern", mix_pattern(self.mix))

    def slot(self, index: int) -> Slot:
        """Request ``index``: clients take turns; each client goes through the mix in turn."""
        clients = len(self.clients)
        kind = self.pattern[(index // clients) % len(self.pattern)]
        return Slot(index, index / self.rate, index % clients, kind)

    def kind_rate(self, kind: str) -> float:
        """Requests/s of ``kind``, all clients together."""
        return self.rate * self.mix.get(kind, 0) / sum(self.mix.values())

    @property
    def mcp_rate(self) -> float:
        """Requests/s to the MCP endpoint, all clients together (they share the API key)."""
        return sum(self.kind_rate(kind) for kind, probe in PROBES.items() if probe.mcp)


@dataclass(frozen=True)
class ClientLimits:
    """The limits that MCP requests meet behind the edge, from the stack's settings.

    ``zone_per_second``: nginx's ``mcp`` zone on an app host, per client address (a client
    may land on one host only, so it is not multiplied by the hosts); ``per_minute`` ...
    ``per_day``: the service's, per client address and per API key (fixed windows).
    """

    zone_per_second: float
    per_minute: int
    per_hour: int
    per_day: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientLimits:
        limits = settings.rate_limits
        return cls(
            settings.nginx_rate_limits.mcp.rate_per_second,
            limits.per_minute,
            limits.per_hour,
            limits.per_day,
        )


def limit_problems(plan: LoadPlan, limits: ClientLimits) -> list[str]:
    """Each way ``plan`` would exceed :data:`HEADROOM` of a limit, naming the setting."""
    per_client = plan.mcp_rate / len(plan.clients)
    seconds = plan.max_seconds
    checks = [
        (
            per_client,
            limits.zone_per_second,
            "MCP requests/s per client",
            "nginxRateLimits.mcp.ratePerSecond",
        ),
        (per_client * 60, limits.per_minute, "MCP requests/min per client", "rateLimits.perMinute"),
        (
            plan.mcp_rate * 60,
            limits.per_minute,
            "MCP requests/min on the key",
            "rateLimits.perMinute",
        ),
        (
            plan.mcp_rate * min(seconds, 3600),
            limits.per_hour,
            "MCP requests in an hour on the key",
            "rateLimits.perHour",
        ),
        (
            plan.mcp_rate * min(seconds, 86400),
            limits.per_day,
            "MCP requests in a day on the key",
            "rateLimits.perDay",
        ),
    ]
    return [
        f"{what}: {planned:.1f} planned, over {HEADROOM:.0%} of mcpdeploy:{setting} ({limit}); "
        "add clients, lower the rate or the MCP share, or raise the setting"
        for planned, limit, what, setting in checks
        if planned > HEADROOM * limit
    ]


@dataclass(frozen=True)
class Sample:
    """One request as the client saw it; times in seconds after the load started.

    ``latency`` runs from when the request was *due* to its answer (or error), so time
    spent waiting for a connection counts. ``error``: a connection error, a timeout, or an
    answer that is not what the request asks for; None otherwise. ``detail``: the start of
    the body of an answer other than 200, for the failure report.
    """

    kind: str
    client: str
    due: float
    sent: float
    latency: float
    status: int | None
    color: str | None
    error: str | None = None
    detail: str | None = None

    @property
    def failed(self) -> bool:
        """Anything but a 200 with the expected answer: 5xx, 429, resets, timeouts, ..."""
        return self.error is not None or self.status != 200


@dataclass(frozen=True)
class LoadResult:
    """Statistics over recorded samples (all of a run, or a window of it), by due time."""

    samples: tuple[Sample, ...]

    @property
    def sent(self) -> int:
        return len(self.samples)

    @property
    def failures(self) -> tuple[Sample, ...]:
        return tuple(s for s in self.samples if s.failed)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def latency(self, percent: float) -> float:
        """Nearest-rank percentile of the latencies, in seconds (NaN without samples)."""
        if not self.samples:
            return math.nan
        ordered = sorted(s.latency for s in self.samples)
        return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]

    @property
    def p50(self) -> float:
        return self.latency(50)

    @property
    def p99(self) -> float:
        return self.latency(99)

    @property
    def colors(self) -> Counter[str]:
        """Answers per color that served them (failed requests without an answer excluded)."""
        return Counter(s.color for s in self.samples if s.color)

    @property
    def achieved_rate(self) -> float:
        """Requests/s as actually sent: the gaps between the first and the last send."""
        if len(self.samples) < 2:
            return 0.0
        sent = [s.sent for s in self.samples]
        span = max(sent) - min(sent)
        return (len(sent) - 1) / span if span > 0 else math.inf

    def window(self, start: float, end: float = math.inf) -> LoadResult:
        """The requests due in ``[start, end)``."""
        return LoadResult(tuple(s for s in self.samples if start <= s.due < end))

    def last(self, seconds: float) -> LoadResult:
        """The requests due in the last ``seconds`` of the run so far."""
        if not self.samples:
            return self
        return self.window(max(s.due for s in self.samples) - seconds)

    def first_due(self, color: str) -> float | None:
        """When the first request that ``color`` answered was due."""
        return min((s.due for s in self.samples if s.color == color), default=None)

    def last_due(self, color: str) -> float | None:
        """When the last request that ``color`` answered was due."""
        return max((s.due for s in self.samples if s.color == color), default=None)

    def failure_report(self) -> str:
        """Failures grouped by kind and outcome: how many, when, and one answer's start."""
        groups: dict[tuple[str, str], list[Sample]] = {}
        for s in self.failures:
            groups.setdefault((s.kind, s.error or f"HTTP {s.status}"), []).append(s)
        lines = []
        for (kind, outcome), group in sorted(groups.items(), key=lambda g: -len(g[1])):
            first, last = min(s.due for s in group), max(s.due for s in group)
            detail = next((s.detail for s in group if s.detail), "")
            lines.append(
                f"{len(group)} x {kind}: {outcome}, due {first:.1f}-{last:.1f} s"
                + (f": {' '.join(detail.split())[:120]}" if detail else "")
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    """Where the load goes: ``url`` (scheme and address), verified as ``server_name``
    against ``ca_file`` (None: the system's CAs)."""

    url: str
    server_name: str
    ca_file: Path | None
    api_key: str = field(repr=False)


def unexpected_answer(kind: str, response: httpx2.Response) -> str | None:
    """Why a 200 is not the answer ``kind`` asks for, or None (a tools/call must succeed)."""
    if kind != "tools_call" or response.status_code != 200:
        return None
    try:
        result = response.json()["result"]
    except (ValueError, KeyError, TypeError):
        return f"tools/call answered without a JSON-RPC result: {response.text[:200]!r}"
    if result.get("isError"):
        return f"tools/call returned a tool error: {json.dumps(result)[:200]}"
    return None


class LoadGenerator:
    """Runs a :class:`LoadPlan` against a :class:`Target` in a background thread.

    ``start()`` returns at once; ``clock()`` reads the load's time base (seconds since the
    start, the same as the samples'), so callers can mark when their own events happened;
    ``snapshot()`` is the result so far; ``stop()`` sends nothing more, waits for the
    requests in flight and returns the result. The load also ends at ``plan.max_seconds``.
    """

    def __init__(self, target: Target, plan: LoadPlan, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.target = target
        self.plan = plan
        self.timeout = timeout
        self._samples: list[Sample] = []
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors: list[BaseException] = []
        self._origin = 0.0

    def clock(self) -> float:
        """Seconds since the load started."""
        return time.monotonic() - self._origin

    def start(self) -> LoadGenerator:
        """Start sending; returns once the first request is due."""
        self._thread = threading.Thread(target=self._thread_main, name="loadgen", daemon=True)
        self._thread.start()
        self._started.wait(timeout=30)
        return self

    @property
    def running(self) -> bool:
        """Still sending (False once stopped, at its time bound, or after an error)."""
        return bool(self._thread and self._thread.is_alive())

    def snapshot(self) -> LoadResult:
        """Every request answered (or failed) so far, in the order they were due."""
        return LoadResult(tuple(sorted(self._samples, key=lambda s: s.due)))

    def stop(self) -> LoadResult:
        """Stop sending, wait for the requests in flight, return the whole result."""
        self._stopping.set()
        if self._thread:
            self._thread.join(timeout=self.timeout + 30)
        if self._errors:
            raise self._errors[0]
        return self.snapshot()

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # re-raised by stop() in the caller's thread
            self._errors.append(exc)
        finally:
            self._started.set()

    def _client(self, address: str) -> httpx2.AsyncClient:
        ca_file = self.target.ca_file
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        # Enough connections that a slow server makes requests wait on it, not on the pool.
        limits = httpx2.Limits(max_connections=64, max_keepalive_connections=16)
        transport = httpx2.AsyncHTTPTransport(verify=context, limits=limits, local_address=address)
        return httpx2.AsyncClient(
            base_url=self.target.url,
            transport=transport,
            timeout=self.timeout,
            headers={"Host": self.target.server_name},
        )

    async def _run(self) -> None:
        clients = [self._client(address) for address in self.plan.clients]
        in_flight: set[asyncio.Task[None]] = set()
        try:
            self._origin = time.monotonic()
            self._started.set()
            index = 0
            while not self._stopping.is_set():
                now = self.clock()
                if now >= self.plan.max_seconds:
                    break
                while (slot := self.plan.slot(index)).due <= now:
                    address = self.plan.clients[slot.client]
                    task = asyncio.create_task(self._send(clients[slot.client], address, slot))
                    in_flight.add(task)
                    task.add_done_callback(lambda done: self._finished(in_flight, done))
                    index += 1
                await asyncio.sleep(slot.due - now)
            if in_flight:
                await asyncio.gather(*in_flight)
        finally:
            for client in clients:
                await client.aclose()

    def _finished(self, in_flight: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
        in_flight.discard(task)
        if not task.cancelled() and task.exception():
            self._errors.append(task.exception())  # a bug here, not the server: stop() raises

    async def _send(self, client: httpx2.AsyncClient, address: str, slot: Slot) -> None:
        probe = PROBES[slot.kind]
        headers = {}
        if probe.mcp:
            headers = {
                "Accept": "application/json, text/event-stream",
                "X-API-Key": self.target.api_key,
                "MCP-Protocol-Version": MCP_PROTOCOL_VERSION,
            }
        sent = self.clock()
        status = color = error = detail = None
        try:
            response = await client.request(
                probe.method,
                probe.path,
                json=probe.body,
                headers=headers,
                extensions={"sni_hostname": self.target.server_name},
            )
            status, color = response.status_code, response.headers.get(COLOR_HEADER)
            error = unexpected_answer(slot.kind, response)
            if status != 200:
                detail = response.text[:160]
        except httpx2.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        self._samples.append(
            Sample(
                slot.kind,
                address,
                slot.due,
                sent,
                self.clock() - slot.due,
                status,
                color,
                error,
                detail,
            )
        )


def lab_client_addresses(topo: Topology, count: int) -> tuple[str, ...]:
    """``count`` client addresses in the lab subnet, clear of every lab address."""
    if not 1 <= count <= MAX_CLIENTS:
        raise LoadPlanError(f"between 1 and {MAX_CLIENTS} clients, not {count}")
    base = topo.subnet.network_address
    addresses = tuple(str(base + FIRST_CLIENT_HOST + i) for i in range(count))
    taken = {h.address for h in topo.hosts} | {topo.gateway, topo.registry_address}
    if taken & set(addresses) or ipaddress.ip_address(addresses[-1]) not in topo.subnet:
        raise LoadPlanError(f"client addresses {addresses[0]}.. collide with the lab's hosts")
    return addresses


def _interface_of(address: str) -> str:
    shown = subprocess.run(
        ["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, check=True
    )
    for interface in json.loads(shown.stdout):
        if any(a.get("local") == address for a in interface.get("addr_info", [])):
            return interface["ifname"]
    raise LoadPlanError(f"no interface holds {address}: is the lab up (mcpdeploy lab status)?")


def _addresses_on(interface: str) -> set[str]:
    shown = subprocess.run(
        ["ip", "-j", "-4", "addr", "show", "dev", interface],
        capture_output=True,
        text=True,
        check=True,
    )
    return {a["local"] for i in json.loads(shown.stdout) for a in i.get("addr_info", [])}


@contextmanager
def bound_addresses(gateway: str, addresses: Sequence[str]) -> Iterator[None]:
    """``addresses`` on the host's interface that holds ``gateway`` (the lab bridge), as /32s.

    The host answers for them on the bridge, so a socket bound to one reaches the lab hosts
    from that address. Only the addresses added here are removed afterwards.
    """
    interface = _interface_of(gateway)
    added = []
    try:
        for address in sorted(set(addresses) - _addresses_on(interface)):
            subprocess.run(
                ["ip", "addr", "add", f"{address}/32", "dev", interface],
                capture_output=True,
                check=True,
            )
            added.append(address)
        yield
    finally:
        for address in added:
            subprocess.run(
                ["ip", "addr", "del", f"{address}/32", "dev", interface],
                capture_output=True,
                check=False,
            )


def lab_target(settings: Settings, lab: Lab) -> Target:
    """The edge's own address in the lab, verified as the stack's domain."""
    if not lab.api_key_file.exists():
        raise LoadPlanError(f"{lab.api_key_file} is missing: deploy the lab first")
    return Target(
        url=f"https://{lab.topo.host('edge').address}",
        server_name=settings.domain,
        ca_file=lab.ca_cert,
        api_key=lab.api_key_file.read_text().strip(),
    )


@contextmanager
def lab_load(
    rate: float = DEFAULT_RATE,
    clients: int = DEFAULT_CLIENTS,
    mix: Mapping[str, int] = DEFAULT_MIX,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    stack: str = "lab",
) -> Iterator[LoadGenerator]:
    """A started :class:`LoadGenerator` through the lab's edge from ``clients`` addresses.

    Refuses (:class:`LoadPlanError`) a plan that would exceed the stack's rate limits.
    """
    settings = load_settings(stack)
    lab = Lab(topology(settings))
    plan = LoadPlan(rate, lab_client_addresses(lab.topo, clients), dict(mix), max_seconds)
    problems = limit_problems(plan, ClientLimits.from_settings(settings))
    if problems:
        raise LoadPlanError(f"Pulumi.{stack}.yaml's limits: " + "; ".join(problems))
    target = lab_target(settings, lab)
    with bound_addresses(lab.topo.gateway, plan.clients), LoadGenerator(target, plan) as load:
        yield load
