"""docs/runbook.md names only paths that exist and `mcpdeploy` commands the CLI accepts.

The runbook is read at 3 a.m.: a renamed file or a dropped option must fail here, not
there. Commands are checked by parsing them with ``--help`` appended, so an unknown
command or option is a usage error (exit 2) while nothing runs.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcpdeploy.cli import app

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbook.md"
TEXT = RUNBOOK.read_text()
# Backticked repository paths: they start at one of the repository's top-level entries.
TOP_LEVEL = (
    r"(?:\.github|app_image|benchmarks|docs|hosts|infra|mcpdeploy|policies|roles|scripts|tests)/"
)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


def _repository_paths() -> list[str]:
    paths = re.findall(rf"`({TOP_LEVEL}[^`\s<*]*)`", TEXT)
    return sorted({p.rstrip(",") for p in paths})


def _commands() -> list[str]:
    commands = set(re.findall(r"`(mcpdeploy [^`]+)`", TEXT))
    for block in re.findall(r"```sh\n(.*?)```", TEXT, re.DOTALL):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("mcpdeploy "):
                commands.add(line)
    return sorted(commands)


@pytest.mark.parametrize("path", _repository_paths())
def test_named_path_exists(path: str) -> None:
    assert (ROOT / path).exists(), f"docs/runbook.md names {path}, which does not exist"


def test_links_and_anchors_resolve() -> None:
    for target in re.findall(r"\]\(([^)#]*)(?:#([^)]*))?\)", TEXT):
        file, anchor = target
        document = RUNBOOK if not file else (RUNBOOK.parent / file).resolve()
        assert document.exists(), f"link to {file} from docs/runbook.md"
        if anchor and document.suffix == ".md":
            assert anchor in _anchors(document.read_text()), f"anchor {file}#{anchor}"


@pytest.mark.parametrize("command", _commands())
def test_command_parses(command: str) -> None:
    argv = shlex.split(command)[1:]
    # What follows `--` goes to the remote host; optional parts are shown in brackets.
    if "--" in argv:
        argv = argv[: argv.index("--")]
    argv = [a for a in argv if not (a.startswith("[") or a.endswith("]"))]
    argv = ["edge" if a == "HOST" else a for a in argv]
    result = CliRunner().invoke(app, [*argv, "--help"])
    assert result.exit_code == 0, f"{command}: {result.output[-400:]}"
