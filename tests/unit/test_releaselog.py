"""The release lock and log, on both backends: the edge's (EdgeLog: its script runs for
real here, on this machine, the way the edge runs it: python3, the request on stdin) and
AWS's (DynamoLog, against moto's DynamoDB)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from mcpdeploy import releaselog
from mcpdeploy.fleet import Fleet, FleetHost
from mcpdeploy.releaselog import DynamoLog, EdgeLog, LockError, ReleaseStore, release_table


class Here(Fleet):
    """A fleet whose one edge host is this machine: commands run locally."""

    def run(self, host, command, timeout=120, check=True, stdin=None):  # type: ignore[override]
        assert host == "edge" and command[:2] == ["python3", "-c"]
        return subprocess.run(
            [sys.executable, "-c", command[2]],
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
        )


@pytest.fixture(params=["edge", "dynamodb"])
def store(request, tmp_path, monkeypatch) -> Iterator[ReleaseStore]:
    if request.param == "edge":
        monkeypatch.setattr(releaselog, "STATE", str(tmp_path / "releases"))
        monkeypatch.setattr(releaselog, "LOCK", str(tmp_path / "releases" / "lock.json"))
        monkeypatch.setattr(releaselog, "LOG", str(tmp_path / "releases" / "log.jsonl"))
        edge = FleetHost("edge", "edge", None, "10.0.0.10")
        yield ReleaseStore(EdgeLog(Here("lab", ("ssh",), (edge,), "hosts/lab.py")))
        return
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        keys = [("pk", "HASH"), ("sk", "RANGE")]
        client.create_table(
            TableName=release_table("lab"),
            KeySchema=[{"AttributeName": n, "KeyType": t} for n, t in keys],
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n, _ in keys],
            BillingMode="PAY_PER_REQUEST",
        )
        yield ReleaseStore(DynamoLog("lab", client))


def test_one_holder_at_a_time_and_only_the_holder_releases(store, tmp_path):
    mine = store.acquire("release to green", 60)
    assert store.holder() == mine
    if isinstance(store.backend, EdgeLog):
        assert (tmp_path / "releases" / "lock.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(LockError, match=r"lab is locked by .*release to green"):
        store.acquire("rollback to blue", 60)
    store.backend.remove_lock("someone else's token")
    assert store.holder() == mine
    store.release(mine)
    assert store.holder() is None


def test_the_log_keeps_records_in_order_and_returns_the_newest(store):
    for n in range(7):
        store.record({"kind": "release", "n": n})
    assert [r["n"] for r in store.last(5)] == [2, 3, 4, 5, 6]
    assert store.last(1) == [{"kind": "release", "n": 6}]


def test_a_stale_lock_is_broken_on_request_and_the_break_is_logged(store):
    gone = {
        "token": "old",
        "user": "ana",
        "host": "elsewhere",
        "pid": 1,
        "started": 0.0,
        "purpose": "release to green",
    }
    assert store.backend.create_lock(gone) is None
    with pytest.raises(LockError, match="it is stale"):
        store.acquire("release to green", 60)
    mine = store.acquire("release to green", 60, break_lock=True)
    assert store.holder() == mine
    (record,) = store.last(5)
    assert record["kind"] == "break-lock" and record["broken"]["user"] == "ana"


def test_a_missing_dynamodb_table_says_which_and_how_to_create_it(monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        store = ReleaseStore(DynamoLog("prod", boto3.client("dynamodb", region_name="us-east-1")))
        with pytest.raises(
            LockError, match="mcpdeploy-prod-releases does not exist: run 'pulumi up"
        ):
            store.acquire("release to green", 60)
