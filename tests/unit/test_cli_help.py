"""`--help` of `mcpdeploy` and of every group and command, at a fixed width, against the
committed snapshot tests/unit/cli_help.txt: the regrouping steps move code, never what a
user reads. After a deliberate change of a command or its help, rewrite the snapshot with
``MCPDEPLOY_UPDATE_SNAPSHOT=1 .venv/bin/pytest tests/unit/test_cli_help.py`` and commit it.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("cli_help.txt")
ROOT = Path(__file__).resolve().parents[2]
# Run in a fresh interpreter: Typer reads its terminal settings when it is imported.
_RENDER = r"""
import typer.main
from typer.testing import CliRunner

from mcpdeploy.cli import app

def paths(command, prefix):
    yield prefix
    # Typer's own (vendored) click: a group is what has subcommands.
    for name in sorted(getattr(command, "commands", {})):
        yield from paths(command.commands[name], [*prefix, name])

runner = CliRunner()
for path in paths(typer.main.get_command(app), []):
    result = runner.invoke(app, [*path, "--help"], prog_name="mcpdeploy")
    assert result.exit_code == 0, (path, result.output)
    print(f"$ mcpdeploy {' '.join([*path, '--help'])}")
    print(result.output.rstrip() + "\n")
"""


def render() -> str:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "VIRTUAL_ENV")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update(COLUMNS="100", TERMINAL_WIDTH="100", NO_COLOR="1", _TYPER_FORCE_DISABLE_TERMINAL="1")
    result = subprocess.run(
        [sys.executable, "-c", _RENDER],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_help_of_every_command_matches_the_snapshot():
    shown = render()
    if os.environ.get("MCPDEPLOY_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(shown)
    expected = SNAPSHOT.read_text()
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(True), shown.splitlines(True), "cli_help.txt", "now", n=2
        )
    )
    assert not diff, "--help changed (rewrite the snapshot if meant, see the docstring):\n" + diff
    assert shown.count("$ mcpdeploy ") >= 25  # every group and command, not the root alone
