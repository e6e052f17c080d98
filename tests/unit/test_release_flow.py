"""The release's orchestration, with the hosts replaced: what it does on each outcome.

The lab suite (tests/lab/test_release.py) runs the real thing; these pin the decisions:
a failed gate never switches and restores the stack file, a failed watch switches back,
Ctrl-C and errors always give the lock back, and every outcome is recorded.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

import pytest

from mcpdeploy import release as release_module
from mcpdeploy.fleet import Fleet, FleetHost
from mcpdeploy.release import ReleaseError, release, rollback
from mcpdeploy.releaselog import Holder, staleness
from mcpdeploy.stackfile import validated

STACK = """config:
  mcpdeploy:domain: mcp.lab.test
  mcpdeploy:activeColor: blue
  mcpdeploy:image: registry.mcp.lab.test:5000/mcpdeploy/app
  mcpdeploy:adminCidrs:
    - 172.30.77.1/32
"""
NEW = "registry.mcp.lab.test:5000/mcpdeploy/app@sha256:" + "b" * 64
FLEET = Fleet(
    stack="unit",
    ssh=("ssh",),
    hosts=(
        FleetHost("edge", "edge", None, "10.0.0.10"),
        FleetHost("app-blue", "app", "blue", "10.0.0.100"),
        FleetHost("app-green", "app", "green", "10.0.0.120"),
    ),
    inventory="hosts/unit.py",
)


class Store:
    log: ClassVar[list[dict]] = []  # the edge's release log: shared by every store of a test

    def __init__(self, fleet: Fleet) -> None:
        self.records = Store.log
        self.held = False
        Store.current = self

    def acquire(self, purpose: str, timeout_minutes: int, break_lock: bool = False) -> Holder:
        assert not self.held
        self.held = True
        return Holder("t", "me", "here", 1, time.time(), purpose)

    def release(self, holder: Holder) -> None:
        self.held = False

    def record(self, record: dict) -> None:
        self.records.append(record)

    def last(self, count: int = 5) -> list[dict]:
        return self.records[-count:]


class FakeTarget:
    """Every target-specific step recorded: the switch edits the stack file as the edge's
    does, the watch answers what the test says."""

    vantage = "the test"
    host_suite = True

    def __init__(self, calls: dict) -> None:
        self.fleet = FLEET
        self.stack = FLEET.stack
        self.calls = calls

    def store(self) -> Store:
        return Store(self.fleet)

    def resolve(self, image: str, progress) -> str:
        return NEW

    def readiness(self, domain: str, color: str) -> dict:
        return {h.name: 200 for h in self.fleet.app_hosts(color)}

    def service_gates(self, hosts, domain, key) -> list:
        return []

    def switch(self, path_: Path, current: str, color: str, progress) -> str:
        new = current.replace(
            f"activeColor: {validated(current, 'x').active_color}", f"activeColor: {color}"
        )
        self.calls["switches"].append(new)
        path_.write_text(new)
        return new

    def drain(self, hosts, seconds) -> dict:
        return {"open_at_switch": 2, "drained": 2, "closed": 0, "cut": 0}

    def watch(self, *args) -> dict:
        return self.calls["watch"]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A stack file in tmp_path and every host-facing step replaced by a recorder."""
    Store.log = []
    path = tmp_path / "Pulumi.unit.yaml"
    path.write_text(STACK)
    calls: dict = {"switches": [], "watch": {"verdict": "pass", "reason": ""}}
    monkeypatch.setattr(release_module, "stack_file", lambda stack: path)
    monkeypatch.setattr(Fleet, "running_image", lambda self, host: f"old/{host}@x")
    monkeypatch.setattr(release_module, "run_preflight", lambda *a, **k: calls.get("preflight", []))
    monkeypatch.setattr(
        release_module, "contract_phase", lambda *a: {"applied": [], "deferred": []}
    )
    calls["deployed"] = []
    monkeypatch.setattr(
        release_module,
        "rolling_deploy",
        lambda fleet, color, progress: calls["deployed"].append(color) or [color],
    )
    monkeypatch.setattr(
        release_module,
        "run_gates",
        lambda *a: calls.get("gate_error") and _raise(calls["gate_error"]),
    )
    calls["path"] = path
    calls["target"] = FakeTarget(calls)
    return calls


def _raise(exc: BaseException) -> None:
    raise exc


def test_a_kept_release_switches_records_and_unlocks(world):
    report = release(world["target"], "x")
    assert report.outcome == "kept"
    text = world["path"].read_text()
    assert "activeColor: green" in text and f"greenImage: {NEW}" in text
    assert Store.current.records[-1]["outcome"] == "kept" and not Store.current.held
    assert [s["step"] for s in Store.current.records[-1]["steps"]] == [
        "resolve image",
        "preflight",
        "deploy",
        "gates",
        "switch",
        "watch",
        "contract migrations",
    ]


def test_a_failed_gate_never_switches_and_restores_the_stack_file(world):
    world["gate_error"] = ReleaseError("gate readiness failed on app-green: 503")
    with pytest.raises(ReleaseError, match="blue keeps serving"):
        release(world["target"], "x")
    assert world["switches"] == []
    assert world["path"].read_text() == STACK
    record = Store.current.records[-1]
    assert record["outcome"] == "failed" and record["failed_step"] == "gates"
    assert not Store.current.held


def test_a_failed_watch_switches_back(world):
    world["watch"] = {"verdict": "fail", "reason": "12 of 40 responses failed"}
    report = release(world["target"], "x")
    assert report.outcome == "rolled-back"
    assert len(world["switches"]) == 2
    assert "activeColor: blue" in world["path"].read_text()
    # green keeps the new image for inspection; blue still runs what it ran.
    assert f"greenImage: {NEW}" in world["path"].read_text()
    assert Store.current.records[-1]["outcome"] == "rolled-back"


def test_ctrl_c_before_the_switch_restores_the_file_and_unlocks(world):
    world["gate_error"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        release(world["target"], "x")
    assert world["path"].read_text() == STACK
    assert Store.current.records[-1]["outcome"] == "interrupted" and not Store.current.held


def test_rollback_refuses_when_the_previous_image_is_not_running(world, monkeypatch):
    world["path"].write_text(
        STACK.replace("activeColor: blue", f"activeColor: green\n  mcpdeploy:blueImage: {NEW}")
    )
    monkeypatch.setattr(
        Fleet, "running_image", lambda self, host: "something/else@sha256:" + "c" * 64
    )
    with pytest.raises(ReleaseError, match="not there to roll back to"):
        rollback(world["target"])
    assert world["switches"] == []
    assert Store.current.records[-1]["outcome"] == "failed" and not Store.current.held


def test_a_lock_is_stale_when_old_or_its_process_is_gone():
    import os
    import socket

    now = time.time()
    live = Holder("t", "me", socket.gethostname(), os.getpid(), now, "release")
    assert staleness(live, 60, now) is None
    assert "older than" in staleness(live, 60, now + 3601)
    gone = Holder("t", "me", socket.gethostname(), 2**22 + 12345, now, "release")
    assert "is gone" in staleness(gone, 60, now)
    elsewhere = Holder("t", "me", "another-host", 1, now, "release")
    assert staleness(elsewhere, 60, now) is None


def test_a_failed_preflight_stops_before_anything_is_deployed(world):
    from mcpdeploy.preflight.check import Check

    world["preflight"] = [
        Check("postgres", "fail", "unreachable from app-green", "open 5432 to the app hosts")
    ]
    with pytest.raises(ReleaseError, match="preflight failed: postgres: unreachable"):
        release(world["target"], "x")
    assert world["deployed"] == [] and world["switches"] == []
    assert world["path"].read_text() == STACK
    assert Store.current.records[-1]["failed_step"] == "preflight" and not Store.current.held


def test_rollback_never_goes_to_a_color_whose_last_release_was_switched_back(world):
    world["watch"] = {"verdict": "fail", "reason": "12 of 40 responses failed"}
    release(world["target"], "x")
    store = Store.current
    with pytest.raises(ReleaseError, match="ended rolled-back"):
        rollback(world["target"])
    assert "activeColor: blue" in world["path"].read_text()
    assert len(world["switches"]) == 2  # the release's switch and switch-back, no third
    assert store.records[-1]["outcome"] == "failed" and not store.held
