"""Operations for files that must pass their own checker, or stay private, as they go live."""

from __future__ import annotations

import hashlib
import io
import posixpath
import shlex
from collections.abc import Iterator

from pyinfra import host
from pyinfra.api import operation
from pyinfra.api.command import FileUploadCommand, StringCommand
from pyinfra.facts.files import File, Sha256File


def upload_into(content: bytes, path: str) -> Iterator[str | FileUploadCommand]:
    """Commands that write ``content`` into ``path``, an existing file the caller created
    empty with its final owner and mode: the bytes never sit in a file others can read.

    Without sudo the SSH user writes ``path`` itself. With sudo (AWS: the AMI's ``admin``)
    SFTP writes as that user only, and pyinfra's own sudo upload would leave the bytes in
    a /tmp file with SFTP's default mode; so root first makes an empty 0600 file there
    owned by the SSH user, pyinfra uploads into it, copies it over ``path`` (which keeps
    its owner and mode) and removes it. Call from inside an operation.
    """
    arguments = host.current_op_global_arguments or {}
    if not arguments.get("_sudo"):
        yield FileUploadCommand(io.BytesIO(content), path, remote_temp_filename=path)
        return
    # Made afresh by root (rm, then install) and private to the SSH user from the start.
    stage = f"/tmp/.mcpdeploy-upload-{hashlib.sha256(path.encode()).hexdigest()[:16]}"  # noqa: S108
    yield f'rm -f {stage} && install -o "$SUDO_USER" -m 600 /dev/null {stage}'
    yield FileUploadCommand(io.BytesIO(content), path, remote_temp_filename=stage)


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


@operation()
def put_private(
    content: str, dest: str, user: str = "root", group: str = "root", mode: str = "600"
) -> Iterator[str | FileUploadCommand]:
    """``content`` in ``dest``, owned by ``user``:``group`` with ``mode``, never shown.

    Unlike ``files.put`` this never prints a diff (``--diff``) and never puts the content
    on a command line. The upload lands beside ``dest`` (keep its directory private),
    created empty with the final owner and mode first, then replaces ``dest`` in one rename.
    """
    wanted = hashlib.sha256(content.encode()).hexdigest()
    current = host.get_fact(Sha256File, path=dest)
    info = host.get_fact(File, path=dest) or {}
    owned = (info.get("user"), info.get("group"), info.get("mode")) == (user, group, int(mode))
    if current == wanted and owned:
        host.noop(f"{dest} is up to date")
        return
    q_dest, owner = shlex.quote(dest), shlex.quote(f"{user}:{group}")
    if current != wanted:
        temp = posixpath.join(posixpath.dirname(dest), f".{posixpath.basename(dest)}.new")
        q_temp = shlex.quote(temp)
        yield f"install -o {shlex.quote(user)} -g {shlex.quote(group)} -m {mode} /dev/null {q_temp}"
        yield from upload_into(content.encode(), temp)
        yield f"chown {owner} {q_temp} && chmod {mode} {q_temp} && mv {q_temp} {q_dest}"
    else:
        yield f"chown {owner} {q_dest} && chmod {mode} {q_dest}"
