"""The release lock and the release log: one per stack, shared by every operator.

Where they live depends on the target: on the stack's first edge host (:class:`EdgeLog`,
the lab and self-hosted; under :data:`STATE`, root only, a deploy never touches it) or in
the stack's DynamoDB table (:class:`DynamoLog`, AWS; ``infra/components/releases.py``).
Every operator's ``mcpdeploy`` reaches the same place, so one lock serializes releases
from any machine and one log answers "what ran, when, by whom" for all of them.

The lock is created atomically (``O_EXCL`` on the edge, a conditional put in DynamoDB:
one winner) and holds who took it, from which host and process, when, and for what. A
lock is *stale* when it is older than ``release.lockTimeoutMinutes`` or its process is
gone (checked when it was taken from this machine); ``--break-lock`` removes a stale
lock, or one whose process cannot be checked from here, and says so in the log. A lock
held by a live process on this machine is never broken.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol

import botocore.exceptions

from mcpdeploy.fleet import Fleet

STATE = "/var/lib/mcpdeploy/releases"
LOCK = f"{STATE}/lock.json"
LOG = f"{STATE}/log.jsonl"

# Runs on the edge with python3 (every Debian host has it); arguments come as JSON on stdin.
_STORE = r"""
import json, os, sys
request = json.load(sys.stdin)
state, lock, log = request["state"], request["lock"], request["log"]
os.makedirs(state, mode=0o700, exist_ok=True)
action = request["action"]

def holder():
    try:
        with open(lock) as f:
            return json.load(f)
    except FileNotFoundError:
        return None

if action == "acquire":
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(json.dumps({"acquired": False, "holder": holder()}))
    else:
        with os.fdopen(fd, "w") as f:
            json.dump(request["holder"], f)
        print(json.dumps({"acquired": True}))
elif action == "remove":
    current = holder()
    if current and current.get("token") == request["token"]:
        os.remove(lock)
    print("{}")
elif action == "holder":
    print(json.dumps({"holder": holder()}))
elif action == "append":
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(json.dumps(request["record"], sort_keys=True) + "\n")
    print("{}")
elif action == "tail":
    try:
        with open(log) as f:
            lines = f.readlines()[-request["count"]:]
    except FileNotFoundError:
        lines = []
    print(json.dumps({"records": [json.loads(line) for line in lines if line.strip()]}))
"""


class LockError(Exception):
    """The release lock is held, or cannot be taken; the message says by whom and what to do."""


@dataclass(frozen=True)
class Holder:
    """Who holds a release lock."""

    token: str
    user: str
    host: str
    pid: int
    started: float
    purpose: str

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"{self.user} on {self.host} (pid {self.pid}, {self.purpose}) since {since}"


def operator() -> str:
    """The person behind this run: the sudo caller when there is one."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def staleness(holder: Holder, timeout_minutes: int, now: float | None = None) -> str | None:
    """Why ``holder``'s lock is stale, or None while it may still be working."""
    age = (now or time.time()) - holder.started
    if age > timeout_minutes * 60:
        return f"older than release.lockTimeoutMinutes ({timeout_minutes})"
    if holder.host == socket.gethostname():
        try:
            os.kill(holder.pid, 0)
        except ProcessLookupError:
            return f"its process {holder.pid} is gone"
        except PermissionError:
            return None
    return None


class LogBackend(Protocol):
    """Where a stack's lock and log are kept: atomic create, remove-if-ours, append, tail."""

    stack: str
    where: str  # for messages: "edge (…/lock.json)", "DynamoDB table …"

    def create_lock(self, holder: dict[str, Any]) -> dict[str, Any] | None:
        """Create the lock holding ``holder``; None when created, else the current holder."""
        ...

    def current_lock(self) -> dict[str, Any] | None: ...

    def remove_lock(self, token: str) -> None:
        """Remove the lock if it still holds ``token`` (never someone else's)."""
        ...

    def append(self, record: dict[str, Any]) -> None: ...

    def tail(self, count: int) -> list[dict[str, Any]]:
        """The newest ``count`` records, oldest first."""
        ...


class EdgeLog:
    """The lock and log as files on ``fleet``'s first edge host (:data:`STATE`)."""

    def __init__(self, fleet: Fleet) -> None:
        edges = fleet.role("edge")
        if not edges:
            raise LockError(f"{fleet.inventory} has no edge host to keep the release lock on")
        self.fleet = fleet
        self.stack = fleet.stack
        self.host = edges[0].name
        self.where = f"{self.host}:{LOCK}"

    def _call(self, action: str, **fields: Any) -> dict[str, Any]:
        request = {"state": STATE, "lock": LOCK, "log": LOG, "action": action, **fields}
        result = self.fleet.run(self.host, ["python3", "-c", _STORE], stdin=json.dumps(request))
        return json.loads(result.stdout)

    def create_lock(self, holder: dict[str, Any]) -> dict[str, Any] | None:
        answer = self._call("acquire", holder=holder)
        return None if answer["acquired"] else (answer["holder"] or {})

    def current_lock(self) -> dict[str, Any] | None:
        return self._call("holder")["holder"]

    def remove_lock(self, token: str) -> None:
        self._call("remove", token=token)

    def append(self, record: dict[str, Any]) -> None:
        self._call("append", record=record)

    def tail(self, count: int) -> list[dict[str, Any]]:
        return self._call("tail", count=count)["records"]


def release_table(stack: str) -> str:
    """The DynamoDB table of an AWS stack's lock and log (infra/components/releases.py)."""
    return f"mcpdeploy-{stack}-releases"


class DynamoLog:
    """The lock and log in the stack's DynamoDB table (AWS).

    One item ``pk=lock`` is the lock (created with ``attribute_not_exists``: one winner;
    removed only while it still holds our token); each log record is an item ``pk=log``
    whose sort key starts with the time, so the newest come first in a query.
    """

    LOCK_KEY: ClassVar[dict[str, dict[str, str]]] = {"pk": {"S": "lock"}, "sk": {"S": "lock"}}

    def __init__(self, stack: str, client: Any, table: str | None = None) -> None:
        self.stack = stack
        self.client = client
        self.table = table or release_table(stack)
        self.where = f"DynamoDB table {self.table}"

    def _call(self, operation: str, **request: Any) -> dict[str, Any]:
        try:
            return getattr(self.client, operation)(TableName=self.table, **request)
        except self.client.exceptions.ResourceNotFoundException:
            raise LockError(
                f"{self.where} does not exist: run 'pulumi up -s {self.stack}' once with this "
                "version of infra/ (it creates the release table)"
            ) from None
        except self.client.exceptions.ConditionalCheckFailedException:
            raise
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise LockError(f"{self.where}: {exc}") from None

    def create_lock(self, holder: dict[str, Any]) -> dict[str, Any] | None:
        item = {**self.LOCK_KEY, "token": {"S": holder["token"]}, "holder": _json(holder)}
        try:
            self._call("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)")
        except self.client.exceptions.ConditionalCheckFailedException:
            return self.current_lock() or {}
        return None

    def current_lock(self) -> dict[str, Any] | None:
        item = self._call("get_item", Key=self.LOCK_KEY, ConsistentRead=True).get("Item")
        return json.loads(item["holder"]["S"]) if item else None

    def remove_lock(self, token: str) -> None:
        # Gone already, or someone else's since a --break-lock: not ours to remove.
        with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
            self._call(
                "delete_item",
                Key=self.LOCK_KEY,
                ConditionExpression="#token = :token",
                ExpressionAttributeNames={"#token": "token"},
                ExpressionAttributeValues={":token": {"S": token}},
            )

    def append(self, record: dict[str, Any]) -> None:
        when = float(record.get("started") or record.get("time") or time.time())
        key = {"pk": {"S": "log"}, "sk": {"S": f"{when:017.6f}#{uuid.uuid4().hex}"}}
        self._call("put_item", Item={**key, "record": _json(record)})

    def tail(self, count: int) -> list[dict[str, Any]]:
        found = self._call(
            "query",
            KeyConditionExpression="pk = :log",
            ExpressionAttributeValues={":log": {"S": "log"}},
            ScanIndexForward=False,
            Limit=count,
            ConsistentRead=True,
        )["Items"]
        return [json.loads(item["record"]["S"]) for item in reversed(found)]


def _json(value: dict[str, Any]) -> dict[str, str]:
    return {"S": json.dumps(value, sort_keys=True)}


class ReleaseStore:
    """The lock and the log of one stack, wherever ``backend`` keeps them."""

    def __init__(self, backend: LogBackend) -> None:
        self.backend = backend
        self.stack = backend.stack

    def holder(self) -> Holder | None:
        """The current lock holder, if any."""
        found = self.backend.current_lock()
        return Holder(**found) if found else None

    def acquire(self, purpose: str, timeout_minutes: int, break_lock: bool = False) -> Holder:
        """Take the lock for ``purpose``; refuse with who holds it (and whether it is stale)."""
        mine = Holder(
            token=uuid.uuid4().hex,
            user=operator(),
            host=socket.gethostname(),
            pid=os.getpid(),
            started=time.time(),
            purpose=purpose,
        )
        for _ in range(2):
            found = self.backend.create_lock(asdict(mine))
            if found is None:
                return mine
            if not found:  # removed between our attempt and our look: try again
                continue
            current = Holder(**found)
            stale = staleness(current, timeout_minutes)
            if not break_lock:
                hint = (
                    f"it is stale ({stale}): run again with --break-lock to remove it"
                    if stale
                    else "wait for it to finish, or if its holder is gone, --break-lock"
                )
                raise LockError(f"{self.stack} is locked by {current.describe()}; {hint}")
            if stale is None and current.host == socket.gethostname():
                raise LockError(
                    f"{self.stack} is locked by {current.describe()}, a process that is "
                    "still running here: stop it (Ctrl-C releases the lock), do not break it"
                )
            self.backend.remove_lock(current.token)
            self.record(
                {
                    "kind": "break-lock",
                    "stack": self.stack,
                    "user": mine.user,
                    "host": mine.host,
                    "time": time.time(),
                    "broken": asdict(current),
                    "reason": stale or "holder could not be checked from here",
                }
            )
            break_lock = False
        raise LockError(f"{self.stack}: the lock was taken again while breaking it")

    def release(self, holder: Holder) -> None:
        """Give the lock back (only ours: a broken-and-retaken lock is left alone)."""
        self.backend.remove_lock(holder.token)

    def record(self, record: dict[str, Any]) -> None:
        """Append one record to the release log."""
        self.backend.append(record)

    def last(self, count: int = 5) -> list[dict[str, Any]]:
        """The newest ``count`` records, oldest first."""
        return self.backend.tail(count)
