"""``mcpdeploy preflight``: the guide's Pre-Deployment Checklist as checks, before a release.

Each check reports pass, warn or fail with what it saw and, unless it passed, the fix
(docs/preflight.md). Nothing changes on a host or in the registry, except that the idle
color's app host pulls the image it plans migrations for (the release pulls it anyway).
:func:`run_preflight` returns the checks so ``release`` can stop on a failure; the command
prints them as a table or JSON and exits 1 when any failed.

Hosts are reached through :class:`~mcpdeploy.fleet.Fleet` only: the lab's, or an AWS
stack's (mcpdeploy/targets.py); the image is looked up in the lab registry or in ECR.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import boto3
import typer
from rich.table import Table
from rich.text import Text

from mcpdeploy.aws_inventory import stack_region
from mcpdeploy.console import fail, out, step
from mcpdeploy.credentials import NAMES, state_dir
from mcpdeploy.engine import Progress, no_progress
from mcpdeploy.fleet import Fleet, FleetError
from mcpdeploy.preflight.check import Check, Status
from mcpdeploy.preflight.data import connections_check, plan_migrations, probe_dependencies
from mcpdeploy.preflight.hosts import probe_hosts
from mcpdeploy.preflight.image import ecr_checks, image_check, scan_check, scan_report_path
from mcpdeploy.preflight.tls import served_certificate_check
from mcpdeploy.settings import COLORS, Settings, SettingsError, load_settings, project_root
from mcpdeploy.switch import SwitchError
from mcpdeploy.targets import target_for

__all__ = ["Check", "PreflightError", "Status", "register", "run_preflight"]


class PreflightError(Exception):
    """Preflight cannot run for this stack; the message says why and what to do instead."""


def run_preflight(
    stack: str = "lab",
    image: str | None = None,
    *,
    fleet: Fleet | None = None,
    scan_file: Path | None = None,
    defer_contract: bool = False,
    ecr: Any = None,
    progress: Progress = no_progress,
) -> list[Check]:
    """The checklist for releasing ``image`` (default: the settings' image) to ``stack``.

    ``fleet``: the hosts and how to reach them (default: the stack's, mcpdeploy/targets.py).
    The lab's image is looked up in the lab registry, its scan in ``scan_file`` (default:
    :func:`~mcpdeploy.preflight.image.scan_report_path`) and its certificate at the edge;
    an AWS stack's image and scan in ECR (``ecr``: a boto3 client, default one in the
    stack's region) and its certificate at ``https://<domain>``, as clients get it.
    ``defer_contract``: the caller applies expand migrations only, so a contract migration
    new in this image waits for the next release (warn) instead of running now (fail).
    """
    try:
        settings = load_settings(stack)
    except SettingsError as exc:
        return [Check("settings", "fail", str(exc), f"`mcpdeploy config check --stack {stack}`")]
    checks = [Check("settings", "pass", f"Pulumi.{stack}.yaml is valid")]
    try:
        fleet = fleet or target_for(stack).fleet
    except (SwitchError, FleetError, SettingsError) as exc:
        raise PreflightError(f"cannot reach the hosts of {stack}: {exc}") from None

    progress("every host over SSH: memory and free disk")
    host_checks, reachable = probe_hosts(fleet, settings.maintenance.disk_alert_percent)
    checks += host_checks

    reference = image or settings.image
    if stack == "lab":
        progress(f"{reference} in the registry")
        image_result, pinned = image_check(reference)
        if scan_file is None and pinned is not None:
            scan_file = scan_report_path(stack, pinned.rpartition("@")[2])
        checks += [image_result, scan_check(scan_file)]
    else:
        progress(f"{reference} in ECR, and its scan")
        if ecr is None:
            ecr = boto3.client("ecr", region_name=stack_region(stack, project_root()))
        image_result, scan_result, pinned = ecr_checks(reference, ecr)
        checks += [image_result, scan_result]

    checks += _from_idle_color(fleet, settings, reachable, pinned, defer_contract, progress)

    if stack == "lab":
        progress("the certificate the edge serves")
        ca = state_dir(stack) / "ca.crt"
        address, port, ca_pem = (
            "127.0.0.1",
            settings.lab.https_port,
            ca.read_text() if ca.is_file() else None,
        )
    else:
        progress(f"the certificate https://{settings.domain} serves")
        address, port, ca_pem = settings.domain, 443, None
    checks.append(
        served_certificate_check(
            address, port, settings.domain, ca_pem, settings.maintenance.certificate_warning_days
        )
    )
    return redact(checks, _stack_secrets(stack))


def _from_idle_color(
    fleet: Fleet,
    settings: Settings,
    reachable: set[str],
    pinned: str | None,
    defer_contract: bool,
    progress: Progress,
) -> list[Check]:
    """PostgreSQL, Redis and migrations, asked where the release goes: the idle color."""
    idle_color = next(c for c in COLORS if c != settings.active_color)

    def first(color: str) -> str | None:
        hosts = [h.name for h in fleet.role("app") if h.color == color and h.name in reachable]
        return hosts[0] if hosts else None

    idle, active = first(idle_color), first(settings.active_color)
    if idle is None:
        why = f"not checked: no app host of the idle color ({idle_color}) answered"
        fix = "see the ssh checks"
        return [Check(name, "fail", why, fix) for name in ("postgres", "redis", "migrations")]
    progress(f"PostgreSQL and Redis from {idle} with the runtime credentials")
    # The image the service runs there (present, and made for that environment file).
    probe_image = fleet.running_image(idle) or pinned
    if probe_image is None:
        why = f"not checked: {idle} runs no service and the image is not in the registry"
        checks = [Check(n, "fail", why, "deploy the stack first") for n in ("postgres", "redis")]
    else:
        checks, postgres = probe_dependencies(fleet, idle, probe_image)
        if "max_connections" in postgres:
            per_host = settings.app.db_pool_size * settings.app.workers
            checks.append(connections_check(postgres, per_host, len(fleet.app_hosts())))
    if pinned is None:
        why = "not checked: the image is not in the registry"
        checks.append(Check("migrations", "fail", why, "see the image check"))
        return checks
    progress(f"the migrations {pinned} would apply, from {idle}")
    checks.append(plan_migrations(fleet, idle, pinned, active, defer_contract))
    return checks


def _stack_secrets(stack: str) -> list[str]:
    """The stack's secret values, as stored and URL-quoted (read only, never created)."""
    values = []
    for name in NAMES.values():
        try:
            value = (state_dir(stack) / "secrets" / name).read_text().strip()
        except OSError:
            continue
        values += [value, quote(value, safe="")]
    return values


def redact(checks: Iterable[Check], secrets: Iterable[str]) -> list[Check]:
    """``checks`` with every secret in their details and fixes replaced by ``[secret]``."""
    ordered = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def clean(text: str) -> str:
        for secret in ordered:
            text = text.replace(secret, "[secret]")
        return text

    return [Check(c.name, c.status, clean(c.detail), clean(c.fix)) for c in checks]


_STYLE = {"pass": "green", "warn": "yellow", "fail": "red"}


def register(app: typer.Typer) -> None:
    """Add the ``preflight`` command to ``app`` (the ``mcpdeploy`` CLI)."""

    @app.command("preflight")
    def preflight_command(
        stack: Annotated[
            str, typer.Option("--stack", "-s", help="Stack name: lab, or an AWS stack.")
        ] = "lab",
        image: Annotated[
            str | None,
            typer.Option("--image", help="Image to release (default: the settings' image)."),
        ] = None,
        scan: Annotated[
            Path | None,
            typer.Option(
                "--scan",
                help="The image's Trivy or Grype JSON report "
                "(default: /var/lib/mcpdeploy/STACK/scans/DIGEST.json).",
            ),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
    ) -> None:
        """Run the guide's Pre-Deployment Checklist against a stack, changing nothing.

        Checks: the settings; every host over SSH with at least 2 GiB of memory and 2 GiB
        free on its disks; PostgreSQL 13+ and Redis 6+ with the runtime credentials from an
        app host of the idle color; the migrations the image would apply, and whether its
        contract migrations may run; the certificate clients get (lab: the edge; AWS:
        https://DOMAIN): trusted, names the domain, days left; the image in the registry
        and its scan (lab: the report file; AWS: ECR's scan on push). Each says pass, warn
        or fail, with the fix. Exits 1 when any check fails (docs/preflight.md).
        """
        try:
            # Deploys run expand migrations only (roles/app); contract ones wait for a
            # release's contract step, so a new one is deferred, never applied at once.
            checks = run_preflight(
                stack,
                image,
                scan_file=scan,
                defer_contract=True,
                progress=no_progress if as_json else step,
            )
        except PreflightError as exc:
            raise fail(str(exc), 2) from None
        failed = any(c.status == "fail" for c in checks)
        if as_json:
            doc = {"stack": stack, "ok": not failed, "checks": [asdict(c) for c in checks]}
            out.print_json(json.dumps(doc))
        else:
            table = Table(box=None, pad_edge=False)
            for column in ("status", "check", "detail"):
                table.add_column(column, overflow="fold")
            for c in checks:
                # Text, not markup: a detail may hold brackets ("[secret]").
                detail = Text(c.detail)
                if c.fix:
                    detail.append(f"\nfix: {c.fix}", style="bold")
                table.add_row(Text(c.status, style=_STYLE[c.status]), Text(c.name), detail)
            out.print(table)
        if failed:
            raise typer.Exit(1)
