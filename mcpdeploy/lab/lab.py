"""``mcpdeploy lab``: Debian 12 systemd containers that rehearse production on one machine.

Everything the lab creates carries the ``mcpdeploy.lab`` label, so ``down`` removes
exactly that. Keys, the CA and the SSH client files live in a root-only directory
outside the repository (:data:`STATE_DIR`) and survive ``down`` so trust stays stable.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import ssl
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, NotFound

from mcpdeploy.engine import (
    EngineError,
    Progress,
    docker_client,
    ensure_tools,
    no_progress,
    require_free_space,
    require_root,
)
from mcpdeploy.images import CACHE, ensure_debootstrap_image
from mcpdeploy.lab.pki import LabCA, ssh_keypair
from mcpdeploy.lab.topology import (
    LABEL,
    NETWORK,
    PREFIX,
    REGISTRY_NAME,
    REGISTRY_PORT,
    SSH_USER,
    STATE_DIR,
    LabHost,
    Topology,
)

HOST_PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "sudo",
    "iproute2",
    "ca-certificates",
    "apt-transport-https",
    "gnupg",
    "procps",
    "less",
]
REGISTRY_PACKAGES = ["docker-registry"]
# docs/lab.md: --privileged fails here (SYS_RESOURCE is outside the bounding set); these
# capabilities, added one by one, let systemd, UFW and Docker run.
CAPABILITIES = [
    "SYS_ADMIN",
    "NET_ADMIN",
    "NET_RAW",
    "SYS_PTRACE",
    "SYS_CHROOT",
    "MKNOD",
    "AUDIT_WRITE",
    "SETFCAP",
    "SYS_MODULE",
    "SYS_TIME",
    "SYS_NICE",
    "IPC_LOCK",
    "NET_BIND_SERVICE",
    "DAC_READ_SEARCH",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
]
BOOT_TIMEOUT = 90


class LabError(EngineError):
    """The lab cannot be brought to the state asked for (message says why and what next)."""


class Lab:
    """The lab described by a :class:`Topology`, with its files under ``state_dir``."""

    def __init__(
        self, topo: Topology, state_dir: Path = STATE_DIR, progress: Progress = no_progress
    ) -> None:
        self.topo = topo
        self.state_dir = state_dir
        self.progress = progress

    # Paths that make up the documented interface of ``status --json``.
    @property
    def ssh_key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def ca_cert(self) -> Path:
        return self.state_dir / "ca.crt"

    @property
    def api_key_file(self) -> Path:
        return self.state_dir / "secrets" / "mcp-api-key"

    # -- up ---------------------------------------------------------------------------

    def up(self) -> None:
        """Create or repair the lab; a second call finds everything in place and changes nothing."""
        require_root()
        require_free_space(CACHE)
        ensure_tools(self.progress)
        client = docker_client(self.progress)
        self._prepare_state()
        self._check_ports_free(client)
        host_image = ensure_debootstrap_image(
            "mcpdeploy/lab-host",
            HOST_PACKAGES,
            changes=["CMD /lib/systemd/systemd"],
            progress=self.progress,
        )
        network = self._ensure_network(client)
        self._ensure_registry(client, host_image, network)
        for host in self.topo.hosts:
            self._ensure_host(client, host_image, host)
        for host in self.topo.hosts:
            self._wait_booted(client, host)
        self._wait_registry()
        self.progress("lab is up: " + ", ".join(h.name for h in self.topo.hosts))

    def _prepare_state(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state_dir.chmod(0o700)
        for sub in ("hostkeys", "certs", "secrets"):
            (self.state_dir / sub).mkdir(exist_ok=True, mode=0o700)
        self.public_key = ssh_keypair(self.ssh_key, "mcpdeploy-lab-operator")
        self.ca = LabCA(self.state_dir)
        known, config = [], []
        for host in self.topo.hosts:
            hostkey = self.state_dir / "hostkeys" / f"{host.name}_ed25519"
            public = ssh_keypair(hostkey, f"root@{host.name}")
            known.append(f"[127.0.0.1]:{host.ssh_port} {public}")
            config.append(
                f"Host {host.name}\n  HostName 127.0.0.1\n  Port {host.ssh_port}\n"
                f"  User {SSH_USER}\n  IdentityFile {self.ssh_key}\n  IdentitiesOnly yes\n"
                f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking yes\n"
                f"  HostKeyAlias [127.0.0.1]:{host.ssh_port}\n"
                # One connection per host for a burst of commands: UFW's 'limit' on SSH
                # drops the 6th new connection within 30 s from one address.
                f"  ControlMaster auto\n  ControlPath {self.state_dir}/mux-%C\n"
                "  ControlPersist 60s\n"
            )
        self.known_hosts.write_text("\n".join(known) + "\n")
        self.ssh_config.write_text("\n".join(config))

    def _check_ports_free(self, client: docker.DockerClient) -> None:
        ours = {
            int(binding["HostPort"])
            for container in client.containers.list(all=True, filters={"label": LABEL})
            for bindings in (container.attrs["HostConfig"].get("PortBindings") or {}).values()
            for binding in bindings or []
        }
        for port in self.topo.published_ports():
            if port in ours:
                continue
            with socket.socket() as probe:
                # SO_REUSEADDR: a port left in TIME_WAIT by the last lab is free; a listener is not.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    raise LabError(
                        f"127.0.0.1:{port} is already in use by another program: stop it "
                        "('ss -ltnp sport = :%d' names it) or change mcpdeploy:lab "
                        "(sshPortBase, httpsPort) in Pulumi.lab.yaml" % port
                    ) from None

    def _ensure_network(self, client: docker.DockerClient) -> str:
        subnet = str(self.topo.subnet)
        try:
            network = client.networks.get(NETWORK)
            configs = network.attrs.get("IPAM", {}).get("Config") or []
            if [c.get("Subnet") for c in configs] == [subnet]:
                return NETWORK
            raise LabError(
                f"network {NETWORK} exists with another subnet: run 'mcpdeploy lab down' first"
            )
        except NotFound:
            pass
        self.progress(f"creating network {NETWORK} ({subnet})")
        ipam = docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet=subnet, gateway=self.topo.gateway)]
        )
        try:
            client.networks.create(NETWORK, driver="bridge", ipam=ipam, labels={LABEL: "1"})
        except APIError as exc:
            raise LabError(
                f"cannot create {NETWORK} on {subnet}: {exc.explanation}; if another network "
                "uses that range, set mcpdeploy:lab.subnet in Pulumi.lab.yaml"
            ) from None
        return NETWORK

    def _extra_hosts(self) -> dict[str, str]:
        names = {h.name: h.address for h in self.topo.hosts}
        return {**names, REGISTRY_NAME: self.topo.registry_address}

    def _ensure_container(
        self,
        client: docker.DockerClient,
        name: str,
        spec: dict[str, Any],
        files: dict[str, tuple[bytes, int]],
    ) -> None:
        """Create ``name`` from ``spec`` unless an identical one exists; start it."""
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        try:
            container = client.containers.get(name)
            if container.labels.get(f"{LABEL}.spec") == digest:
                if container.status != "running":
                    self.progress(f"starting {name}")
                    container.start()
                return
            self.progress(f"replacing {name} (its definition changed)")
            container.remove(force=True)
        except NotFound:
            pass
        self.progress(f"creating {name}")
        api = client.api
        host_config = api.create_host_config(**spec["host_config"])
        if spec.get("writable_proc_sys"):
            # Docker's read-only paths less /proc/sys, so the base role really applies the
            # network namespace's sysctls (it never writes the machine's kernel.* or fs.*).
            host_config["ReadonlyPaths"] = _READONLY_PATHS
        networking = api.create_networking_config(
            {NETWORK: api.create_endpoint_config(ipv4_address=spec["address"])}
        )
        api.create_container(
            spec["image"],
            command=spec["command"],
            name=name,
            hostname=spec["hostname"],
            labels={**spec["labels"], f"{LABEL}.spec": digest},
            ports=spec["ports"],
            host_config=host_config,
            networking_config=networking,
            stop_signal=spec.get("stop_signal"),
            user=spec.get("user"),
            environment=spec.get("environment"),
        )
        if files:
            api.put_archive(name, "/", _tar(files))
        api.start(name)

    def _ensure_host(self, client: docker.DockerClient, image: str, host: LabHost) -> None:
        ports: dict[int, tuple[str, int]] = {22: ("127.0.0.1", host.ssh_port)}
        if host.role == "edge":
            ports[443] = ("127.0.0.1", self.topo.https_port)
        volumes = {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}}
        if host.role == "app":
            # Docker inside the host needs a non-overlay filesystem under /var/lib/docker.
            volume = self._ensure_volume(client, f"{host.container}-docker")
            volumes[volume] = {"bind": "/var/lib/docker", "mode": "rw"}
        spec = {
            "image": image,
            "command": ["/lib/systemd/systemd"],
            "hostname": host.name,
            "address": host.address,
            "labels": {LABEL: "1", f"{LABEL}.host": host.name, f"{LABEL}.role": host.role},
            "ports": list(ports),
            "stop_signal": "SIGRTMIN+3",
            "writable_proc_sys": True,
            "host_config": {
                "port_bindings": ports,
                "binds": volumes,
                "tmpfs": {"/run": "rw,exec", "/run/lock": "rw"},
                "cap_drop": ["ALL"],
                "cap_add": CAPABILITIES,
                "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
                "cgroupns": "host",
                "extra_hosts": self._extra_hosts(),
                "restart_policy": {"Name": "unless-stopped"},
            },
        }
        hostkey = self.state_dir / "hostkeys" / f"{host.name}_ed25519"
        files = {
            "root/.ssh/authorized_keys": ((self.public_key + "\n").encode(), 0o600),
            "etc/ssh/ssh_host_ed25519_key": (hostkey.read_bytes(), 0o600),
            "etc/ssh/ssh_host_ed25519_key.pub": (hostkey.with_suffix(".pub").read_bytes(), 0o644),
            "usr/local/share/ca-certificates/mcpdeploy-lab-ca.crt": (
                self.ca_cert.read_bytes(),
                0o644,
            ),
        }
        self._ensure_container(client, host.container, spec, files)

    def _ensure_volume(self, client: docker.DockerClient, name: str) -> str:
        try:
            client.volumes.get(name)
        except NotFound:
            client.volumes.create(name, labels={LABEL: "1"})
        return name

    def _ensure_registry(self, client: docker.DockerClient, host_image: str, network: str) -> None:
        """A Distribution registry with a lab-CA certificate, reachable by hosts and operator."""
        image = self._registry_image(client, host_image)
        cert, key = self.ca.issue(
            self.state_dir / "certs", "registry", [REGISTRY_NAME, "127.0.0.1", "localhost"]
        )
        volume = self._ensure_volume(client, f"{PREFIX}registry-data")
        # The container's root is read-only: its config and key come in through a bind
        # mount owned by the registry's fixed uid.
        conf_dir = self.state_dir / "registry"
        conf_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(conf_dir, _REGISTRY_UID, _REGISTRY_UID)
        contents = {
            "config.yml": (_REGISTRY_CONFIG.encode(), 0o644),
            "tls.crt": (cert.read_bytes(), 0o644),
            "tls.key": (key.read_bytes(), 0o600),
        }
        for name, (content, mode) in contents.items():
            target = conf_dir / name
            target.write_bytes(content)
            target.chmod(mode)
            os.chown(target, _REGISTRY_UID, _REGISTRY_UID)
        port = ("127.0.0.1", REGISTRY_PORT)
        spec = {
            "image": image,
            "command": ["/usr/bin/docker-registry", "serve", "/etc/docker/registry/config.yml"],
            "hostname": "registry",
            "address": self.topo.registry_address,
            "labels": {LABEL: "1", f"{LABEL}.role": "registry"},
            "ports": [REGISTRY_PORT],
            "user": "docker-registry",
            "host_config": {
                "port_bindings": {REGISTRY_PORT: port},
                "binds": {
                    volume: {"bind": "/var/lib/docker-registry", "mode": "rw"},
                    str(conf_dir): {"bind": "/etc/docker/registry", "mode": "ro"},
                },
                "cap_drop": ["ALL"],
                "security_opt": ["no-new-privileges"],
                "read_only": True,
                "tmpfs": {"/tmp": "rw,noexec,nosuid"},  # noqa: S108 - a tmpfs inside the container
                "restart_policy": {"Name": "unless-stopped"},
            },
            "config": hashlib.sha256(b"".join(c for c, _ in contents.values())).hexdigest(),
        }
        self._ensure_container(client, f"{PREFIX}registry", spec, {})

    def _registry_image(self, client: docker.DockerClient, host_image: str) -> str:
        tag = f"mcpdeploy/lab-registry:{host_image.rsplit(':', 1)[1]}"
        try:
            client.images.get(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
        self.progress(f"building {tag} (Debian's docker-registry)")
        dockerfile = (
            f"FROM {host_image}\n"
            # A fixed uid lets the TLS key be handed to the registry's user at create time.
            f"RUN useradd --system --uid {_REGISTRY_UID} --home-dir /var/lib/docker-registry "
            "--shell /usr/sbin/nologin docker-registry \\\n"
            " && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
            f"--no-install-recommends {' '.join(REGISTRY_PACKAGES)} \\\n"
            " && rm -rf /var/lib/apt/lists/*\n"
        )
        try:
            client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
        except docker.errors.BuildError as exc:
            raise LabError(f"building the lab registry image failed: {exc.msg}") from None
        return tag

    def _wait_booted(self, client: docker.DockerClient, host: LabHost) -> None:
        container = client.containers.get(host.container)
        deadline = time.monotonic() + BOOT_TIMEOUT
        state = ""
        while time.monotonic() < deadline:
            result = container.exec_run(["systemctl", "is-system-running"])
            state = result.output.decode().strip()
            if state in ("running", "degraded") and _ssh_banner(host.ssh_port):
                if state == "degraded":
                    failed = (
                        container.exec_run(["systemctl", "--failed", "--no-legend", "--plain"])
                        .output.decode()
                        .split()
                    )
                    self.progress(f"{host.name}: booted degraded (failed: {' '.join(failed[:4])})")
                return
            time.sleep(1)
        raise LabError(
            f"{host.name} did not finish booting in {BOOT_TIMEOUT}s (systemd says {state!r}, "
            f"SSH on 127.0.0.1:{host.ssh_port}): look at 'docker logs {host.container}' and "
            f"'mcpdeploy lab ssh {host.name} systemctl --failed'"
        )

    def _wait_registry(self) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        url = f"https://127.0.0.1:{REGISTRY_PORT}/v2/"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, context=context, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise LabError(
                        f"the lab registry does not answer at {url} ({exc}): see "
                        f"'docker logs {PREFIX}registry'"
                    ) from None
            time.sleep(1)

    # -- down ---------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Remove every container, network and volume labelled as the lab's; return their names."""
        require_root()
        client = docker_client(self.progress)
        removed = []
        for container in client.containers.list(all=True, filters={"label": LABEL}):
            self.progress(f"removing container {container.name}")
            container.remove(force=True, v=True)
            removed.append(container.name)
        for network in client.networks.list(filters={"label": LABEL}):
            self.progress(f"removing network {network.name}")
            network.remove()
            removed.append(network.name)
        for volume in client.volumes.list(filters={"label": LABEL}):
            self.progress(f"removing volume {volume.name}")
            volume.remove(force=True)
            removed.append(volume.name)
        return removed

    # -- status -------------------------------------------------------------------------

    def status(self, client: docker.DockerClient | None) -> dict[str, Any]:
        """The documented ``status --json`` document (docs/lab.md)."""
        states: dict[str, str] = {}
        if client is not None:
            for container in client.containers.list(all=True, filters={"label": LABEL}):
                states[container.name] = container.status
        hosts = [
            {
                "name": h.name,
                "role": h.role,
                "color": h.color,
                "address": h.address,
                "ssh_port": h.ssh_port,
                "ssh_user": SSH_USER,
                "state": states.get(h.container, "absent"),
            }
            for h in self.topo.hosts
        ]
        return {
            "network": {
                "name": NETWORK,
                "subnet": str(self.topo.subnet),
                "gateway": self.topo.gateway,
            },
            "hosts": hosts,
            "ssh_key": str(self.ssh_key),
            "ssh_config": str(self.ssh_config),
            "known_hosts": str(self.known_hosts),
            "url": self.topo.url,
            "ca_cert": str(self.ca_cert) if self.ca_cert.exists() else None,
            "api_key_file": str(self.api_key_file) if self.api_key_file.exists() else None,
            "registry": {
                "name": REGISTRY_NAME,
                "address": self.topo.registry_address,
                "port": REGISTRY_PORT,
                "push": f"127.0.0.1:{REGISTRY_PORT}",
                "state": states.get(f"{PREFIX}registry", "absent"),
            },
            "up": bool(states)
            and all(states.get(h.container) == "running" for h in self.topo.hosts),
        }


_REGISTRY_UID = 10500
_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sysrq-trigger"]
# Pull and push without accounts: the registry is reachable only from the lab network and
# 127.0.0.1, and TLS from the lab CA lets hosts verify it instead of using insecure mode.
_REGISTRY_CONFIG = f"""version: 0.1
log:
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: 0.0.0.0:{REGISTRY_PORT}
  tls:
    certificate: /etc/docker/registry/tls.crt
    key: /etc/docker/registry/tls.key
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
"""


def _ssh_banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            return conn.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A tar of ``{path: (content, mode)}`` owned by root, parent directories 0700/0755."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        dirs: set[str] = set()
        for path, (content, mode) in sorted(files.items()):
            parts = path.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directory = "/".join(parts[:depth])
                if directory in dirs:
                    continue
                dirs.add(directory)
                info = tarfile.TarInfo(directory)
                info.type = tarfile.DIRTYPE
                info.mode = 0o700 if directory in ("root", "root/.ssh") else 0o755
                tar.addfile(info)
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
