"""The drain after a switch: connections that end in time are drained, streams that
outlive the timeout are closed cleanly by the service, and only what is left is cut.

The edge's script runs for real here, against an ``ss`` stand-in that lists and kills the
connections of a simulated old color; the service's ``streams count/close`` are simulated.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mcpdeploy import gates
from mcpdeploy.fleet import FleetHost

EDGE = FleetHost("edge", "edge", None, "10.0.0.10")
BLUE = FleetHost("app-blue", "app", "blue", "10.0.0.100")
GREEN = FleetHost("app-green", "app", "green", "10.0.0.120")
# ss(8) as the drain uses it: "state established dst ADDR dport = :443" lists (or with -K
# kills) the connections to ADDR:443 only.
FAKE_SS = """#!/bin/sh
dst=""; prev=""
for a in "$@"; do [ "$prev" = dst ] && dst="$a"; prev="$a"; done
case " $* " in
  *" -K "*) grep -v " $dst:443" "{state}" > "{state}.new"; mv "{state}.new" "{state}" ;;
  *) grep " $dst:443" "{state}" || true ;;
esac
"""


class OldColor:
    """The edge's connections to blue (an ``ss`` stand-in's file) and blue's streams."""

    def __init__(self, tmp_path: Path, connections: int, streams: int, knows_streams: bool):
        self.state = tmp_path / "connections"
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        (self.bin / "ss").write_text(FAKE_SS.format(state=self.state))
        (self.bin / "ss").chmod(0o755)
        self.set_connections(connections)
        self.streams = streams
        self.knows_streams = knows_streams
        self.asked: list[str] = []

    def set_connections(self, count: int) -> None:
        lines = [f"0 0 10.0.0.10:{40000 + i} {BLUE.address}:443" for i in range(count)]
        lines.append(f"0 0 10.0.0.10:50000 {GREEN.address}:443")  # the new color's: kept
        self.state.write_text("\n".join(lines) + "\n")

    def end_later(self, seconds: float) -> None:
        """The streams and their connections end ``seconds`` from now."""

        def end() -> None:
            self.streams = 0
            self.set_connections(0)

        threading.Timer(seconds, end).start()

    def run(self, host, command, timeout=120, check=True, stdin=None):
        if command[:2] == ["python3", "-c"]:
            assert host == "edge"
            return subprocess.run(
                [sys.executable, "-c", command[2]],
                input=stdin,
                capture_output=True,
                text=True,
                env={"PATH": f"{self.bin}:/usr/bin:/bin"},
                check=True,
            )
        assert command[:5] == gates.STREAMS and host == "app-blue", (host, command)
        self.asked.append(command[5])
        if not self.knows_streams:
            return subprocess.CompletedProcess(command, 1, "", "invalid choice: 'streams'")
        if command[5] == "close" and self.streams:
            self.end_later(0.5)
        return subprocess.CompletedProcess(command, 0, json.dumps({"open": self.streams}), "")


@pytest.fixture(autouse=True)
def short_close_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gates, "CLOSE_WAIT_SECONDS", 3)
    monkeypatch.setattr(gates, "_edge", lambda fleet: EDGE)


def test_connections_that_end_within_the_timeout_are_drained_without_a_close(tmp_path):
    old = OldColor(tmp_path, connections=2, streams=0, knows_streams=True)
    old.end_later(0.7)
    report = gates.drain(old, [BLUE], 5)
    assert report == {
        "open_at_switch": 2,
        "drained": 2,
        "closed": 0,
        "cut": 0,
        "still_open": 0,
        "streams_at_switch": 0,
        "streams_drained": 0,
        "streams_closed": 0,
        "streams_cut": 0,
    }
    assert "close" not in old.asked


def test_a_stream_that_outlives_the_timeout_is_closed_cleanly_not_cut(tmp_path):
    old = OldColor(tmp_path, connections=1, streams=1, knows_streams=True)
    started = time.monotonic()
    report = gates.drain(old, [BLUE], 1)
    assert time.monotonic() - started < 1 + gates.CLOSE_WAIT_SECONDS
    assert "close" in old.asked
    assert (report["drained"], report["closed"], report["cut"]) == (0, 1, 0)
    assert (report["streams_at_switch"], report["streams_closed"], report["streams_cut"]) == (
        1,
        1,
        0,
    )


def test_an_image_that_cannot_close_streams_is_cut_at_once_and_streams_go_uncounted(
    tmp_path,
):
    old = OldColor(tmp_path, connections=1, streams=1, knows_streams=False)
    started = time.monotonic()
    report = gates.drain(old, [BLUE], 1)
    # No close wait for a service that could not be asked.
    assert time.monotonic() - started < 1 + gates.CLOSE_WAIT_SECONDS - 1
    assert report == {"open_at_switch": 1, "drained": 0, "closed": 0, "cut": 1, "still_open": 0}
    # Only the old color's connection was cut; the new color's is untouched.
    assert old.state.read_text() == f"0 0 10.0.0.10:50000 {GREEN.address}:443\n"
