"""Logs role: the guide's Log Aggregation, every host's JSON logs at one collector.

rsyslog (Debian's own syslog daemon) instead of the guide's logstash container: ``imfile``
follows the service's Docker json-file logs and nginx's JSON access logs, ``omfwd`` sends
each line over TCP to the data host, queued on disk while the collector is away; the
collector (``imtcp``) writes one file per host and source under ``COLLECTED``. Each config
passes ``rsyslogd -N1`` before it goes live.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, files, systemd

from roles.base import STAGING
from roles.base.operations import install_validated

TEMPLATES = Path(__file__).parent / "templates"
COLLECTED = "/var/log/mcpdeploy"
FORWARD_CONF = "/etc/rsyslog.d/60-mcpdeploy-forward.conf"
COLLECTOR_CONF = "/etc/rsyslog.d/60-mcpdeploy-collector.conf"
# Each drop-in loads its own modules and rulesets, so it is checked on its own, with the
# work directory rsyslog.conf sets (imfile keeps its read positions there).
VALIDATE = (
    'f=$(mktemp) && printf \'global(workDirectory="/var/spool/rsyslog")\\n'
    'include(file="%s")\\n\' {path} > "$f" && rsyslogd -N1 -f "$f"; '
    'rc=$?; rm -f "$f"; exit $rc'
)


@dataclass(frozen=True)
class LogSource:
    """A file (glob allowed) whose lines are forwarded under ``tag``."""

    path: str
    tag: str


SERVICE_LOGS = LogSource("/var/lib/docker/containers/*/*-json.log", "mcp-service")
APP_NGINX_LOGS = LogSource("/var/log/nginx/mcp.access.log", "nginx-access")
EDGE_NGINX_LOGS = LogSource("/var/log/nginx/edge.access.log", "nginx-edge-access")


def _render(template: str, **data: object) -> str:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - rsyslog configuration, not HTML
    )
    return env.get_template(template).render(**data)


def forward_config(sources: Sequence[LogSource], collector: str, port: int) -> str:
    """The forwarding drop-in: follow ``sources``, send every line to ``collector:port``."""
    return _render("forward.conf.j2", sources=sources, collector=collector, port=port)


def collector_config(port: int, directory: str = COLLECTED) -> str:
    """The collector drop-in: listen on ``port``, one file per host and source."""
    return _render("collector.conf.j2", port=port, directory=directory)


def _install(name: str, content: str, dest: str) -> OperationMeta:
    staged = f"{STAGING}/{Path(dest).name}"
    files.put(name=f"Stage {name}", src=io.StringIO(content), dest=staged, mode="0644")
    return install_validated(
        name=f"Install {name} once rsyslogd -N1 accepts it",
        src=staged,
        dest=dest,
        validate=VALIDATE,
        mode="644",
    )


def _rsyslog(changed: OperationMeta) -> None:
    systemd.service(
        name="Run rsyslog now and at boot", service="rsyslog", running=True, enabled=True
    )
    systemd.service(
        name="Restart rsyslog to load the new configuration",
        service="rsyslog",
        restarted=True,
        _if=changed.did_change,
    )


@deploy("Forward logs to the collector")
def log_forwarding(*, sources: Sequence[LogSource], collector: str, port: int) -> None:
    """rsyslog following ``sources`` and sending each line to ``collector:port``."""
    apt.packages(name="Install rsyslog", packages=["rsyslog"])
    conf = _install(
        "the log forwarding drop-in", forward_config(sources, collector, port), FORWARD_CONF
    )
    _rsyslog(conf)


@deploy("Collect every host's logs")
def log_collector(*, port: int, days: int) -> None:
    """Data host: rsyslog listening on ``port``, files kept ``days`` days."""
    apt.packages(name="Install rsyslog", packages=["rsyslog"])
    files.directory(
        name=f"{COLLECTED}: collected logs, root and adm only",
        path=COLLECTED,
        user="root",
        group="adm",
        mode="0750",
    )
    files.put(
        name=f"Keep collected logs {days} days",
        src=io.StringIO(_render("logrotate.j2", directory=COLLECTED, days=days)),
        dest="/etc/logrotate.d/mcpdeploy-collected",
        mode="0644",
    )
    conf = _install("the log collector drop-in", collector_config(port), COLLECTOR_CONF)
    _rsyslog(conf)
