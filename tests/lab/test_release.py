"""`mcpdeploy release` in the lab: the faults a release must survive, and the expand and
contract of the database schema. (A release and its rollback seen whole, with the lock and
open streams, under load: tests/lab/test_zero_downtime.py.)

Each test starts with blue serving and leaves it so (release_harness.restored_lab): the
stack file is put back and every host converged to it, whatever happened.
"""

from __future__ import annotations

import time

import pytest
from release_harness import (
    SSH,
    STACK_FILE,
    BackgroundRelease,
    current_image,
    mcpdeploy,
    posts_columns,
    psql,
    restored_lab,
    run,
    served,
    started_at,
    status,
    tool_call_on,
    variant_image,
    wait_for,
)

from mcpdeploy.engine import docker_client
from mcpdeploy.lab.topology import PREFIX

pytestmark = pytest.mark.lab


@pytest.fixture
def lab():
    yield from restored_lab()


def test_an_image_that_never_becomes_ready_is_not_switched_to(lab):
    """The release waits out the lab's readiness timeout (app.readinessTimeoutSeconds, 20 s)
    on green, then green is repaired by a deploy: about 55 s of lab time."""
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
    """A whole release up to its watch window, then the switch back and a restore of green:
    about 50 s of lab time."""
    proc = BackgroundRelease(current_image())
    try:
        switched = wait_for(lambda: proc.poll() is not None or served()[0] == "green", 900, 1)
        if proc.poll() is not None:
            pytest.fail(f"the release ended before it switched: {proc.communicate(60)[1]}")
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


def test_a_host_gone_mid_deploy_stops_the_release_and_the_next_expands_then_contracts(lab):
    """A host that goes away mid-deploy stops the release (blue keeps serving); once it is
    back, the next release recovers. That release and the one after it carry an image that
    adds a column (expand) and drops it again (contract): the first applies the expand
    only (the old color keeps working on the wider schema) and defers the contract, which
    is new; the next, whose rollback target ships it, applies it after its watch window.

    One test, not two: the recovering release is the expand release (one release less,
    about 70 s). Three releases, a lab up and the restore: about 125 s of lab time."""
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

    client = docker_client()
    proc = BackgroundRelease(image)
    try:
        deploying = wait_for(
            lambda: proc.poll() is not None or proc.line_at("deploying app-green"), 900, 0.2
        )
        assert deploying and proc.line_at("deploying app-green"), proc.communicate(60)[1]
        client.containers.get(f"{PREFIX}app-green").stop(timeout=1)
    finally:
        _, progress = proc.communicate(timeout=900)
    assert proc.returncode == 1
    assert "app-green" in progress and "blue keeps serving" in progress, progress
    assert served() == ("blue", 200)
    up = mcpdeploy("lab", "up")
    assert up.returncode == 0, up.stderr

    first = mcpdeploy("release", "--image", image)
    assert first.returncode == 0, first.stderr
    assert served() == ("green", 200)
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
