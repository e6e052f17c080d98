"""Access control on a running stack: the kill switch, the read cache, API key rotation,
maintenance mode.

``mcpdeploy ops disable|enable|cache|rotate-key|maintenance`` (docs/operations.md). The kill
switch, the cache settings and the keys belong to the service: they live in PostgreSQL (the
cache's generation in Redis), which every app host of both colors reads, so one
``mcp-service`` command run in the container of one healthy app host changes them
everywhere. Maintenance mode belongs to the edge: a flag file its nginx tests
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
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import boto3
import botocore.exceptions
import typer

from mcpdeploy.console import fail, out, step
from mcpdeploy.credentials import NAMES, state_dir
from mcpdeploy.engine import Progress, no_progress
from mcpdeploy.fleet import AppHost, Fleet, FleetError, lab_fleet
from mcpdeploy.settings import PROJECT, Settings, SettingsError, load_settings, project_root

if TYPE_CHECKING:
    from mcpdeploy.aws_target import AwsTarget

# The service's container on every app host (roles/app CONTAINER).
CONTAINER = "mcp-service"
# The name the service stores the key of MCP_API_KEY under (app_image/mcp_service/keys.py,
# ENV_CURRENT): rotating this name replaces the deployment's own key.
DEPLOYMENT_KEY_NAME = "env:current"
# Maintenance mode's flag on the edge hosts; deploy.py hands it to roles/edge, whose nginx
# answers /api/ itself while the file exists.
MAINTENANCE_FLAG = "/var/lib/mcp-edge/maintenance"
# Maintenance answers (the edge's, and the ALB rule's on AWS): when to come back, and the
# body an MCP client parses (the service's own "unavailable" error code, -32004, with
# data.maintenance telling the two apart).
MAINTENANCE_RETRY_AFTER_SECONDS = 300
MAINTENANCE_BODY = {
    "jsonrpc": "2.0",
    "id": None,
    "error": {
        "code": -32004,
        "message": "The MCP API is down for maintenance; retry later",
        "data": {"maintenance": True, "retry_after": MAINTENANCE_RETRY_AFTER_SECONDS},
    },
}
# AWS: the HTTPS listener rule that answers /api/* itself while in maintenance, found by
# this tag (the rule is mcpdeploy's, not the Pulumi program's: `pulumi up` leaves it).
MAINTENANCE_RULE_TAG = "mcpdeploy:maintenance"
# The TTLs `mcp-service cache --ttl` accepts (app_image/mcp_service/runtime.py
# CACHE_TTL_RANGE), checked here too so that a bad value fails before any host is reached.
CACHE_TTL_RANGE = (1, 86400)
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
class CacheState:
    """The read-tool cache's settings as the service applies them, and the host that said so.

    ``flushed``: this command made every cached answer stale: ``generation`` is the new one.
    """

    enabled: bool
    ttl: int
    flushed: bool
    host: str
    generation: int | None = None


@dataclass(frozen=True)
class Rotation:
    """A finished key rotation: where the new key is and until when the old one works.

    Only 8-character prefixes, as the service's own ``keys list`` and audit log show them.
    """

    host: str
    key_store: str  # where the new key is, in words
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
    rule: str | None = None  # AWS: the listener rule's ARN


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


def cache_arguments(on: bool | None, ttl: int | None, flush: bool) -> list[str]:
    """``mcp-service cache``'s arguments (with none it only reads); a bad TTL is refused."""
    low, high = CACHE_TTL_RANGE
    if ttl is not None and not low <= ttl <= high:
        raise AccessError(f"--ttl {ttl} is outside {low}..{high} seconds; nothing changed")
    args = ["cache"]
    if on is not None:
        args.append("--enable" if on else "--disable")
    if ttl is not None:
        args += ["--ttl", str(ttl)]
    if flush:
        args.append("--flush")
    return args


def set_cache(
    fleet: Fleet,
    active_color: str,
    on: bool | None = None,
    ttl: int | None = None,
    flush: bool = False,
    progress: Progress = no_progress,
) -> CacheState:
    """Show, or change for every app host of both colors (within 5 s), the read cache.

    What the service printed is checked against what was asked: a host whose image
    predates the command, or a row that did not change, is an error, not a success.
    """
    args = cache_arguments(on, ttl, flush)
    host, stdout = run_service(fleet, active_color, args, progress)
    state = _last_json(stdout)
    enabled, ttl_now, flushed = (
        state.get("mcp_enable_caching"),
        state.get("mcp_cache_ttl"),
        state.get("flushed"),
    )
    if not (isinstance(enabled, bool) and type(ttl_now) is int and isinstance(flushed, bool)):
        raise AccessError(
            f"{host}: 'mcp-service {' '.join(args)}' printed no cache settings; "
            "look at its image version in 'mcpdeploy status'"
        )
    wanted = {"mcp_enable_caching": on, "mcp_cache_ttl": ttl, "flushed": True if flush else None}
    wrong = [
        f"{name}={state[name]!r}, not {value!r}"
        for name, value in wanted.items()
        if value is not None and state[name] != value
    ]
    if wrong:
        raise AccessError(
            f"{host}: 'mcp-service {' '.join(args)}' reported {', '.join(wrong)}; check "
            "site_settings (mcp_enable_caching, mcp_cache_ttl) and the audit log"
        )
    generation = state.get("generation")
    return CacheState(
        enabled=enabled,
        ttl=ttl_now,
        flushed=flushed,
        host=host,
        generation=generation if type(generation) is int else None,
    )


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


class KeyFile:
    """The API key of a file-backed stack (the lab): root only, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = f"{path} (root only, 0600)"

    def read(self) -> str:
        if not self.path.is_file():
            raise AccessError(f"no API key file at {self.path}: deploy the stack first")
        if not os.access(self.path.parent, os.W_OK):
            raise AccessError(f"cannot write {self.path.parent} (root only): run as root")
        return self.path.read_text().strip()

    def write(self, key: str) -> None:
        store_key(self.path, key)


class KeySecret:
    """The API key of an AWS stack: its Secrets Manager secret (a new version becomes
    the current one; the hosts' next deploy reads it, clients fetch it from there)."""

    def __init__(self, client: Any, secret_id: str) -> None:
        self.client = client
        self.secret_id = secret_id
        self.where = f"Secrets Manager {secret_id} (its current version)"

    def read(self) -> str:
        return self.client.get_secret_value(SecretId=self.secret_id)["SecretString"]

    def write(self, key: str) -> None:
        self.client.put_secret_value(SecretId=self.secret_id, SecretString=key)


def rotate_key(
    fleet: Fleet,
    active_color: str,
    store: KeyFile | KeySecret,
    grace_hours: float,
    progress: Progress = no_progress,
) -> Rotation:
    """Issue a new deployment key, keep the old one valid ``grace_hours``, store the new one.

    The service expires every key named :data:`DEPLOYMENT_KEY_NAME` after the grace period
    and prints the new key once; it travels back over SSH's stdout into ``store``. Nothing
    on the hosts needs it: their performance check reads the metrics with a token of its
    own (``metrics-token``). The hosts' environment keeps the old key until the next deploy
    writes the new one, harmlessly: the service's provisioning never revives a key it has
    already stored (``provision_env_keys``: insert or shorten only).
    """
    old = store.read()
    started = datetime.now(UTC)
    progress(f"rotating {DEPLOYMENT_KEY_NAME}; the old key stays valid for {grace_hours:g} h")
    host, stdout = run_service(
        fleet,
        active_color,
        ["keys", "rotate", "--name", DEPLOYMENT_KEY_NAME, "--grace-hours", f"{grace_hours:g}"],
        progress,
    )
    key = parse_rotated_key(stdout)
    store.write(key)
    return Rotation(
        host=host,
        key_store=store.where,
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


def alb_maintenance_status(elbv2: Any, listener_arn: str) -> Maintenance:
    """Whether the AWS stack's HTTPS listener has the maintenance rule, since when, by whom."""
    rules = elbv2.describe_rules(ListenerArn=listener_arn)["Rules"]
    arns = [r["RuleArn"] for r in rules if not r.get("IsDefault")]
    tagged = elbv2.describe_tags(ResourceArns=arns)["TagDescriptions"] if arns else []
    for description in tagged:
        tags = {t["Key"]: t["Value"] for t in description["Tags"]}
        if MAINTENANCE_RULE_TAG in tags:
            since, _, by = tags[MAINTENANCE_RULE_TAG].partition(" by ")
            return Maintenance("the ALB", True, since, by, rule=description["ResourceArn"])
    return Maintenance("the ALB", False)


def set_alb_maintenance(
    elbv2: Any, listener_arn: str, on: bool, progress: Progress = no_progress
) -> Maintenance:
    """AWS: add (or remove) a rule on the HTTPS listener, ahead of every other, answering
    ``/api/*`` with 503 and :data:`MAINTENANCE_BODY` itself; ``/health*`` still reach the
    serving color. Immediate, no ``pulumi up``; the ALB cannot send ``Retry-After``
    (a fixed response has a body only), so the body carries ``retry_after``."""
    current = alb_maintenance_status(elbv2, listener_arn)
    if current.on == on:
        progress(f"maintenance is already {'on' if on else 'off'} at the ALB")
        return current
    if not on:
        elbv2.delete_rule(RuleArn=current.rule)
        progress("maintenance rule removed from the HTTPS listener")
        return alb_maintenance_status(elbv2, listener_arn)
    since = datetime.now(UTC).isoformat(timespec="seconds")
    by = f"{getpass.getuser()}@{socket.gethostname()}"
    taken = {r["Priority"] for r in elbv2.describe_rules(ListenerArn=listener_arn)["Rules"]}
    elbv2.create_rule(
        ListenerArn=listener_arn,
        # Ahead of any rule the program or an operator added (1 is the first there is).
        Priority=next(p for p in range(1, 50000) if str(p) not in taken),
        Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/api/*"]}}],
        Actions=[
            {
                "Type": "fixed-response",
                "FixedResponseConfig": {
                    "StatusCode": "503",
                    "ContentType": "application/json",
                    "MessageBody": json.dumps(MAINTENANCE_BODY, separators=(",", ":")),
                },
            }
        ],
        Tags=[{"Key": MAINTENANCE_RULE_TAG, "Value": f"{since} by {by}"}],
    )
    progress("maintenance rule added to the HTTPS listener: /api/* answers 503")
    state = alb_maintenance_status(elbv2, listener_arn)
    if not state.on:
        raise AccessError("the maintenance rule was created but the listener does not show it")
    return state


# -- the commands ---------------------------------------------------------------------------


AnyStackOption = Annotated[
    str,
    typer.Option(
        "--stack",
        "-s",
        help="lab, or an AWS stack (its app hosts over SSM or the bastion, from the stack "
        "outputs: needs the Pulumi CLI and AWS credentials).",
    ),
]


def _stack(stack: str) -> tuple[Settings, Fleet]:
    """The settings and the hosts of ``stack``: the lab, or an AWS stack (targets.py)."""
    try:
        settings = load_settings(stack)
    except SettingsError as exc:
        raise fail(f"cannot reach {stack}: {exc}", 2) from None
    return settings, lab_fleet() if stack == "lab" else _aws_target(stack).fleet


def _aws_target(stack: str) -> AwsTarget:
    """The AWS stack ``stack`` (its outputs, hosts and clients), or one error line."""
    from mcpdeploy.switch import SwitchError
    from mcpdeploy.targets import target_for

    try:
        return cast("AwsTarget", target_for(stack))
    except (SettingsError, SwitchError, FleetError) as exc:
        raise fail(f"cannot reach {stack}: {exc}", 2) from None


T = TypeVar("T")


def _guarded(action: Callable[[], T]) -> T:
    try:
        return action()
    except (AccessError, FleetError) as exc:
        raise fail(str(exc)) from None
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise fail(f"AWS: {exc}") from None


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


def cache_command(
    on: Annotated[
        bool | None,
        typer.Option(
            "--on/--off",
            help="Cache read-tool answers in Redis (the guide's default), or answer every read "
            "from PostgreSQL.",
            show_default=False,
        ),
    ] = None,
    ttl: Annotated[
        int | None,
        typer.Option(
            "--ttl",
            metavar="SECONDS",
            help=f"How long a cached answer is served, {CACHE_TTL_RANGE[0]}..{CACHE_TTL_RANGE[1]}"
            " (the guide's 300). Applies to answers cached before, too.",
        ),
    ] = None,
    flush: Annotated[
        bool, typer.Option("--flush", help="Make every cached answer stale now, on every host.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
    stack: AnyStackOption = "lab",
) -> None:
    """Show or change the read-tool cache: the guide's `mcp_enable_caching`, `mcp_cache_ttl`.

    Without options, prints the settings as the service applies them. `--on`/`--off` and
    `--ttl` change the `site_settings` rows with `mcp-service cache`, run in the container of
    a healthy app host (the active color's first); every app host of both colors follows
    within 5 s. `--flush` makes every cached answer stale at once (a new cache generation
    in Redis); `--on` after `--off` flushes too. Changes are in the service's audit log.
    """
    try:
        cache_arguments(on, ttl, flush)
    except AccessError as exc:
        raise fail(str(exc), 2) from None
    settings, fleet = _stack(stack)
    state = _guarded(lambda: set_cache(fleet, settings.active_color, on, ttl, flush, step))
    if as_json:
        out.print_json(json.dumps(asdict(state)))
        return
    changed = on is not None or ttl is not None
    verb = "set from" if changed else "read on"
    out.print(
        f"read-tool cache {'on' if state.enabled else 'off'}, TTL {state.ttl} s "
        f"({verb} {state.host})" + (": every app host follows within 5 s" if changed else ""),
        soft_wrap=True,
    )
    if state.flushed:
        out.print("every cached answer is stale now: the next read of each comes from PostgreSQL")


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
    stack: AnyStackOption = "lab",
) -> None:
    """Issue a new API key; the old one keeps working for the grace period, then is refused.

    Runs `mcp-service keys rotate` on a healthy app host and writes the new key, which
    works at once on every host, over the stack's key file (lab: root only, 0600,
    atomically; AWS: a new current version of its Secrets Manager secret).
    Prints where the key is, never the key. Clients switch within the grace period and
    never see a 401. No deploy is needed: the hosts' performance check uses a metrics
    token of its own, not this key. The next deploy writes the new key into the hosts'
    environment and never brings the old one back.
    """
    settings, fleet = _stack(stack)
    hours = settings.api_key_grace_hours if grace_hours is None else grace_hours
    if stack == "lab":
        store: KeyFile | KeySecret = KeyFile(key_file(stack))
    else:
        from mcpdeploy.aws_inventory import stack_region

        region = stack_region(stack, project_root())
        secret = f"/{PROJECT}/{stack}/{NAMES['api_key']}"
        store = KeySecret(boto3.client("secretsmanager", region_name=region), secret)
    rotation = _guarded(lambda: rotate_key(fleet, settings.active_color, store, hours, step))
    until = rotation.old_valid_until.strftime("%Y-%m-%d %H:%M:%S UTC")
    out.print(
        f"new API key (prefix {rotation.new_prefix}, issued on {rotation.host}) is in "
        f"{rotation.key_store}; it works now on every app host",
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
            retry = "" if s.rule else " with Retry-After"
            out.print(
                f"{s.host}: maintenance ON since {s.since} by {s.by}: /api/ answers 503"
                f"{retry}; /health and /health/mcp are still served",
                soft_wrap=True,
            )
        else:
            out.print(f"{s.host}: maintenance off: every route is served")


def _maintenance(stack: str, on: bool | None) -> list[Maintenance]:
    """Set (``on``) or read (None) maintenance mode: the lab's edges, or an AWS listener."""
    if stack == "lab":
        settings, fleet = _stack(stack)
        if on is None:
            return _guarded(lambda: maintenance_status(fleet))
        return _guarded(lambda: set_maintenance(fleet, on, settings.domain, step))
    target = _aws_target(stack)
    listener, elbv2 = target.outputs["httpsListenerArn"], target.elbv2
    if on is None:
        return [_guarded(lambda: alb_maintenance_status(elbv2, listener))]
    return [_guarded(lambda: set_alb_maintenance(elbv2, listener, on, step))]


def maintenance_on(stack: AnyStackOption = "lab") -> None:
    """MCP and API routes (`/api/`) answer 503 with a JSON body; health stays true.

    Lab: writes a flag file on every edge host, which nginx tests per request (no reload,
    a deploy keeps it), and the answer carries `Retry-After`; checked through each edge's
    nginx. AWS: a rule on the ALB's HTTPS listener, ahead of the others, answers `/api/*`
    itself (the body says when to retry: an ALB cannot send `Retry-After`). Either way
    `/health` and `/health/mcp` still reach the active color and say how it really is.
    Undo: `ops maintenance off`.
    """
    _show(_maintenance(stack, True))


def maintenance_off(stack: AnyStackOption = "lab") -> None:
    """Serve MCP and API routes again: removes the edge's flag (lab) or the ALB rule (AWS)."""
    _show(_maintenance(stack, False))


def maintenance_status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
    stack: AnyStackOption = "lab",
) -> None:
    """Whether each edge host (AWS: the ALB) is in maintenance, since when and set by whom."""
    _show(_maintenance(stack, None), as_json)


def register(ops_app: typer.Typer) -> None:
    """Add ``disable``, ``enable``, ``cache``, ``rotate-key`` and ``maintenance`` to ``ops``."""
    ops_app.command("disable")(disable_command)
    ops_app.command("enable")(enable_command)
    ops_app.command("cache")(cache_command)
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
