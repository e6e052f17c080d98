"""The stack's hosts as the operator reaches them over SSH (the lab and self-hosted), and
what they are doing right now.

:class:`Fleet` is the one place commands reach hosts: ``release``, ``switch``, ``status``
and ``ops`` all go through :meth:`Fleet.run`.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass

from mcpdeploy.lab import Lab, topology
from mcpdeploy.settings import load_settings


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


@dataclass(frozen=True)
class FleetHost:
    """One host: its inventory name, role (edge, app, data), color (app hosts) and address."""

    name: str
    role: str
    color: str | None
    address: str


@dataclass(frozen=True)
class Fleet:
    """A stack's hosts and the ssh command that reaches them (``ssh -F <config>``).

    ``sudo``: the login user is not root (AWS: the AMI's ``admin``), so every command runs
    through ``sudo -n``."""

    stack: str
    ssh: tuple[str, ...]
    hosts: tuple[FleetHost, ...]
    inventory: str
    sudo: bool = False

    def role(self, role: str) -> list[FleetHost]:
        """The hosts of ``role``, in inventory order."""
        return [h for h in self.hosts if h.role == role]

    def app_hosts(self, color: str | None = None) -> list[AppHost]:
        """The app hosts, of ``color`` only when given."""
        return [
            AppHost(h.name, h.color or "", h.address)
            for h in self.role("app")
            if color is None or h.color == color
        ]

    def run(
        self,
        host: str,
        command: str | list[str],
        timeout: float = 120,
        check: bool = True,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` (a shell string, or argv that is quoted here) on ``host``.

        ``stdin`` is sent to the command's standard input: the way to pass a secret, which
        must never be on a command line. With ``check`` a non-zero exit raises
        :class:`FleetError` naming the host, the command and the last lines it printed.
        """
        remote = command if isinstance(command, str) else shlex.join(command)
        if self.sudo:
            remote = f"sudo -n sh -c {shlex.quote(remote)}"
        try:
            result = subprocess.run(
                [*self.ssh, host, remote],
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise FleetError(f"{host}: {remote!r} did not finish within {timeout:.0f} s") from None
        if check and result.returncode != 0:
            tail = " / ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            raise FleetError(f"{host}: {remote!r} failed ({result.returncode}): {tail}")
        return result

    def health_from_edge(
        self, domain: str, hosts: list[AppHost], ca: str = "/etc/nginx/tls/upstream-ca.crt"
    ) -> dict[str, int | str]:
        """``/health/mcp`` of each of ``hosts`` as the first edge host reaches it (its
        upstream CA, the service's domain as Host): {host name: status or error}."""
        edges = self.role("edge")
        if not edges:
            raise FleetError(f"{self.inventory} has no edge host to probe from")
        urls = {f"https://{h.address}/health/mcp": h.name for h in hosts}
        result = self.run(
            edges[0].name,
            ["python3", "-c", _PROBE, domain, ca, json.dumps(list(urls))],
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise FleetError(f"cannot run the health probe on the edge: {result.stderr.strip()}")
        return {urls[url]: status for url, status in json.loads(result.stdout).items()}

    def running_image(self, host: str, container: str = "mcp-service") -> str | None:
        """The image reference ``container`` runs on ``host``; None when it is not running
        or the host cannot be asked."""
        try:
            result = self.run(
                host,
                ["docker", "inspect", "--format", "{{.Config.Image}}", container],
                timeout=60,
                check=False,
            )
        except FleetError:
            return None
        return (result.stdout.strip() or None) if result.returncode == 0 else None


def lab_fleet() -> Fleet:
    """The lab's hosts (``Pulumi.lab.yaml``), reached with the lab's ssh config."""
    lab = Lab(topology(load_settings("lab")))
    return Fleet(
        stack="lab",
        ssh=("ssh", "-F", str(lab.ssh_config)),
        hosts=tuple(FleetHost(h.name, h.role, h.color, h.address) for h in lab.topo.hosts),
        inventory="hosts/lab.py",
    )
