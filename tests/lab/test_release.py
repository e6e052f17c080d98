"""`mcpdeploy release` and `rollback` in the lab, and the faults a release must survive.

Each test starts with blue serving and leaves it so (release_harness.restored_lab): the
stack file is put back and every host converged to it, whatever happened.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest
from release_harness import (
    BIN,
    ROOT,
    SSH,
    STACK_FILE,
    current_image,
    mcpdeploy,
    posts_columns,
    psql,
    restored_lab,
    run,
    served,
    status,
    tool_call_on,
    variant_image,
    wait_for,
)

from mcpdeploy.engine import docker_client
from mcpdeploy.lab.topology import PREFIX

pytestmark = pytest.mark.lab
STARTED = ["docker", "inspect", "--format", "'{{.State.StartedAt}}'", "mcp-service"]


@pytest.fixture
def lab():
    yield from restored_lab()


def started_at(host: str) -> str:
    result = run(*SSH, host, *STARTED)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def release_in_background(image: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "mcpdeploy"), "release", "--image", image],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_release_switches_to_the_idle_color_and_rollback_returns(lab):
    image = current_image()
    blue_started = started_at("app-blue")
    first = release_in_background(image)
    try:
        assert wait_for(lambda: status()["lock"] is not None, 120, 1), "the lock was never taken"
        second = mcpdeploy("release", "--image", image)
        assert second.returncode == 1
        assert "locked by" in second.stderr and "release to green" in second.stderr
    finally:
        _, progress = first.communicate(timeout=1200)
    assert first.returncode == 0, progress
    for step in (
        "deploying app-green",
        "pass readiness",
        "pass handshake",
        "pass tools/list",
        "pass testinfra",
        "watching green",
        "released: green serves",
    ):
        assert step in progress, progress
    assert served() == ("green", 200)
    doc = status()
    assert doc["active_color"] == "green"
    assert doc["images"]["green"] == image
    assert {h["color"]: h["image"] for h in doc["hosts"]}["green"] == image
    record = doc["releases"][-1]
    assert (record["kind"], record["outcome"], record["to_color"]) == ("release", "kept", "green")
    # The old color was never touched: same container, still ready for a rollback.
    assert started_at("app-blue") == blue_started

    # A lock left by a process that is gone is stale: reported, then broken on request.
    stale = {
        "token": "stale",
        "user": "someone",
        "host": socket.gethostname(),
        "pid": 2**22 + 4242,
        "started": time.time() - 30,
        "purpose": "release to blue",
    }
    planted = run(
        *SSH,
        "edge",
        "install -d -m 700 /var/lib/mcpdeploy/releases && "
        f"echo '{json.dumps(stale)}' > /var/lib/mcpdeploy/releases/lock.json",
    )
    assert planted.returncode == 0, planted.stderr
    refused = mcpdeploy("rollback")
    assert refused.returncode == 1 and "stale" in refused.stderr, refused.stderr
    assert served() == ("green", 200)
    back = mcpdeploy("rollback", "--break-lock")
    assert back.returncode == 0, back.stderr
    assert served() == ("blue", 200)
    kinds = [(r["kind"], r["outcome"]) for r in status()["releases"][-2:]]
    assert kinds[0][0] == "break-lock" and kinds[1] == ("rollback", "kept")
    assert started_at("app-blue") == blue_started


def test_an_image_that_never_becomes_ready_is_not_switched_to(lab):
    broken = variant_image("never-ready", "ENV MCP_PORT=3999")
    before = STACK_FILE.read_text()
    blue_started = started_at("app-blue")
    result = mcpdeploy("release", "--image", broken)
    assert result.returncode == 1
    assert "app-green" in result.stderr and "blue keeps serving" in result.stderr, result.stderr
    assert STACK_FILE.read_text() == before
    assert served() == ("blue", 200)
    assert started_at("app-blue") == blue_started
    record = status()["releases"][-1]
    assert (record["outcome"], record["kind"]) == ("failed", "release")
    # The idle color is repaired by a rolling deploy of what the stack file gives it.
    repaired = mcpdeploy("deploy", "--color", "green")
    assert repaired.returncode == 0, repaired.stderr
    assert status()["hosts"][1]["health"] == 200


def test_the_database_unreachable_from_the_idle_color_stops_the_release(lab):
    # The container's traffic is forwarded (docker0), the host's own goes out: cut both.
    rules = [
        f"{chain} -d 172.30.77.20 -p tcp -j REJECT --reject-with tcp-reset"
        for chain in ("FORWARD", "OUTPUT")
    ]
    for rule in rules:
        assert run(*SSH, "app-green", f"iptables -I {rule}").returncode == 0
    try:
        result = mcpdeploy("release", "--image", current_image())
    finally:
        for rule in rules:
            run(*SSH, "app-green", f"iptables -D {rule}")
    assert result.returncode == 1
    assert "app-green" in result.stderr and "blue keeps serving" in result.stderr, result.stderr
    assert served() == ("blue", 200)


def test_a_release_that_fails_the_watch_window_switches_back(lab):
    proc = release_in_background(current_image())
    try:
        switched = wait_for(lambda: proc.poll() is not None or served()[0] == "green", 900, 1)
        if proc.poll() is not None:
            pytest.fail(f"the release ended before it switched: {proc.communicate()[1]}")
        assert switched, "the release never switched"
        # Errors from now on: green's service goes away while the watch runs.
        assert run(*SSH, "app-green", "systemctl stop mcp-service").returncode == 0
    finally:
        _, progress = proc.communicate(timeout=600)
    assert proc.returncode == 1, progress
    assert "watch failed" in progress and "rolled back" in progress, progress
    assert served() == ("blue", 200)
    record = status()["releases"][-1]
    assert (record["outcome"], record["to_color"]) == ("rolled-back", "green")


def test_a_host_that_goes_away_mid_deploy_stops_the_release_and_the_next_recovers(lab):
    client = docker_client()
    proc = release_in_background(current_image())
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "deploying app-green" in line:
                client.containers.get(f"{PREFIX}app-green").stop(timeout=1)
                break
    finally:
        _, progress = proc.communicate(timeout=900)
    assert proc.returncode == 1
    assert "app-green" in progress and "blue keeps serving" in progress, progress
    assert served() == ("blue", 200)
    up = mcpdeploy("lab", "up")
    assert up.returncode == 0, up.stderr
    again = mcpdeploy("release", "--image", current_image())
    assert again.returncode == 0, again.stderr
    assert served() == ("green", 200)


def test_expand_runs_before_the_switch_and_contract_only_once_it_shipped(lab):
    """An image adds a column (expand) and drops it again (contract): the first release
    applies the expand only (the old color keeps working on the wider schema) and defers
    the contract, which is new; the next release, whose rollback target ships it, applies
    it after its watch window."""
    # New versions after whatever this lab's database has seen (a rerun on the same lab).
    version = int(psql("SELECT coalesce(max(version), 0) FROM schema_migrations")[0]) + 1
    column = f"note_{int(time.time())}"
    files = {
        f"{version:03d}_{column}_expand.sql": f"ALTER TABLE posts ADD COLUMN {column} text;",
        f"{version + 1:03d}_{column}_contract.sql": f"ALTER TABLE posts DROP COLUMN {column};",
    }
    phases = {name: name.rsplit("_", 1)[1][:-4] for name in files}
    script = " && ".join(
        f"printf -- '-- phase: {phases[name]}\\n{sql}\\n' > /app/migrations/{name}"
        for name, sql in files.items()
    )
    image = variant_image(f"migrations-{version}", f"USER root\nRUN {script}\nUSER 10001:10001")
    first = mcpdeploy("release", "--image", image)
    assert first.returncode == 0, first.stderr
    assert "contract migrations deferred" in first.stderr, first.stderr
    assert column in posts_columns()
    # blue, the rollback target, still runs the old code against the expanded schema.
    called = tool_call_on("app-blue", "list_posts", {"limit": 3})
    assert called["status"] == 200 and not called["body"]["result"].get("isError"), called

    second = mcpdeploy("release", "--image", image)
    assert second.returncode == 0, second.stderr
    assert f"contract migrations: {version + 1:03d}_{column}_contract" in second.stderr
    assert column not in posts_columns()
    assert served() == ("blue", 200)
