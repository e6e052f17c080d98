"""Blue-green switching for stacks with an edge host (the lab and self-hosted).

A switch is the same edit everywhere: ``activeColor`` in ``Pulumi.<stack>.yaml``. Here it
is guarded: the new color's hosts must answer ``/health/mcp`` with 200 as the edge sees
them, the edited file must validate, and the edge deploy (``nginx -t`` then a reload that
drops nothing) must succeed, or the file is put back and the active color stays as it was.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from mcpdeploy.engine import Progress, no_progress
from mcpdeploy.fleet import AppHost, FleetError, health_from_edge
from mcpdeploy.settings import COLORS, Settings, parse_settings, project_root, stack_file

ACTIVE_LINE = re.compile(r"^(\s*mcpdeploy:activeColor:\s*)(\S+)(.*)$", re.MULTILINE)


class SwitchError(Exception):
    """The switch did not happen; the message names why and what to look at."""


def edited_stack(text: str, color: str) -> str:
    """``text`` (a stack file) with ``activeColor`` set to ``color``, comments kept."""
    if len(ACTIVE_LINE.findall(text)) != 1:
        raise SwitchError("the stack file must set mcpdeploy:activeColor on exactly one line")
    return ACTIVE_LINE.sub(lambda m: f"{m[1]}{color}{m[3]}", text)


def switch(
    stack: str,
    color: str,
    hosts: list[AppHost],
    ssh: list[str],
    inventory: str,
    edge: str = "edge",
    progress: Progress = no_progress,
) -> Settings:
    """Make ``color`` the active color of ``stack``; refuse and change nothing if unsafe."""
    if color not in COLORS:
        raise SwitchError(f"unknown color {color!r}: blue or green")
    path = stack_file(stack)
    original = path.read_text()
    settings = parse_settings(yaml.safe_load(original), path.name)
    if settings.active_color == color:
        progress(f"{color} is already the active color of {stack}: nothing to do")
        return settings
    targets = [h for h in hosts if h.color == color]
    if not targets:
        raise SwitchError(f"{color} has no app hosts in {inventory}: nothing could serve")
    progress(f"checking {color}'s hosts from the edge: " + ", ".join(h.name for h in targets))
    try:
        health = health_from_edge(ssh, edge, settings.domain, targets)
    except FleetError as exc:
        raise SwitchError(str(exc)) from None
    failing = {name: status for name, status in health.items() if status != 200}
    if failing:
        detail = "; ".join(f"{name}: {status}" for name, status in failing.items())
        raise SwitchError(
            f"{color} is not ready ({detail}); {settings.active_color} keeps serving. "
            f"Look at 'journalctl -u mcp-service' and 'docker logs mcp-service' on those hosts"
        )
    new_text = edited_stack(original, color)
    parse_settings(yaml.safe_load(new_text), path.name)
    _write_atomically(path, new_text)
    progress(f"activeColor: {color} in {path.name}; deploying the edge")
    deploy = subprocess.run(
        [
            str(Path(sys.executable).with_name("pyinfra")),
            "-y",
            "--limit",
            "edge",
            inventory,
            "deploy.py",
        ],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if deploy.returncode != 0:
        _write_atomically(path, original)
        tail = (deploy.stdout + deploy.stderr).strip().splitlines()[-5:]
        raise SwitchError(
            f"the edge deploy failed, {path.name} is restored and "
            f"{settings.active_color} keeps serving: {' / '.join(tail)}"
        )
    progress(f"{color} is serving")
    return parse_settings(yaml.safe_load(new_text), path.name)


def _write_atomically(path: Path, text: str) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(temp, path.stat().st_mode & 0o777)
    os.replace(temp, path)
