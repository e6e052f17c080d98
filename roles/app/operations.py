"""Facts and operations the app role needs that pyinfra does not ship."""

from __future__ import annotations

import shlex
from collections.abc import Iterator

from pyinfra import host
from pyinfra.api import FactBase, operation

# Print the HTTP status of a local URL (0 when nothing answers).
_STATUS = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
        print(response.status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except OSError:
    print(0)
"""

# Poll a local URL until it answers 200; on timeout say where to look next, and exit 1.
_WAIT = """
import sys, time, urllib.error, urllib.request
host, url, timeout, unit, container = sys.argv[1:6]
deadline, last = time.monotonic() + float(timeout), "no answer"
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            if response.status == 200:
                sys.exit(0)
            last = f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        last = f"HTTP {exc.code} {exc.read(300).decode(errors='replace')}"
    except OSError as exc:
        last = str(exc)
    time.sleep(0.5)
sys.exit(
    f"{host}: {url} did not answer 200 within {timeout} s; last answer: {last}. "
    f"Look at: journalctl -u {unit} -n 50 --no-pager; docker logs --tail 50 {container}"
)
"""


class Readiness(FactBase[int | None]):
    """HTTP status of ``http://127.0.0.1:<port><path>`` on the host (0: no answer)."""

    def requires_command(self, port: int, path: str) -> str:
        """The probe is a Python one-liner."""
        return "python3"

    def command(self, port: int, path: str) -> str:
        """GET the URL once, 5 s at most."""
        return f"python3 -c {shlex.quote(_STATUS)} http://127.0.0.1:{port}{shlex.quote(path)}"

    def process(self, output: list[str]) -> int | None:
        """The status code."""
        return int(output[0]) if output and output[0].strip().isdigit() else None


class ServiceImages(FactBase[list[dict[str, str]]]):
    """Local images of ``repository``, newest first: ``[{"id", "digest", "tag"}, ...]``."""

    default = list

    def requires_command(self, repository: str) -> str:
        """Docker lists the images."""
        return "docker"

    def command(self, repository: str) -> str:
        """``docker image ls`` sorts newest first."""
        return (
            "docker image ls --digests --no-trunc --format '{{.ID}} {{.Digest}} {{.Tag}}' "
            f"{shlex.quote(repository)}"
        )

    def process(self, output: list[str]) -> list[dict[str, str]]:
        """One image per line."""
        images = []
        for line in output:
            parts = line.split()
            if len(parts) == 3:
                images.append({"id": parts[0], "digest": parts[1], "tag": parts[2]})
        return images


def wait_ready_command(
    *, host_name: str, port: int, path: str, timeout_seconds: int, unit: str, container: str
) -> str:
    """A command that waits for ``path`` = 200 or fails naming where to look."""
    arguments = [host_name, f"http://127.0.0.1:{port}{path}", str(timeout_seconds), unit, container]
    return f"python3 -c {shlex.quote(_WAIT)} " + " ".join(shlex.quote(a) for a in arguments)


def _is(reference: str, repository: str, image: dict[str, str]) -> bool:
    digest = reference.partition("@")[2]
    if digest:
        return image["digest"] == digest
    return reference == f"{repository}:{image['tag']}"


@operation()
def prune_images(repository: str, keep: int, pinned: list[str]) -> Iterator[str]:
    """Keep at most ``keep`` images of ``repository`` (or as many as are pinned): the
    ``pinned`` ones (the image the host runs and the rollback target) always stay, then the
    newest others. Facts are read before this deploy pulls anything, so pinned images not
    on the host yet take their slots in advance."""
    images = host.get_fact(ServiceImages, repository=repository)
    present = [p for p in pinned if any(_is(p, repository, image) for image in images)]
    slots = keep - (len(set(pinned)) - len(set(present)))
    kept: list[str] = [
        image["id"] for image in images if any(_is(p, repository, image) for p in pinned)
    ]
    for image in images:
        if len(set(kept)) >= slots:
            break
        kept.append(image["id"])
    doomed = sorted({image["id"] for image in images} - set(kept))
    if not doomed:
        host.noop(f"at most {keep} images of {repository} on the host")
        return
    yield "docker image rm --force " + " ".join(doomed)
