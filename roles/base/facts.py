"""Facts the base role needs that pyinfra does not ship."""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from pyinfra.api import FactBase


class WritableSysctls(FactBase[list[str]]):
    """The given sysctl keys this host lets us write (a container's /proc/sys is read-only)."""

    default = list

    def command(self, keys: Iterable[str]) -> str:
        """Print each key whose /proc/sys file exists and is writable."""
        paths = " ".join(shlex.quote(key) for key in keys)
        return (
            f"for key in {paths}; do "
            'path="/proc/sys/$(printf %s "$key" | tr . /)"; '
            '[ -w "$path" ] && echo "$key"; done; true'
        )

    def process(self, output: list[str]) -> list[str]:
        """One key per line."""
        return [line.strip() for line in output if line.strip()]


class ContainerVirtualization(FactBase[str | None]):
    """The container technology this host runs in (``docker``, ``lxc``...), or None."""

    def command(self) -> str:
        """``systemd-detect-virt -c`` prints ``none`` (and exits 1) outside a container."""
        return "systemd-detect-virt --container || true"

    def process(self, output: list[str]) -> str | None:
        """``none`` becomes None."""
        value = output[0].strip() if output else "none"
        return None if value == "none" else value
