"""What the app hosts are doing right now, asked over SSH (the lab and self-hosted)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass


class FleetError(Exception):
    """A host could not be asked; the message says which and why."""


# Run on the edge: each URL's /health/mcp as the edge's nginx reaches it (its upstream CA).
_PROBE = """
import json, ssl, sys, urllib.request
name, ca, urls = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False  # the app certificates name the domain; we dial addresses
out = {}
for url in urls:
    request = urllib.request.Request(url, headers={"Host": name})
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            out[url] = response.status
    except urllib.error.HTTPError as error:
        out[url] = error.code
    except OSError as error:
        out[url] = str(error)
print(json.dumps(out))
"""


@dataclass(frozen=True)
class AppHost:
    name: str
    color: str
    address: str


def health_from_edge(
    ssh: list[str],
    edge: str,
    domain: str,
    hosts: list[AppHost],
    ca: str = "/etc/nginx/tls/upstream-ca.crt",
) -> dict[str, int | str]:
    """``/health/mcp`` of each host as ``edge`` reaches it: {host name: status or error}.

    ``ssh`` is the ssh command up to the host name (e.g. ``["ssh", "-F", config]``).
    """
    urls = {f"https://{h.address}/health/mcp": h.name for h in hosts}
    result = subprocess.run(
        [*ssh, edge, "python3", "-c", _quote(_PROBE), domain, ca, _quote(json.dumps(list(urls)))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise FleetError(f"cannot run the health probe on the edge: {result.stderr.strip()}")
    return {urls[url]: status for url, status in json.loads(result.stdout).items()}


def _quote(text: str) -> str:
    # ssh joins its arguments into one remote shell command.
    return "'" + text.replace("'", "'\"'\"'") + "'"


def running_image(ssh: list[str], host: str, container: str = "mcp-service") -> str | None:
    """The image reference ``container`` runs on ``host`` (``ssh``: the ssh command up to the
    host name), or None when it is not running."""
    result = subprocess.run(
        [*ssh, host, "docker", "inspect", "--format", "'{{.Config.Image}}'", container],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None
