"""``mcpdeploy``: the thin CLI over Pulumi, pyinfra and testinfra.

Configuration (``Pulumi.STACK.yaml``) says what; these verbs say how. A user's
mistake prints one clear line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated

import typer
from docker.errors import DockerException

from mcpdeploy import access, support
from mcpdeploy.console import fail, out, step
from mcpdeploy.engine import EngineError, docker_client
from mcpdeploy.fleet import FleetError, lab_fleet
from mcpdeploy.lab import Lab, topology
from mcpdeploy.preflight import register as register_preflight
from mcpdeploy.release import ReleaseError, deploy_color, release, rollback
from mcpdeploy.releaselog import LockError
from mcpdeploy.settings import COLORS, SettingsError, load_settings
from mcpdeploy.switch import SwitchError, switch
from mcpdeploy.targets import Target, target_for

app = typer.Typer(
    help="Provision, deploy, verify and switch the MCP service. See README.md and docs/.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
config_app = typer.Typer(
    help="Inspect and validate stack settings.", no_args_is_help=True, rich_markup_mode="markdown"
)
lab_app = typer.Typer(
    help="The local lab: edge, app-blue, app-green and data as systemd containers.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
ops_app = typer.Typer(
    help="Day-2 operations: the guide's procedures as commands.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(config_app, name="config")
app.add_typer(lab_app, name="lab")
register_preflight(app)
app.add_typer(ops_app, name="ops")
support.register(ops_app)
access.register(ops_app)


StackOption = Annotated[
    str, typer.Option("--stack", "-s", help="Stack name: reads Pulumi.STACK.yaml.")
]


TargetOption = Annotated[
    str,
    typer.Option(
        "--stack",
        "-s",
        help="lab, or an AWS stack (Pulumi.STACK.yaml; its hosts and ALB come from the "
        "stack outputs, through the Pulumi CLI, with your AWS credentials).",
    ),
]


def _lab() -> Lab:
    try:
        settings = load_settings("lab")
    except SettingsError as exc:
        raise fail(str(exc), 2) from None
    return Lab(topology(settings), progress=step)


@config_app.command("check")
def config_check(stack: StackOption) -> None:
    """Validate Pulumi.STACK.yaml without touching anything.

    Prints the effective settings (defaults filled in, secrets masked) and exits 0,
    or prints every invalid key with its value and what is allowed, and exits 2.
    """
    try:
        settings = load_settings(stack)
    except SettingsError as exc:
        raise fail(str(exc), 2) from None
    out.print_json(json.dumps(settings.masked()))


@lab_app.command("up")
def lab_up() -> None:
    """Create or repair the lab (idempotent, needs root).

    Installs docker.io and debootstrap when missing, starts the Docker engine when none
    answers, builds the Debian 12 host image once, then starts the network, the TLS
    registry and the hosts, and waits until each has booted and answers SSH. Running it
    again changes nothing.
    """
    lab = _lab()
    try:
        lab.up()
    except EngineError as exc:
        raise fail(str(exc)) from None
    except DockerException as exc:
        raise fail(f"the Docker engine refused: {exc}") from None


@lab_app.command("down")
def lab_down() -> None:
    """Remove the lab's containers, network and volumes, nothing else.

    Only objects labelled mcpdeploy.lab go. Keys, the lab CA and the cached base images
    stay for the next 'lab up'.
    """
    lab = _lab()
    try:
        removed = lab.down()
    except EngineError as exc:
        raise fail(str(exc)) from None
    step(f"removed {len(removed)} lab object(s)" if removed else "no lab to remove")


@lab_app.command("status")
def lab_status(
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable (docs/lab.md).")
    ] = False,
) -> None:
    """Show the lab's hosts, addresses, SSH ports and files; exit 1 when it is not up."""
    lab = _lab()
    try:
        client = docker_client(timeout=0) if os.geteuid() == 0 else None
    except EngineError:
        client = None
    doc = lab.status(client)
    if as_json:
        out.print_json(json.dumps(doc))
    else:
        out.print(
            f"lab {'up' if doc['up'] else 'not up'} — {doc['url']} — network "
            f"{doc['network']['name']} {doc['network']['subnet']}"
        )
        for h in doc["hosts"]:
            out.print(
                f"  {h['name']:<10} {h['role']:<5} {h['color'] or '-':<6} "
                f"{h['address']:<15} ssh 127.0.0.1:{h['ssh_port']:<5} {h['state']}"
            )
        out.print(f"  ssh key {doc['ssh_key']}")
        out.print(f"  CA      {doc['ca_cert'] or '(none yet)'}")
        out.print(f"  API key {doc['api_key_file'] or '(none yet: deploy the lab)'}")
    if not doc["up"]:
        raise typer.Exit(1)


@lab_app.command("ssh", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def lab_ssh(
    ctx: typer.Context,
    host: Annotated[str, typer.Argument(help="edge, app-blue, app-green or data")],
) -> None:
    """Open a shell (or run the trailing command) on a lab host over SSH."""
    lab = _lab()
    try:
        lab.topo.host(host)
    except KeyError as exc:
        raise fail(str(exc.args[0]), 2) from None
    if not lab.ssh_config.exists():
        raise fail("the lab has no SSH config yet: run 'mcpdeploy lab up'")
    argv = ["ssh", "-F", str(lab.ssh_config), host, *ctx.args]
    sys.stdout.flush()
    os.execvp("ssh", argv)  # noqa: S606 - hands the terminal to ssh


@app.command("switch")
def switch_command(
    to: Annotated[str, typer.Option("--to", help="The color to serve: blue or green.")],
    stack: TargetOption = "lab",
) -> None:
    """Serve the other color, checked first; on any failure the old color keeps serving.

    The lab (and stacks with an edge): the new color's hosts must answer /health/mcp with
    200 as the edge sees them; then activeColor is set in Pulumi.STACK.yaml and the edge's
    part of the deploy run, deploy_edge.py (it moves the flag file its nginx reads per
    request: no reload, no dropped connection; the rest of the edge is deploy.py's).
    AWS: every host of the new color must be healthy in its ALB target group; then
    activeColor is set and `pulumi up` run (Automation API), the listener checked, and
    the old color put back if anything fails. No drain, watch or lock: that is what
    `mcpdeploy release` and `rollback` add.
    """
    if to not in COLORS:
        raise fail(f"--to {to!r}: blue or green", 2)
    try:
        if stack == "lab":
            switch(lab_fleet(), to, progress=step)
        else:
            from mcpdeploy.aws_switch import switch_aws

            switch_aws(stack, to, progress=step)
    except (SwitchError, SettingsError, FleetError) as exc:
        raise fail(str(exc)) from None


def _target(stack: str) -> Target:
    """The stack's target (the lab's edge, or an AWS stack), or one error line."""
    try:
        return target_for(stack)
    except (SwitchError, SettingsError, FleetError) as exc:
        raise fail(f"cannot reach {stack}: {exc}", 2) from None


BreakLockOption = Annotated[
    bool,
    typer.Option(
        "--break-lock",
        help="Remove a stale lock (holder gone, or older than release.lockTimeoutMinutes) "
        "first; recorded in the release log. A lock held by a live process here stays.",
    ),
]


@app.command("release")
def release_command(
    image: Annotated[
        str,
        typer.Option(
            "--image",
            help="Image reference to release (tag or @sha256 digest). In the lab registry "
            "without a tag: built from app_image/ sources.",
        ),
    ],
    stack: TargetOption = "lab",
    break_lock: BreakLockOption = False,
) -> None:
    """Release IMAGE to the idle color, gate it, switch to it, watch it, or switch back.

    Steps, each shown as it runs: take the stack's release lock; pin IMAGE by digest; run
    preflight (stops on a failure); record IMAGE as the idle color's image
    (blueImage/greenImage); deploy the idle hosts one at a time (pull, expand migrations,
    restart, readiness); gates on each idle host (readiness, MCP handshake, tools/list
    with a short-lived key of their own; AWS: also its ALB target health) and, in the
    lab, testinfra on the idle hosts; switch; drain the old color
    (release.drainTimeoutSeconds, then its SSE streams are closed cleanly, then what is
    left is cut) and report drained, closed and cut; watch the new color's error rate and
    p99 for release.watchSeconds and switch back on a breach; apply contract migrations
    that already shipped in the rollback target (defer new ones); write the audit record
    (mcpdeploy status shows the last ones); give the lock back, Ctrl-C included.

    Lab: the lock and log on the edge, the switch by the edge, the watch from its access
    log. AWS: the lock and log in the stack's DynamoDB table, the image pinned in ECR,
    the switch by `pulumi up`, the watch from CloudWatch (docs/aws.md).

    Any failure before the switch leaves the active color serving and the stack file as
    it was. Exit 0: released and kept; 1: failed or rolled back (the message says which
    step, host and what to look at). Commit Pulumi.STACK.yaml afterwards.
    """
    target = _target(stack)
    try:
        report = release(target, image, break_lock=break_lock, progress=step)
    except (ReleaseError, LockError, SettingsError, FleetError) as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail(
            "interrupted: the lock is released; mcpdeploy status shows what serves", 130
        ) from None
    if report.outcome != "kept":
        raise fail(
            f"rolled back: {report.error}; {report.from_color} serves again, {report.to_color} "
            f"keeps {report.image} for inspection"
        )


@app.command("rollback")
def rollback_command(
    stack: TargetOption = "lab",
    break_lock: BreakLockOption = False,
) -> None:
    """Serve the previous color again, with the image it still runs.

    Takes the release lock, checks that the idle color's hosts run the image the stack
    file records for them and are ready (lab: /health/mcp from the edge; AWS: healthy in
    their ALB target group), then switches to it and records the rollback in the release
    log. Refused (nothing changes) when the previous release is not there any more.
    """
    target = _target(stack)
    try:
        rollback(target, break_lock=break_lock, progress=step)
    except (ReleaseError, LockError, SettingsError, FleetError) as exc:
        raise fail(str(exc)) from None


@app.command("deploy")
def deploy_command(
    color: Annotated[str, typer.Option("--color", help="The color to update: blue or green.")],
    rolling: Annotated[
        bool,
        typer.Option(
            "--rolling/--all-at-once",
            help="One host at a time, each gated on readiness. --all-at-once is refused: a "
            "color is never taken down at once.",
        ),
    ] = True,
    stack: TargetOption = "lab",
) -> None:
    """Rolling deploy of one color's hosts with the image the stack file gives that color.

    The guide's alternative to blue-green: each host is deployed (pull, migrate, restart)
    and must answer /health/mcp before the next one starts; the first failure stops the
    rollout, naming the host. Holds the release lock and is recorded in the release log.
    The serving color is refused when it has a single host (that would be an outage).
    """
    if color not in COLORS:
        raise fail(f"--color {color!r}: blue or green", 2)
    if not rolling:
        raise fail("only rolling deploys are supported: drop --all-at-once", 2)
    target = _target(stack)
    try:
        hosts = deploy_color(target, color, progress=step)
    except (ReleaseError, LockError, SettingsError, FleetError) as exc:
        raise fail(str(exc)) from None
    step(f"{color}: {', '.join(hosts)} deployed and ready")


def _release_line(record: dict) -> dict:
    """A release-log record as status shows it."""
    keys = ("kind", "outcome", "from_color", "to_color", "user", "image", "duration", "error")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.get("started") or record["time"]))
    return {"when": when, **{key: record.get(key) for key in keys}}


@app.command("status")
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
    stack: TargetOption = "lab",
) -> None:
    """Active color, each color's image, per app host its health and running image, the
    release lock's holder and the last releases.

    Health is /health/mcp as traffic reaches each host (lab: from the edge; AWS: the
    host's state in its ALB target group); the images are what the stack file gives each
    color and what each host's container runs; the releases come from the release log
    (lab: on the edge; AWS: the stack's DynamoDB table). Exits 1 when a host of the
    active color is not healthy.
    """
    settings = load_settings(stack)
    target = _target(stack)
    fleet = target.fleet
    hosts = fleet.app_hosts()
    try:
        health = {
            name: status
            for color in COLORS
            for name, status in target.readiness(settings.domain, color).items()
        }
        store = target.store()
        holder = store.holder()
        releases = store.last(5)
    except (FleetError, SwitchError, LockError) as exc:
        hint = " (is the lab up and deployed? mcpdeploy lab status)" if stack == "lab" else ""
        raise fail(f"{exc}{hint}") from None
    doc = {
        "stack": stack,
        "active_color": settings.active_color,
        "url": _lab().topo.url if stack == "lab" else f"https://{settings.domain}",
        "images": {color: settings.image_for(color) for color in COLORS},
        "lock": holder.describe() if holder else None,
        "releases": [_release_line(r) for r in releases],
        "hosts": [
            {
                "name": h.name,
                "color": h.color,
                "address": h.address,
                "health": health.get(h.name, "unknown"),
                "image": fleet.running_image(h.name),
            }
            for h in hosts
        ],
    }
    if as_json:
        out.print_json(json.dumps(doc))
    else:
        out.print(f"{stack}: {settings.active_color} serves {doc['url']}")
        for h in doc["hosts"]:
            mark = "*" if h["color"] == settings.active_color else " "
            line = f" {mark} {h['name']:<10} {h['color']:<6} {h['health']!s:<5} {h['image']}"
            out.print(line, soft_wrap=True)
        if holder:
            out.print(f"locked by {doc['lock']}", soft_wrap=True)
        out.print("last releases:" if doc["releases"] else "no releases recorded yet")
        for r in doc["releases"]:
            out.print(
                f"  {r['when']} {r['kind']:<10} {r['outcome']:<12} {r['from_color']}→"
                f"{r['to_color']} by {r['user']} ({r['duration']} s) {r['image'] or ''}",
                soft_wrap=True,
            )
    serving = [h for h in doc["hosts"] if h["color"] == settings.active_color]
    if not serving or any(h["health"] != 200 for h in serving):
        raise typer.Exit(1)
