"""Operations for config files that must pass their own checker before they go live."""

from __future__ import annotations

import shlex
from collections.abc import Iterator

from pyinfra import host
from pyinfra.api import operation
from pyinfra.api.command import StringCommand
from pyinfra.facts.files import Sha256File


@operation()
def install_validated(
    src: str,
    dest: str,
    validate: str,
    mode: str = "644",
    validate_installed: str | None = None,
) -> Iterator[str | StringCommand]:
    """Copy a staged file over ``dest`` only if it differs and ``validate`` accepts it.

    + src: the staged candidate already on the host (e.g. rendered by ``files.template``)
    + dest: the live path the service reads
    + validate: command template checking the candidate, ``{path}`` is replaced by ``src``
    + mode: octal mode of ``dest``
    + validate_installed: optional check of the whole config once ``dest`` is in place; on
      failure the previous ``dest`` is restored, so a service restart still finds a valid
      config
    """
    if host.get_fact(Sha256File, path=src) == host.get_fact(Sha256File, path=dest):
        host.noop(f"{dest} already matches {src}")
        return

    q_src, q_dest = shlex.quote(src), shlex.quote(dest)
    yield StringCommand(validate.format(path=q_src))
    if validate_installed is None:
        yield f"install -o root -g root -m {mode} {q_src} {q_dest}"
        return
    previous = shlex.quote(f"{dest}.mcpdeploy-previous")
    yield (
        f"rm -f {previous}; if [ -e {q_dest} ]; then cp -p {q_dest} {previous}; fi; "
        f"install -o root -g root -m {mode} {q_src} {q_dest}; "
        f"if ! {validate_installed}; then "
        f"if [ -e {previous} ]; then mv {previous} {q_dest}; else rm -f {q_dest}; fi; "
        "exit 1; fi; "
        f"rm -f {previous}"
    )
