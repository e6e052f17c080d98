"""The SSE stream on GET /api/v1/mcp/: keep-alives, a clean end on `streams close` and on
SIGTERM, and the same guard as POST."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_harness import ServiceProcess, run_cli, wait_until

KEEPALIVE = 0.5


class Stream:
    """One GET stream read on a thread: its lines as they arrive and how it ended."""

    def __init__(self, service: ServiceProcess, key: str | None) -> None:
        self.lines: list[tuple[float, str]] = []
        self.status: int | None = None
        self.headers: httpx2.Headers | None = None
        self.ended: str | None = None  # "complete", or the error that ended it
        headers = {"Accept": "text/event-stream"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(service.mcp_url, headers))
        self.thread.start()
        assert self.opened.wait(15), "no response to the GET"

    def _read(self, url: str, headers: dict[str, str]) -> None:
        try:
            with httpx2.stream("GET", url, headers=headers, timeout=30) as response:
                self.status, self.headers = response.status_code, response.headers
                self.opened.set()
                for line in response.iter_lines():
                    self.lines.append((time.monotonic(), line))
            self.ended = "complete"
        except httpx2.HTTPError as exc:
            self.ended = f"{type(exc).__name__}: {exc}"
        finally:
            self.opened.set()

    def keepalives(self) -> list[float]:
        return [at for at, line in self.lines if line == ": keepalive"]

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the stream did not end"


@pytest.fixture
def streaming(base_env: dict[str, str]) -> Iterator[ServiceProcess]:
    """Two workers (a close must reach streams on either), a short keep-alive and a
    request timeout shorter than the test's streams (which must not apply to them)."""
    service = ServiceProcess(
        dict(
            base_env,
            MCP_WORKERS="2",
            MCP_STREAM_KEEPALIVE_SECONDS=str(KEEPALIVE),
            MCP_STREAM_RETRY_MS="2500",
            MCP_TIMEOUT_SECONDS="1",
        )
    )
    yield service
    service.stop()


def _count(service: ServiceProcess) -> int:
    result = run_cli(service.env, "streams", "count")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["open"]


def test_stream_opens_with_retry_hint_and_keeps_alive_past_the_request_timeout(
    streaming: ServiceProcess, api_key: str
):
    stream = Stream(streaming, api_key)
    try:
        assert stream.status == 200
        assert stream.headers is not None
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["x-accel-buffering"] == "no"
        wait_until(lambda: len(stream.keepalives()) >= 4, 10)
        assert "retry: 2500" in stream.text()
        beats = stream.keepalives()
        gaps = [b - a for a, b in itertools.pairwise(beats)]
        assert max(gaps) < KEEPALIVE * 3, gaps
        assert beats[-1] - stream.lines[0][0] > 1.0  # past MCP_TIMEOUT_SECONDS
        assert stream.ended is None
        assert _count(streaming) == 1
    finally:
        run_cli(streaming.env, "streams", "close")
        stream.join(10)
    # Its latency is the time to its first byte, not its life: a stream is no slow
    # response for the performance check (the guide's 5 s threshold).
    metrics = httpx2.get(
        f"{streaming.url}/api/v1/mcp/metrics",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    ).text
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "mcp_http_request_duration_seconds_bucket":
                counts[sample.labels["route"], sample.labels["le"]] = sample.value
    routes = {route for route, _ in counts}
    assert routes, metrics[:2000]
    # Everything this service answered, the stream included, within a second.
    for route in routes:
        assert counts[route, "1.0"] == counts[route, "+Inf"] > 0, (route, counts)


def test_streams_close_ends_open_streams_cleanly_and_later_ones_continue(
    streaming: ServiceProcess, api_key: str
):
    early = [Stream(streaming, api_key) for _ in range(3)]
    wait_until(lambda: _count(streaming) == 3, 10, 0.2)
    closed = run_cli(streaming.env, "streams", "close")
    assert closed.returncode == 0, closed.stderr
    assert json.loads(closed.stdout)["closing"] == 3
    started = time.monotonic()
    for stream in early:
        stream.join(10)
    assert time.monotonic() - started < 3
    for stream in early:
        assert stream.ended == "complete"
        assert ": close: close requested; reconnect" in stream.text()
    late = Stream(streaming, api_key)
    try:
        wait_until(lambda: len(late.keepalives()) >= 3, 10)
        assert late.ended is None
        assert _count(streaming) == 1
    finally:
        run_cli(streaming.env, "streams", "close")
        late.join(10)
    assert late.ended == "complete"
    wait_until(lambda: _count(streaming) == 0, 5, 0.2)


def test_stream_is_refused_without_a_key_or_without_accepting_sse(
    streaming: ServiceProcess, api_key: str
):
    stream = Stream(streaming, None)
    stream.join(10)
    assert stream.status == 401
    wrong = httpx2.get(
        streaming.mcp_url,
        headers={"Accept": "application/json", "Authorization": f"Bearer {api_key}"},
        timeout=10,
    )
    assert wrong.status_code == 406
    assert _count(streaming) == 0


def test_sigterm_ends_streams_cleanly_and_does_not_hold_the_stop(
    base_env: dict[str, str], api_key: str
):
    # A shutdown timeout far longer than the bound asserted: the stream must end itself.
    service = ServiceProcess(dict(base_env, MCP_SHUTDOWN_TIMEOUT_SECONDS="60"))
    stream = Stream(service, api_key)
    wait_until(lambda: _count(service) == 1, 10, 0.2)
    started = time.monotonic()
    service.stop(timeout=20)
    assert service.process.poll() is not None
    stream.join(5)
    assert time.monotonic() - started < 8
    assert stream.ended == "complete"
    assert ": close: service stopping; reconnect" in stream.text()
