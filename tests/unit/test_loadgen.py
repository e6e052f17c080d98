"""The load generator's pacing, limit checks and statistics, and its engine against a local
server (127.0.0.1 only, about a second each)."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import pytest

from mcpdeploy.lab import topology
from mcpdeploy.loadgen import (
    ClientLimits,
    LoadGenerator,
    LoadPlan,
    LoadPlanError,
    LoadResult,
    Sample,
    Target,
    lab_client_addresses,
    limit_problems,
    mix_pattern,
    unexpected_answer,
)
from mcpdeploy.settings import load_settings

CLIENTS = tuple(f"172.30.77.{200 + i}" for i in range(12))


def test_mix_pattern_gives_each_kind_its_weight_spread_out():
    assert mix_pattern({"health": 2, "tools_call": 1}) == ("health", "tools_call", "health")
    pattern = mix_pattern({"health": 3, "health_mcp": 2, "tools_call": 1})
    assert Counter(pattern) == {"health": 3, "health_mcp": 2, "tools_call": 1}
    # Never two of a kind in a row where the weights allow it.
    assert pattern == ("health", "health_mcp", "health", "tools_call", "health_mcp", "health")


@pytest.mark.parametrize("mix", [{}, {"health": 0}, {"health": 1, "nope": 1}, {"health": -1}])
def test_a_mix_with_an_unknown_kind_or_no_positive_weight_is_refused(mix):
    with pytest.raises(LoadPlanError, match="positive weight"):
        mix_pattern(mix)


def test_requests_are_due_at_a_steady_pace_whatever_came_before():
    plan = LoadPlan(200, CLIENTS)
    assert [plan.slot(i).due for i in (0, 1, 200, 1000)] == [0, 0.005, 1.0, 5.0]


def test_clients_take_turns_and_each_client_sends_the_whole_mix():
    plan = LoadPlan(220, CLIENTS, {"health": 1, "health_mcp": 1, "tools_call": 1})
    period = len(CLIENTS) * len(plan.pattern)
    slots = [plan.slot(i) for i in range(10 * period)]
    assert [s.client for s in slots[:13]] == [*range(12), 0]
    for client in range(len(CLIENTS)):
        kinds = Counter(s.kind for s in slots if s.client == client)
        assert kinds == {"health": 10, "health_mcp": 10, "tools_call": 10}


def test_mcp_rate_counts_only_requests_to_the_mcp_endpoint():
    plan = LoadPlan(300, CLIENTS, {"health": 1, "health_mcp": 1, "tools_call": 1})
    assert plan.kind_rate("tools_call") == pytest.approx(100)
    assert plan.mcp_rate == pytest.approx(100)


@pytest.mark.parametrize(
    "kwargs",
    [{"rate": 0}, {"max_seconds": 0}, {"clients": ()}, {"clients": ("a", "a")}],
)
def test_a_plan_without_rate_time_bound_or_distinct_clients_is_refused(kwargs):
    with pytest.raises(LoadPlanError):
        LoadPlan(**{"rate": 100, "clients": ("a",), **kwargs})


LAB_LIMITS = ClientLimits(zone_per_second=10, per_minute=6000, per_hour=200000, per_day=2000000)


def test_the_default_load_fits_the_lab_limits():
    assert limit_problems(LoadPlan(220, CLIENTS, max_seconds=600), LAB_LIMITS) == []


def test_too_few_clients_exceed_the_nginx_zone_per_client():
    problems = limit_problems(LoadPlan(220, CLIENTS[:4], max_seconds=600), LAB_LIMITS)
    assert len(problems) == 1
    assert "per client" in problems[0] and "nginxRateLimits.mcp.ratePerSecond" in problems[0]


def test_the_guides_per_key_limits_refuse_the_load_whatever_the_clients():
    guide = ClientLimits(zone_per_second=10, per_minute=100, per_hour=1000, per_day=10000)
    problems = " ".join(limit_problems(LoadPlan(220, CLIENTS, max_seconds=600), guide))
    for setting in ("rateLimits.perMinute", "rateLimits.perHour", "rateLimits.perDay"):
        assert setting in problems
    assert "on the key" in problems


def test_the_hour_limit_counts_the_whole_time_bound():
    short, long = (LoadPlan(220, CLIENTS, max_seconds=s) for s in (60, 3 * 3600))
    limits = ClientLimits(zone_per_second=10, per_minute=6000, per_hour=50000, per_day=10**7)
    assert limit_problems(short, limits) == []
    assert any("perHour" in p for p in limit_problems(long, limits))


def sample(due: float, status: int | None = 200, color: str | None = "blue", **kw) -> Sample:
    fields = {"kind": "health", "client": "c", "sent": due, "latency": 0.01, "error": None}
    return Sample(due=due, status=status, color=color, **{**fields, **kw})


@pytest.mark.parametrize(
    ("status", "error", "failed"),
    [
        (200, None, False),
        (502, None, True),
        (429, None, True),
        (401, None, True),
        (None, "ReadError: connection reset", True),
        (200, "tools/call returned a tool error", True),
    ],
)
def test_anything_but_the_expected_200_is_a_failure(status, error, failed):
    assert sample(0, status, error=error).failed is failed


def test_result_counts_sent_failed_and_colors():
    result = LoadResult(
        (
            sample(0.0),
            sample(0.1, 502, color="blue"),
            sample(0.2, None, color=None, error="ConnectError"),
            sample(0.3, color="green"),
        )
    )
    assert (result.sent, result.failed) == (4, 2)
    assert result.colors == {"blue": 2, "green": 1}
    assert [s.due for s in result.failures] == [0.1, 0.2]
    assert (result.first_due("green"), result.last_due("blue")) == (0.3, 0.1)
    assert result.first_due("purple") is None
    report = result.failure_report()
    assert "1 x health: HTTP 502, due 0.1-0.1 s" in report and "ConnectError" in report


def test_percentiles_are_nearest_rank():
    result = LoadResult(tuple(sample(i, latency=(i + 1) / 1000) for i in range(200)))
    assert result.p50 == pytest.approx(0.100)
    assert result.p99 == pytest.approx(0.198)
    assert result.latency(100) == pytest.approx(0.200)
    assert math.isnan(LoadResult(()).p99)


def test_windows_select_by_due_time():
    result = LoadResult(tuple(sample(i / 10) for i in range(100)))
    assert result.window(1.0, 2.0).sent == 10
    assert result.window(9.5).sent == 5
    assert result.last(1.0).sent == 11  # due in [8.9, 9.9]


def test_achieved_rate_is_measured_from_the_send_times():
    steady = LoadResult(tuple(sample(i / 200) for i in range(1001)))
    assert steady.achieved_rate == pytest.approx(200)
    # Requests sent late (a pacer that falls behind) lower the measured rate.
    late = LoadResult(tuple(sample(i / 200, sent=i / 150) for i in range(1001)))
    assert late.achieved_rate == pytest.approx(150)
    assert LoadResult((sample(0),)).achieved_rate == 0


def response(status: int, body: object) -> httpx2.Response:
    return httpx2.Response(status, content=json.dumps(body).encode())


def test_a_tools_call_must_answer_a_result_that_is_not_an_error():
    ok = {"jsonrpc": "2.0", "id": 1, "result": {"content": [], "isError": False}}
    assert unexpected_answer("tools_call", response(200, ok)) is None
    tool_error = {"jsonrpc": "2.0", "id": 1, "result": {"content": [], "isError": True}}
    assert "tool error" in unexpected_answer("tools_call", response(200, tool_error))
    rpc_error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "bad"}}
    assert "without a JSON-RPC result" in unexpected_answer("tools_call", response(200, rpc_error))
    assert unexpected_answer("health", response(200, {})) is None


class Handler(BaseHTTPRequestHandler):
    """/health: 200 (after ``delay``); /health/mcp: 503; POST: a tools/call result."""

    delay = 0.0

    def do_GET(self):
        time.sleep(self.delay)
        self.answer(200 if self.path == "/health" else 503, {"status": "ok"})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.answer(200, {"jsonrpc": "2.0", "id": 1, "result": {"isError": False}})

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("X-MCP-Color", "blue")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_):
        pass


@pytest.fixture
def server(request):
    handler = type("H", (Handler,), {"delay": getattr(request, "param", 0.0)})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield Target(f"http://127.0.0.1:{httpd.server_port}", "localhost", None, "k" * 32)
    httpd.shutdown()


def run_for(target: Target, plan: LoadPlan, seconds: float) -> LoadResult:
    with LoadGenerator(target, plan) as load:
        deadline = time.monotonic() + 10
        while load.clock() < seconds and time.monotonic() < deadline:
            time.sleep(0.05)
    return load.stop()


def test_the_generator_records_every_request_with_status_and_color(server):
    result = run_for(server, LoadPlan(100, ("127.0.0.1",)), 1.0)
    assert 90 <= result.sent <= 115
    assert result.achieved_rate == pytest.approx(100, rel=0.1)
    kinds = Counter(s.kind for s in result.samples)
    assert result.failed == kinds["health_mcp"] > 0
    assert all(s.status == 503 for s in result.failures)
    assert result.colors == {"blue": result.sent}


@pytest.mark.parametrize("server", [0.2], indirect=True)
def test_a_slow_server_shows_as_latency_not_as_a_lower_rate(server):
    result = run_for(server, LoadPlan(50, ("127.0.0.1",), {"health": 1}), 1.0)
    assert result.achieved_rate == pytest.approx(50, rel=0.1)
    assert result.p50 >= 0.2


def test_the_generator_stops_by_itself_at_its_time_bound(server):
    with LoadGenerator(server, LoadPlan(50, ("127.0.0.1",), max_seconds=0.5)) as load:
        deadline = time.monotonic() + 10
        while load.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not load.running
    assert load.snapshot().sent <= 26


def test_connection_errors_are_recorded_not_raised():
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = Target(f"http://127.0.0.1:{port}", "localhost", None, "k")
    result = run_for(target, LoadPlan(20, ("127.0.0.1",)), 0.3)
    assert result.sent > 0 and result.failed == result.sent
    assert all(s.status is None and "ConnectError" in s.error for s in result.samples)


def test_lab_clients_get_addresses_clear_of_every_lab_host():
    topo = topology(load_settings("lab"))
    addresses = lab_client_addresses(topo, 12)
    assert addresses[0] == "172.30.77.200" and len(set(addresses)) == 12
    assert not set(addresses) & {h.address for h in topo.hosts}
    for count in (0, 51):
        with pytest.raises(LoadPlanError, match="between 1 and 50 clients"):
            lab_client_addresses(topo, count)
