"""Blue-green switching for stacks with an edge host (the lab and self-hosted).

A switch is the same edit everywhere: ``activeColor`` in ``Pulumi.<stack>.yaml``. Here it
is guarded: the new color's hosts must answer ``/health/mcp`` with 200 as the edge sees
them, the edited file must validate, and the edge's own deploy must succeed
(deploy_edge.py: it moves the flag file the edge's nginx reads per request, no reload and
no dropped connection, roles/edge; and it brings the site's upstreams up to date), or the
file is put back and the active color stays as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mcpdeploy.engine import Progress, no_progress
from mcpdeploy.fleet import Fleet, FleetError
from mcpdeploy.settings import COLORS, Settings, project_root, stack_file
from mcpdeploy.stackfile import StackFileError, edited, validated, write_atomically


class SwitchError(Exception):
    """The switch did not happen; the message names why and what to look at."""


def other_color(color: str) -> str:
    """The idle color when ``color`` serves."""
    return COLORS[1 - COLORS.index(color)]  # type: ignore[arg-type]


def pyinfra(
    fleet: Fleet, hosts: Sequence[str], timeout: float = 900, deploy: str = "deploy.py"
) -> subprocess.CompletedProcess[str]:
    """``pyinfra -y --limit HOST [--limit HOST ...] <inventory> DEPLOY`` from the project
    root (with ``MCPDEPLOY_STACK``: an inventory such as hosts/aws.py serves any stack).
    One ``--limit`` per host: pyinfra reads ``a,b`` as one name, which matches nothing."""
    if not hosts:
        raise ValueError("pyinfra: no hosts to limit the run to")
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("pyinfra")),
            "-y",
            *(arg for host in hosts for arg in ("--limit", host)),
            fleet.inventory,
            deploy,
        ],
        cwd=project_root(),
        env={**os.environ, "MCPDEPLOY_STACK": fleet.stack},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def tail(result: subprocess.CompletedProcess[str], lines: int = 5) -> str:
    """The last lines a command printed, on one line."""
    return " / ".join((result.stdout + result.stderr).strip().splitlines()[-lines:])


def ready_failures(fleet: Fleet, domain: str, color: str) -> dict[str, int | str]:
    """{host: status or error} for ``color``'s hosts that do not answer /health/mcp with 200."""
    targets = fleet.app_hosts(color)
    if not targets:
        raise SwitchError(f"{color} has no app hosts in {fleet.inventory}: nothing could serve")
    try:
        health = fleet.health_from_edge(domain, targets)
    except FleetError as exc:
        raise SwitchError(str(exc)) from None
    return {name: status for name, status in health.items() if status != 200}


def apply_edge(fleet: Fleet, path: Path, original: str, new_text: str) -> Settings:
    """Write ``new_text`` to ``path`` and run the edge's deploy (deploy_edge.py); restore
    ``original`` on failure."""
    try:
        settings = validated(new_text, path.name)
    except StackFileError as exc:
        raise SwitchError(str(exc)) from None
    edges = [h.name for h in fleet.role("edge")]
    if not edges:
        raise SwitchError(f"{fleet.inventory} has no edge hosts: nothing would serve the switch")
    write_atomically(path, new_text)
    try:
        deploy = pyinfra(fleet, edges, deploy="deploy_edge.py")
    except BaseException:
        write_atomically(path, original)
        raise
    if deploy.returncode != 0:
        write_atomically(path, original)
        before = validated(original, path.name).active_color
        raise SwitchError(
            f"the edge deploy failed, {path.name} is restored and {before} keeps serving: "
            f"{tail(deploy)}"
        )
    return settings


def switch(fleet: Fleet, color: str, progress: Progress = no_progress) -> Settings:
    """Make ``color`` the active color of ``fleet.stack``; refuse and change nothing if unsafe."""
    if color not in COLORS:
        raise SwitchError(f"unknown color {color!r}: blue or green")
    path = stack_file(fleet.stack)
    original = path.read_text()
    settings = validated(original, path.name)
    if settings.active_color == color:
        progress(f"{color} is already the active color of {fleet.stack}: nothing to do")
        return settings
    progress(f"checking {color}'s hosts from the edge")
    failing = ready_failures(fleet, settings.domain, color)
    if failing:
        detail = "; ".join(f"{name}: {status}" for name, status in failing.items())
        raise SwitchError(
            f"{color} is not ready ({detail}); {settings.active_color} keeps serving. "
            f"Look at 'journalctl -u mcp-service' and 'docker logs mcp-service' on those hosts"
        )
    try:
        new_text = edited(original, {"activeColor": color})
    except StackFileError as exc:
        raise SwitchError(str(exc)) from None
    progress(f"activeColor: {color} in {path.name}; deploying the edge")
    new = apply_edge(fleet, path, original, new_text)
    progress(f"{color} is serving")
    return new
