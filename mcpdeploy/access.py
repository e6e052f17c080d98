"""Access control on a running stack: the kill switch, API key rotation, maintenance mode.

``mcpdeploy ops disable|enable|rotate-key|maintenance`` (docs/operations.md). The kill switch
and the keys belong to the service: they live in PostgreSQL, which every app host of both
colors reads, so one ``mcp-service`` command run in the container of one healthy app host
changes them everywhere. Maintenance mode belongs to the edge: a flag file its nginx tests
on every request (``roles/edge``). Hosts are reached only through :class:`Fleet`.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import shlex
import socket
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from mcpdeploy.console import fail, out, step
from mcpdeploy.credentials import NAMES, state_dir
from mcpdeploy.engine import Progress, no_progress
from mcpdeploy.fleet import AppHost, Fleet, FleetError, lab_fleet
from mcpdeploy.settings import Settings, SettingsError, load_settings

# The service's container on every app host (roles/app CONTAINER).
CONTAINER = "mcp-service"
# The name the service stores the key of MCP_API_KEY under (app_image/mcp_service/keys.py,
# ENV_CURRENT): rotating this name replaces the deployment's own key.
DEPLOYMENT_KEY_NAME = "env:current"
# Maintenance mode's flag on the edge hosts; deploy.py hands it to roles/edge, whose nginx
# answers /api/ itself while the file exists.
MAINTENANCE_FLAG = "/var/lib/mcp-edge/maintenance"
# A key as it can stand in an --env-file line and an Authorization header.
KEY_FORMAT = re.compile(r"[\x21-\x7e]{32,512}")

# The stack's internal CA on the edge (roles/edge): trusted besides the system's, since a
# lab or self-hosted edge may serve a certificate it issued.
EDGE_CA = "/etc/nginx/tls/upstream-ca.crt"

# Run on an edge: what its nginx answers for /api/ right now, as a client would see it.
_EDGE_PROBE = """
import http.client, json, ssl, sys
context = ssl.create_default_context()
context.load_verify_locations(sys.argv[2])
connection = http.client.HTTPSConnection("127.0.0.1", 443, context=context, timeout=10)
connection.request("GET", "/api/", headers={"Host": sys.argv[1]})
response = connection.getresponse()
try:
    maintenance = json.loads(response.read())["error"]["data"]["maintenance"] is True
except (ValueError, KeyError, TypeError):
    maintenance = False
print(json.dumps({"status": response.status, "maintenance": maintenance,
                  "retry_after": response.getheader("Retry-After")}))
"""


class AccessError(Exception):
    """An access operation did not happen; the message says why and what to look at."""


@dataclass(frozen=True)
class KillSwitch:
    """The MCP API's state after a change, and the app host that made it."""

    enabled: bool
    host: str


@dataclass(frozen=True)
class Rotation:
    """A finished key rotation: where the new key is and until when the old one works.

    Only 8-character prefixes, as the service's own ``keys list`` and audit log show them.
    """

    host: str
    key_file: Path
    new_prefix: str
    old_prefix: str | None
    old_valid_until: datetime


@dataclass(frozen=True)
class Maintenance:
    """One edge host's maintenance flag: on or off, and since when and by whom when on."""

    host: str
    on: bool
    since: str | None = None
    by: str | None = None


def service_hosts(fleet: Fleet, active_color: str) -> list[AppHost]:
    """The app hosts to run the service's commands on: the active color's first."""
    return sorted(fleet.app_hosts(), key=lambda h: h.color != active_color)


def run_service(
    fleet: Fleet,
    active_color: str,
    args: list[str],
    progress: Progress = no_progress,
    timeout: float = 60,
) -> tuple[str, str]:
    """``mcp-service ARGS`` in the container of the first app host where it succeeds.

    Returns (host, stdout). A host that cannot run it (down, container stopped, database
    unreachable from it) is reported and the next one tried, the other color last. Error
    messages carry the command's stderr only: its stdout may hold a key.
    """
    command = ["docker", "exec", CONTAINER, "mcp-service", *args]
    failures: list[str] = []
    for host in service_hosts(fleet, active_color):
        if failures:
            progress(f"{failures[-1]}; trying {host.name}")
        try:
            result = fleet.run(host.name, command, timeout=timeout, check=False)
        except FleetError as exc:
            failures.append(str(exc))
            continue
        if result.returncode == 0:
            return host.name, result.stdout
        lines = result.stderr.strip().splitlines()
        failures.append(f"{host.name}: exit {result.returncode}: {lines[-1] if lines else ''}")
    raise AccessError(
        f"no app host could run 'mcp-service {' '.join(args)}' ({'; '.join(failures)}). "
        "Look at 'mcpdeploy status' and 'journalctl -u mcp-service' on the app hosts"
    )


def _last_json(stdout: str) -> dict:
    lines = stdout.strip().splitlines()
    try:
        document = json.loads(lines[-1]) if lines else None
    except ValueError:
        document = None
    return document if isinstance(document, dict) else {}


def set_kill_switch(
    fleet: Fleet, active_color: str, enabled: bool, progress: Progress = no_progress
) -> KillSwitch:
    """Turn the MCP API on or off for every app host of both colors (within 5 s)."""
    host, stdout = run_service(fleet, active_color, ["enable" if enabled else "disable"], progress)
    state = _last_json(stdout).get("mcp_enabled")
    if state is not enabled:
        raise AccessError(
            f"{host}: 'mcp-service {'enable' if enabled else 'disable'}' reported "
            f"mcp_enabled={state!r}, not {enabled}; check site_settings.mcp_enabled"
        )
    return KillSwitch(enabled=state, host=host)


def key_file(stack: str) -> Path:
    """Where a file-backed stack keeps the deployment's API key (``credentials.py``)."""
    return state_dir(stack) / "secrets" / NAMES["api_key"]


def parse_rotated_key(stdout: str) -> str:
    """The new key in ``mcp-service keys rotate``'s JSON; no error ever shows the output."""
    key = _last_json(stdout).get("key")
    if not isinstance(key, str) or not KEY_FORMAT.fullmatch(key):
        raise AccessError(
            "'mcp-service keys rotate' printed no usable key (its output is not shown: it may "
            "hold one). The old key still works for the grace period; run rotate-key again"
        )
    return key


def store_key(path: Path, key: str) -> None:
    """Replace ``path`` by ``key``: root-only (0600) from the first byte, synced, renamed.

    Readers see the old file or the new one, never a partial key.
    """
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(key)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def rotate_key(
    fleet: Fleet,
    active_color: str,
    path: Path,
    grace_hours: float,
    progress: Progress = no_progress,
) -> Rotation:
    """Issue a new deployment key, keep the old one valid ``grace_hours``, store the new one.

    The service expires every key named :data:`DEPLOYMENT_KEY_NAME` after the grace period
    and prints the new key once; it travels back over SSH's stdout into ``path``. Nothing
    on the hosts needs it: their performance check reads the metrics with a token of its
    own (``metrics-token``). The hosts' environment keeps the old key until the next deploy
    writes the new one, harmlessly: the service's provisioning never revives a key it has
    already stored (``provision_env_keys``: insert or shorten only).
    """
    if not path.is_file():
        raise AccessError(f"no API key file at {path}: deploy the stack first")
    if not os.access(path.parent, os.W_OK):
        raise AccessError(f"cannot write {path.parent} (root only): run as root")
    old = path.read_text().strip()
    started = datetime.now(UTC)
    progress(f"rotating {DEPLOYMENT_KEY_NAME}; the old key stays valid for {grace_hours:g} h")
    host, stdout = run_service(
        fleet,
        active_color,
        ["keys", "rotate", "--name", DEPLOYMENT_KEY_NAME, "--grace-hours", f"{grace_hours:g}"],
        progress,
    )
    key = parse_rotated_key(stdout)
    store_key(path, key)
    return Rotation(
        host=host,
        key_file=path,
        new_prefix=key[:8],
        old_prefix=old[:8] or None,
        old_valid_until=started + timedelta(hours=grace_hours),
    )


def flag_command(on: bool, since: str, by: str, flag: str = MAINTENANCE_FLAG) -> str:
    """The shell command that sets (or clears) the flag; exit 3: the edge role never ran."""
    if not on:
        return f"rm -f {shlex.quote(flag)}"
    directory, temp = os.path.dirname(flag), f"{flag}.new"
    content = json.dumps({"since": since, "by": by})
    return (
        f"test -d {shlex.quote(directory)} || exit 3; "
        f"printf '%s\\n' {shlex.quote(content)} > {shlex.quote(temp)} && "
        f"chmod 0644 {shlex.quote(temp)} && mv -f {shlex.quote(temp)} {shlex.quote(flag)}"
    )


STATUS_COMMAND = (
    f"if test -f {MAINTENANCE_FLAG}; then echo on; cat {MAINTENANCE_FLAG}; else echo off; fi"
)


def read_flag(host: str, output: str) -> Maintenance:
    """:class:`Maintenance` from :data:`STATUS_COMMAND`'s output on ``host``."""
    state, _, content = output.strip().partition("\n")
    if state != "on":
        return Maintenance(host=host, on=False)
    details = _last_json(content)
    return Maintenance(host=host, on=True, since=details.get("since"), by=details.get("by"))


def maintenance_status(fleet: Fleet) -> list[Maintenance]:
    """Each edge host's maintenance flag."""
    try:
        return [
            read_flag(h.name, fleet.run(h.name, STATUS_COMMAND).stdout) for h in fleet.role("edge")
        ]
    except FleetError as exc:
        raise AccessError(str(exc)) from None


def set_maintenance(
    fleet: Fleet, on: bool, domain: str, progress: Progress = no_progress
) -> list[Maintenance]:
    """Set or clear the flag on every edge host, then check each edge answers accordingly.

    The check asks the edge's own nginx for ``/api/`` over HTTPS: an edge whose config
    predates maintenance mode would ignore the flag, and saying "on" then would be a lie.
    """
    since = datetime.now(UTC).isoformat(timespec="seconds")
    by = f"{getpass.getuser()}@{socket.gethostname()}"
    edges = fleet.role("edge")
    if not edges:
        raise AccessError(f"{fleet.inventory} has no edge host: nothing to put in maintenance")
    for edge in edges:
        result = fleet.run(edge.name, flag_command(on, since, by), check=False)
        if result.returncode == 3:
            raise AccessError(
                f"{edge.name} has no {os.path.dirname(MAINTENANCE_FLAG)}: its edge role predates "
                f"maintenance mode; deploy the edge (pyinfra -y --limit edge "
                f"{fleet.inventory} deploy.py)"
            )
        if result.returncode != 0:
            raise AccessError(f"{edge.name}: could not change the flag: {result.stderr.strip()}")
        answer = _last_json(
            fleet.run(
                edge.name, ["python3", "-c", _EDGE_PROBE, domain, EDGE_CA], check=False
            ).stdout
        )
        progress(f"{edge.name}: /api/ answers {answer.get('status', 'nothing')}")
        if answer.get("maintenance") is not on:
            raise AccessError(
                f"{edge.name}: the flag is {'set' if on else 'cleared'} but /api/ answers "
                f"{answer or 'nothing'}; deploy the edge (pyinfra -y --limit edge "
                f"{fleet.inventory} deploy.py) and look at its nginx error log"
            )
    return maintenance_status(fleet)


# -- the commands ---------------------------------------------------------------------------


StackOption = Annotated[
    str, typer.Option("--stack", "-s", help="Only the lab for now (its hosts over SSH).")
]
AnyStackOption = Annotated[
    str,
    typer.Option(
        "--stack",
        "-s",
        help="lab, or an AWS stack (its app hosts over SSM or the bastion, from the stack "
        "outputs: needs the Pulumi CLI and AWS credentials).",
    ),
]


def _lab(stack: str, by_hand: str) -> tuple[Settings, Fleet]:
    """The lab's settings and fleet; any other stack is refused with what to do instead."""
    if stack != "lab":
        raise fail(f"ops drives the lab's hosts only for now; for {stack}, {by_hand}", 2)
    return _stack(stack)


def _stack(stack: str) -> tuple[Settings, Fleet]:
    """The settings and the hosts of ``stack``: the lab, or an AWS stack (targets.py)."""
    from mcpdeploy.switch import SwitchError
    from mcpdeploy.targets import target_for

    try:
        return load_settings(stack), lab_fleet() if stack == "lab" else target_for(stack).fleet
    except (SettingsError, SwitchError, FleetError) as exc:
        raise fail(f"cannot reach {stack}: {exc}", 2) from None


T = TypeVar("T")


def _guarded(action: Callable[[], T]) -> T:
    try:
        return action()
    except (AccessError, FleetError) as exc:
        raise fail(str(exc)) from None


def disable_command(stack: AnyStackOption = "lab") -> None:
    """Emergency kill switch: MCP calls answer 503 on every app host within 5 s.

    Sets `mcp_enabled = false` in PostgreSQL with `mcp-service disable`, run in the
    container of a healthy app host (the active color's first). `/health` stays 200 and
    `/health/mcp` reports `"disabled"`; nothing restarts. Undo: `mcpdeploy ops enable`.
    """
    settings, fleet = _stack(stack)
    state = _guarded(lambda: set_kill_switch(fleet, settings.active_color, False, step))
    out.print(
        f"MCP API disabled (mcp_enabled=false, set from {state.host}): MCP calls answer 503 "
        'on every app host within 5 s; /health/mcp reports "disabled". '
        "Undo: mcpdeploy ops enable",
        soft_wrap=True,
    )


def enable_command(stack: AnyStackOption = "lab") -> None:
    """Turn the MCP API back on after `ops disable`: every app host within 5 s.

    Sets `mcp_enabled = true` in PostgreSQL with `mcp-service enable`, run in the container
    of a healthy app host (the active color's first).
    """
    settings, fleet = _stack(stack)
    state = _guarded(lambda: set_kill_switch(fleet, settings.active_color, True, step))
    out.print(
        f"MCP API enabled (mcp_enabled=true, set from {state.host}): every app host serves "
        "MCP calls again within 5 s",
        soft_wrap=True,
    )


def rotate_key_command(
    grace_hours: Annotated[
        float | None,
        typer.Option(
            "--grace-hours",
            min=0,
            max=720,
            help="How long the old key keeps working (default: mcpdeploy:apiKeyGraceHours). "
            "0 refuses it within 5 s (a leaked key).",
        ),
    ] = None,
    stack: StackOption = "lab",
) -> None:
    """Issue a new API key; the old one keeps working for the grace period, then is refused.

    Runs `mcp-service keys rotate` on a healthy app host and writes the new key, which
    works at once on every host, over the stack's key file (root only, 0600, atomically).
    Prints where the key is, never the key. Clients switch within the grace period and
    never see a 401. No deploy is needed: the hosts' performance check uses a metrics
    token of its own, not this key. The next deploy writes the new key into the hosts'
    environment and never brings the old one back.
    """
    settings, fleet = _lab(
        stack,
        "run 'docker exec mcp-service mcp-service keys rotate --name env:current' on one app "
        "host and store the key it prints where your deploy reads MCP_API_KEY",
    )
    hours = settings.api_key_grace_hours if grace_hours is None else grace_hours
    path = key_file(stack)
    rotation = _guarded(lambda: rotate_key(fleet, settings.active_color, path, hours, step))
    until = rotation.old_valid_until.strftime("%Y-%m-%d %H:%M:%S UTC")
    out.print(
        f"new API key (prefix {rotation.new_prefix}, issued on {rotation.host}) is in "
        f"{rotation.key_file} (root only, 0600); it works now on every app host",
        soft_wrap=True,
    )
    out.print(
        f"old key (prefix {rotation.old_prefix or '?'}) is accepted until {until}, then refused",
        soft_wrap=True,
    )
    out.print(
        f"next: hand the new key to clients before {until}; no deploy is needed (the hosts' "
        "performance check has a metrics token of its own)",
        soft_wrap=True,
    )


def _show(states: list[Maintenance], as_json: bool = False) -> None:
    if as_json:
        out.print_json(json.dumps([asdict(s) for s in states]))
        return
    for s in states:
        if s.on:
            out.print(
                f"{s.host}: maintenance ON since {s.since} by {s.by}: /api/ answers 503 with "
                "Retry-After; /health and /health/mcp are still served",
                soft_wrap=True,
            )
        else:
            out.print(f"{s.host}: maintenance off: every route is served")


_BY_HAND_FLAG = f"touch (on) or remove (off) {MAINTENANCE_FLAG} on each edge host"


def maintenance_on(stack: StackOption = "lab") -> None:
    """The edge answers MCP and API routes (`/api/`) itself: 503, JSON body, Retry-After.

    Writes a flag file on every edge host, which nginx tests per request: no reload, and
    a deploy keeps it. `/health` and `/health/mcp` still reach the active color and say
    how it really is. Checked through each edge's nginx. Undo: `ops maintenance off`.
    """
    settings, fleet = _lab(stack, _BY_HAND_FLAG)
    _show(_guarded(lambda: set_maintenance(fleet, True, settings.domain, step)))


def maintenance_off(stack: StackOption = "lab") -> None:
    """Serve MCP and API routes again: removes the edge's maintenance flag (no reload)."""
    settings, fleet = _lab(stack, _BY_HAND_FLAG)
    _show(_guarded(lambda: set_maintenance(fleet, False, settings.domain, step)))


def maintenance_status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
    stack: StackOption = "lab",
) -> None:
    """Whether each edge host is in maintenance, since when and set by whom."""
    _, fleet = _lab(stack, f"look for {MAINTENANCE_FLAG} on each edge host")
    _show(_guarded(lambda: maintenance_status(fleet)), as_json)


def register(ops_app: typer.Typer) -> None:
    """Add ``disable``, ``enable``, ``rotate-key`` and ``maintenance`` to the ``ops`` group."""
    ops_app.command("disable")(disable_command)
    ops_app.command("enable")(enable_command)
    ops_app.command("rotate-key")(rotate_key_command)
    maintenance_app = typer.Typer(
        help="Maintenance mode at the edge: MCP and API routes answer 503, health stays true.",
        no_args_is_help=True,
        rich_markup_mode="markdown",
    )
    maintenance_app.command("on")(maintenance_on)
    maintenance_app.command("off")(maintenance_off)
    maintenance_app.command("status")(maintenance_status_command)
    ops_app.add_typer(maintenance_app, name="maintenance")
