"""Edits of ``Pulumi.<stack>.yaml`` that keep the operator's comments and layout.

A switch or a release is a change of one or two ``mcpdeploy:`` lines (``activeColor``,
``blueImage``/``greenImage``); the rest of the file, comments included, stays byte for
byte. Writes are atomic (a reader sees the old file or the new one, never half).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from mcpdeploy.settings import PROJECT, Settings, parse_settings


class StackFileError(Exception):
    """The file cannot be edited safely; the message says which line and why."""


def _line(key: str) -> re.Pattern[str]:
    return re.compile(rf"^(\s*{PROJECT}:{re.escape(key)}:[ \t]*)([^\s#]*)(.*)$", re.MULTILINE)


def edited(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each ``mcpdeploy:<key>`` of ``values`` set to its scalar value.

    A key on one line is replaced in place (a trailing comment kept); a missing key is
    added right after the ``activeColor`` line, indented like it. A key set on more than
    one line, or as a block, is refused rather than guessed at.
    """
    anchor = _line("activeColor")
    if len(anchor.findall(text)) != 1:
        raise StackFileError(f"the stack file must set {PROJECT}:activeColor on exactly one line")
    for key, value in values.items():
        if not re.fullmatch(r"[\w.:/@+-]+", value):
            raise StackFileError(f"{key}: {value!r} is not a plain scalar")
        pattern = _line(key)
        found = pattern.findall(text)
        if len(found) > 1:
            raise StackFileError(f"{PROJECT}:{key} is set on more than one line")
        if found and not found[0][1]:
            raise StackFileError(f"{PROJECT}:{key} is a block; set it on one line")
        if found:
            text = pattern.sub(lambda m, v=value: f"{m[1]}{v}{m[3]}", text)
        else:
            match = anchor.search(text)
            assert match is not None
            indent = match[1][: len(match[1]) - len(match[1].lstrip())]
            end = match.end()
            text = f"{text[:end]}\n{indent}{PROJECT}:{key}: {value}{text[end:]}"
    return text


def validated(text: str, source: str) -> Settings:
    """The settings ``text`` describes; :class:`~mcpdeploy.settings.SettingsError` if invalid."""
    return parse_settings(yaml.safe_load(text), source)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename, keeping its permissions."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(temp, path.stat().st_mode & 0o777)
    os.replace(temp, path)
