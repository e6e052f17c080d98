"""The release lock and the release log, kept on the stack's first edge host.

Every operator's ``mcpdeploy`` reaches the same edge, so one lock there serializes
releases from any machine, and one log there answers "what ran, when, by whom" for all
of them. Both live under :data:`STATE` (root only); a deploy never touches that directory.

The lock is a file created with ``O_EXCL`` (one winner, atomically) holding who took it,
from which host and process, when, and for which image. A lock is *stale* when it is
older than ``release.lockTimeoutMinutes`` or its process is gone (checked when it was
taken from this machine); ``--break-lock`` removes a stale lock, or one whose process
cannot be checked from here, and says so in the log. A lock held by a live process on
this machine is never broken.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

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
elif action == "release":
    current = holder()
    if current and current.get("token") == request["token"]:
        os.remove(lock)
    print(json.dumps({"released": bool(current and current.get("token") == request["token"])}))
elif action == "break":
    current = holder()
    if current and current.get("token") == request["token"]:
        os.remove(lock)
    print(json.dumps({"broken": current}))
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


class ReleaseStore:
    """The lock and the log on ``fleet``'s first edge host."""

    def __init__(self, fleet: Fleet) -> None:
        edges = fleet.role("edge")
        if not edges:
            raise LockError(f"{fleet.inventory} has no edge host to keep the release lock on")
        self.fleet = fleet
        self.host = edges[0].name

    def _call(self, action: str, **fields: Any) -> dict[str, Any]:
        request = {"state": STATE, "lock": LOCK, "log": LOG, "action": action, **fields}
        result = self.fleet.run(self.host, ["python3", "-c", _STORE], stdin=json.dumps(request))
        return json.loads(result.stdout)

    def holder(self) -> Holder | None:
        """The current lock holder, if any."""
        found = self._call("holder")["holder"]
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
            answer = self._call("acquire", holder=asdict(mine))
            if answer["acquired"]:
                return mine
            current = Holder(**answer["holder"])
            stale = staleness(current, timeout_minutes)
            if not break_lock:
                hint = (
                    f"it is stale ({stale}): run again with --break-lock to remove it"
                    if stale
                    else "wait for it to finish, or if its holder is gone, --break-lock"
                )
                raise LockError(f"{self.fleet.stack} is locked by {current.describe()}; {hint}")
            if stale is None and current.host == socket.gethostname():
                raise LockError(
                    f"{self.fleet.stack} is locked by {current.describe()}, a process that is "
                    "still running here: stop it (Ctrl-C releases the lock), do not break it"
                )
            self._call("break", token=current.token)
            self.record(
                {
                    "kind": "break-lock",
                    "stack": self.fleet.stack,
                    "user": mine.user,
                    "host": mine.host,
                    "time": time.time(),
                    "broken": asdict(current),
                    "reason": stale or "holder could not be checked from here",
                }
            )
            break_lock = False
        raise LockError(f"{self.fleet.stack}: the lock was taken again while breaking it")

    def release(self, holder: Holder) -> None:
        """Give the lock back (only ours: a broken-and-retaken lock is left alone)."""
        self._call("release", token=holder.token)

    def record(self, record: dict[str, Any]) -> None:
        """Append one record to the release log."""
        self._call("append", record=record)

    def last(self, count: int = 5) -> list[dict[str, Any]]:
        """The newest ``count`` records, oldest first."""
        return self._call("tail", count=count)["records"]
