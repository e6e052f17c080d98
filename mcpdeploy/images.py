"""Images built locally from Debian, since no image registry is reachable.

Every image starts from a root filesystem made by ``debootstrap`` and ``docker import``.
Images are tagged by a hash of what went into them, so a machine that built one
reuses it and a change of package list builds a new one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import platform
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from docker.errors import BuildError, ImageNotFound

from mcpdeploy.engine import (
    EngineError,
    Progress,
    docker_client,
    exclusive,
    no_progress,
    require_free_space,
)

CACHE = Path("/var/cache/mcpdeploy")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
APP_IMAGE_DIR = Path(__file__).resolve().parent.parent / "app_image"

# Files laid into every root filesystem before import.
_SOURCES = f"""Types: deb
URIs: {MIRROR}
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {SECURITY_MIRROR}
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


class ImageError(EngineError):
    """An image could not be built."""


def ensure_debootstrap_image(
    repository: str,
    include: list[str],
    *,
    changes: list[str] | None = None,
    progress: Progress = no_progress,
) -> str:
    """Return ``repository:<hash>`` for a Debian 12 root filesystem with ``include`` installed.

    Built once with ``debootstrap --variant=minbase`` and imported; later calls with the
    same inputs reuse the image. Host SSH keys and the machine id are removed so every
    container made from it gets its own.
    """
    changes = changes or []
    digest = hashlib.sha256("\n".join([SUITE, *sorted(include), *changes]).encode()).hexdigest()
    tag = f"{repository}:{SUITE}-{digest[:12]}"
    client = docker_client(progress)
    try:
        client.images.get(tag)
        return tag
    except ImageNotFound:
        pass
    require_free_space(CACHE)
    progress(f"building {tag} with debootstrap (about a minute, once)")
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log = CACHE / f"debootstrap-{digest[:12]}.log"
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(include)}",
            SUITE,
            str(rootfs),
            MIRROR,
        ]
        with log.open("w") as out:
            result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            tail = log.read_text().strip().splitlines()[-3:]
            raise ImageError(f"debootstrap failed ({' / '.join(tail)}); full log: {log}")
        _prepare_rootfs(rootfs)
        archive = Path(tmp) / "rootfs.tar"
        subprocess.run(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(archive), "."], check=True
        )
        shutil.rmtree(rootfs)
        progress(f"importing {tag}")
        repo, _, version = tag.rpartition(":")
        client.api.import_image(src=str(archive), repository=repo, tag=version, changes=changes)
    return tag


def _prepare_rootfs(rootfs: Path) -> None:
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(_SOURCES)
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    machine_id = rootfs / "etc/machine-id"
    if machine_id.exists():
        machine_id.write_text("")
    subprocess.run(["chroot", str(rootfs), "apt-get", "clean"], check=False)


def app_base_image(progress: Progress = no_progress) -> str:
    """The reference service's runtime base: Debian 12 with ``app_image/base/packages.txt``."""
    packages = (APP_IMAGE_DIR / "base" / "packages.txt").read_text().split()
    return ensure_debootstrap_image("mcpdeploy/app-base", packages, progress=progress)


def fetch_app_wheels(progress: Progress = no_progress) -> Path:
    """Download the pinned runtime wheels into ``app_image/wheels/`` (git-ignored).

    With them the image build installs offline, trusting nothing but this machine's own pip
    configuration (a proxy CA, a local index), which a debootstrap base does not carry.
    """
    dest = APP_IMAGE_DIR / "wheels"
    arch = platform.machine()
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in (36, 34, 28, 17)]
    platforms.append(f"manylinux2014_{arch}")
    progress("fetching the service's pinned wheels")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        "3.11",
        "--abi",
        "cp311",
        "--abi",
        "abi3",
        "--abi",
        "none",
        *[arg for name in platforms for arg in ("--platform", name)],
        "-r",
        str(APP_IMAGE_DIR / "requirements.txt"),
        "-d",
        str(dest),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImageError(f"pip download of the service's wheels failed: {result.stderr[-800:]}")
    return dest


def build_app_image(tag: str = "mcpdeploy/app:dev", progress: Progress = no_progress) -> str:
    """Build ``app_image/`` on the debootstrap base, from pinned wheels, and tag it ``tag``.

    One build at a time on this machine (a lock file): `make test` builds in the service
    tests and the lab deploy at once, and two ``pip download`` runs into one wheels
    directory, or two debootstraps of one base, would race."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with exclusive(CACHE / "image-build.lock"):
        base = app_base_image(progress)
        fetch_app_wheels(progress)
        client = docker_client(progress)
        progress(f"building {tag} from {APP_IMAGE_DIR}")
        try:
            client.images.build(
                path=str(APP_IMAGE_DIR),
                tag=tag,
                buildargs={"BASE_IMAGE": base},
                rm=True,
                pull=False,
            )
        except BuildError as exc:
            lines = [str(c.get("stream") or c.get("error") or "") for c in exc.build_log]
            tail = " / ".join(line.strip() for line in lines if line.strip())[-600:]
            raise ImageError(f"docker build of {APP_IMAGE_DIR} failed: {tail}") from None
    return tag


def app_source_tag() -> str:
    """``src-<hash>`` of everything that goes into the service image (tests and caches aside).

    The same sources always give the same tag and any change gives a new one, so a tag in
    the lab registry is never overwritten: it is as immutable as a release tag.
    """
    digest = hashlib.sha256()
    for path in sorted(APP_IMAGE_DIR.rglob("*")):
        relative = path.relative_to(APP_IMAGE_DIR)
        if not path.is_file() or relative.parts[0] in _NOT_IN_IMAGE or "__pycache__" in path.parts:
            continue
        digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"src-{digest.hexdigest()[:12]}"


@functools.cache
def release_image(reference: str, progress: Progress = no_progress) -> str:
    """The image reference hosts run for ``reference`` (the settings' ``image``).

    Outside the lab registry ``reference`` is returned as it is (ECR, a user's registry:
    built and pushed by their pipeline). In the lab registry
    (``registry.mcp.lab.test:5000/<repository>[:<tag>]``; without a tag the tag is
    :func:`app_source_tag`) the image is built and pushed first if the registry lacks it
    (any other tag must already be there: it is never built under a name it did not ask for);
    a tag the registry has is never rebuilt or pushed again (a no-op), so every host of a
    pyinfra run, and every later run, gets the same bytes. Returns
    ``registry.mcp.lab.test:5000/<repository>@sha256:...``, which hosts pull and the
    service unit runs: a restart can never pick up other bytes.
    """
    from mcpdeploy.lab.topology import REGISTRY_NAME, REGISTRY_PORT

    lab_registry = f"{REGISTRY_NAME}:{REGISTRY_PORT}"
    registry, _, rest = reference.partition("/")
    if registry != lab_registry or "@" in rest:
        return reference
    repository, _, tag = rest.partition(":")
    source_tag = app_source_tag()
    tag = tag or source_tag
    # pyinfra loads deploy.py for every host at once (greenlets), and each asks for the
    # same image: one at a time, or two pushes of one layer race in the registry (500).
    with _one_push_at_a_time():
        digest = _lab_manifest_digest(repository, tag)
        if digest is None:
            _build_and_push(repository, tag, source_tag, progress)
            digest = _lab_manifest_digest(repository, tag)
            if digest is None:
                raise ImageError(f"the lab registry has no {repository}:{tag} right after the push")
    return f"{lab_registry}/{repository}@{digest}"


_PUSH_LOCK = threading.Lock()  # gevent-aware under pyinfra (monkey-patched)


@contextlib.contextmanager
def _one_push_at_a_time() -> Iterator[None]:
    """This process's callers one by one, then other processes (a lock file)."""
    from mcpdeploy.lab.topology import STATE_DIR

    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with _PUSH_LOCK, exclusive(STATE_DIR / "image-push.lock"):
        yield


def _build_and_push(repository: str, tag: str, source_tag: str, progress: Progress) -> None:
    """Build app_image/'s sources as ``repository:tag`` and push it to the lab registry."""
    from mcpdeploy.lab.topology import REGISTRY_PORT

    if tag != source_tag:
        raise ImageError(
            f"the lab registry has no {repository}:{tag}: push it to 127.0.0.1:{REGISTRY_PORT}/"
            f"{repository}:{tag} first, or give no tag to build app_image/'s sources"
        )
    built = build_app_image(f"{repository}:{tag}", progress)
    # The operator's Docker trusts a registry on 127.0.0.1 without extra configuration.
    push = f"127.0.0.1:{REGISTRY_PORT}/{repository}"
    client = docker_client(progress)
    client.images.get(built).tag(push, tag)
    progress(f"pushing {push}:{tag}")
    for line in client.images.push(push, tag, stream=True, decode=True):
        if "error" in line:
            raise ImageError(f"push of {push}:{tag} to the lab registry failed: {line['error']}")


def _lab_manifest_digest(repository: str, tag: str) -> str | None:
    """The digest the lab registry serves for ``repository:tag``, or None if it has none."""
    from mcpdeploy.lab.topology import REGISTRY_PORT, STATE_DIR

    context = ssl.create_default_context(cafile=str(STATE_DIR / "ca.crt"))
    request = urllib.request.Request(
        f"https://127.0.0.1:{REGISTRY_PORT}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": ", ".join(_MANIFEST_TYPES)},
    )
    try:
        # A fixed https:// URL on 127.0.0.1.
        with urllib.request.urlopen(request, context=context, timeout=10) as response:  # noqa: S310
            return response.headers["Docker-Content-Digest"]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise ImageError(f"the lab registry answered {exc.code} for {repository}:{tag}") from None
    except OSError as exc:
        raise ImageError(
            f"the lab registry does not answer on 127.0.0.1:{REGISTRY_PORT} ({exc}): "
            "is the lab up (mcpdeploy lab status)?"
        ) from None


_NOT_IN_IMAGE = {"tests", "wheels", "README.md", "requirements-test.txt"}
_MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
