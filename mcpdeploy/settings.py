"""The one settings schema of a deployment.

Every stack, the lab included, keeps its settings in ``Pulumi.<stack>.yaml`` under the
``mcpdeploy:`` namespace (Pulumi's ``project:key`` convention, camelCase keys). This
module is the only place that reads them; roles, components and commands receive a
validated :class:`Settings`. Defaults are the values of the production guide
(``shared/seed``), section named beside each field.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

PROJECT = "mcpdeploy"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
STACK_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")

Color = Literal["blue", "green"]
COLORS: tuple[Color, ...] = ("blue", "green")


class SettingsError(Exception):
    """Settings that cannot be used; ``problems`` holds one (key, value, allowed) each."""

    def __init__(self, source: str, problems: list[tuple[str, str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems)} invalid setting(s)"]
        lines += [f"  {key}: {value} -> {allowed}" for key, value, allowed in problems]
        super().__init__("\n".join(lines))


class Secret(BaseModel):
    """A Pulumi ``secure:`` value: ciphertext only the Pulumi CLI can decrypt."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    secure: str = Field(min_length=1)

    def __str__(self) -> str:
        return "[secret]"


def _private_network(net: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    if not net.is_private:
        raise ValueError("must be a private (RFC 1918) network")
    return net


def _admin_network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"must be a network in CIDR notation like 203.0.113.0/24 ({exc})"
        ) from None
    # Guide, Firewall Configuration: SSH open to the world is what the baseline forbids.
    if net.prefixlen == 0:
        raise ValueError("must not be the whole internet (prefix /0); name the admins' networks")
    return net


def _webhook(value: Any) -> HttpUrl | Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, dict):
        return Secret.model_validate(value)
    try:
        url = HttpUrl(value)
    except ValidationError:
        url = None
    if url is None or url.scheme != "https":
        raise ValueError("must be an https:// URL or a Pulumi secret ({secure: ...})")
    return url


def _size(value: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]*[KMGkmg]", value):
        raise ValueError("must be a size like 500M, 10m or 1G")
    return value


def _https_origin(url: HttpUrl) -> HttpUrl:
    if url.scheme != "https" or url.path not in (None, "", "/") or url.query:
        raise ValueError("must be an https origin such as https://app.example.com")
    return url


AdminCidr = Annotated[
    ipaddress.IPv4Network | ipaddress.IPv6Network,
    PlainValidator(_admin_network),
    PlainSerializer(str),
]
Webhook = Annotated[HttpUrl | Secret, PlainValidator(_webhook), PlainSerializer(str)]
Size = Annotated[str, AfterValidator(_size)]
Origin = Annotated[HttpUrl, AfterValidator(_https_origin)]
Port = Annotated[int, Field(ge=1024, le=65535)]


class Model(BaseModel):
    """Stack YAML spelling: camelCase keys, unknown keys rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class RateLimits(Model):
    """Per API key and per client, enforced by the service (guide: Rate Limiting)."""

    per_minute: int = Field(100, gt=0)
    per_hour: int = Field(1000, gt=0)
    per_day: int = Field(10000, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> RateLimits:
        if not self.per_minute <= self.per_hour <= self.per_day:
            raise ValueError("perMinute <= perHour <= perDay must hold")
        return self

    def environment(self) -> dict[str, str]:
        """The service's variables for these limits: what roles/app writes into the
        container's environment and what `ops check` compares the running one with."""
        return {
            "MCP_RATE_LIMIT_PER_MINUTE": str(self.per_minute),
            "MCP_RATE_LIMIT_PER_HOUR": str(self.per_hour),
            "MCP_RATE_LIMIT_PER_DAY": str(self.per_day),
        }


class NginxZone(Model):
    """One ``limit_req_zone`` (guide: Nginx Configuration), keyed by client address."""

    rate_per_second: int = Field(gt=0, le=100000)
    burst: int = Field(ge=0, le=100000)
    size: Size = "10m"


class NginxRateLimits(Model):
    mcp: NginxZone = NginxZone(rate_per_second=10, burst=20)
    api: NginxZone = NginxZone(rate_per_second=100, burst=50)


class Timeouts(Model):
    """Seconds (guide: ``mcp_timeout_seconds`` and the nginx proxy timeouts)."""

    request_seconds: int = Field(30, gt=0, le=3600)
    proxy_connect_seconds: int = Field(30, gt=0, le=3600)
    proxy_send_seconds: int = Field(30, gt=0, le=3600)
    proxy_read_seconds: int = Field(30, gt=0, le=3600)


class Retention(Model):
    """Days to keep things (guide: Security Settings, Weekly Tasks, Backup Procedures)."""

    audit_log_days: int = Field(90, ge=1, le=3650)
    backup_days: int = Field(30, ge=1, le=3650)
    log_days: int = Field(7, ge=1, le=3650)


class Lab(Model):
    """The local lab's network and published ports (127.0.0.1 only)."""

    subnet: Annotated[ipaddress.IPv4Network, AfterValidator(_private_network)] = (
        ipaddress.IPv4Network("172.30.77.0/24")
    )
    https_port: Port = 8443
    ssh_port_base: Port = 2220

    @field_validator("subnet")
    @classmethod
    def _room_for_hosts(cls, net: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if net.num_addresses < 32:
            raise ValueError("needs at least 32 addresses (a /27 or larger)")
        return net


def _vpc_network(net: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    net = _private_network(net)
    # Six subnets (public + private in up to three AZs) of at least /28, AWS's smallest.
    if not 16 <= net.prefixlen <= 24:
        raise ValueError("must be between /16 and /24 (room for six subnets of /28 or more)")
    return net


InstanceType = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")]
SshPublicKey = Annotated[
    str,
    Field(pattern=r"^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/]+=*( .*)?$"),
]
JumpHost = Annotated[str, Field(pattern=r"^([a-z_][a-z0-9_-]*@)?[A-Za-z0-9.-]+(:[0-9]+)?$")]
DnsName = Annotated[
    str,
    Field(max_length=253, pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"),
]


class AwsDatabase(Model):
    """RDS PostgreSQL (guide: Database Preparation / Security, Backup Procedures)."""

    instance_class: Annotated[str, Field(pattern=r"^db\.[a-z0-9-]+\.[a-z0-9]+$")] = "db.t4g.medium"
    engine_version: Annotated[str, Field(pattern=r"^[1-9][0-9](\.[0-9]+)?$")] = "16"
    multi_az: bool = True
    allocated_storage_gb: int = Field(20, ge=20, le=65536)
    backup_retention_days: int = Field(7, ge=7, le=35)
    deletion_protection: bool = True

    @field_validator("engine_version")
    @classmethod
    def _supported_major(cls, version: str) -> str:
        # Older majors are at or past the end of RDS standard support.
        if int(version.split(".")[0]) < 15:
            raise ValueError("PostgreSQL 15 or newer (16 is the default)")
        return version


class AwsCache(Model):
    """ElastiCache Redis: one primary plus replicas; failover needs two nodes or more."""

    node_type: Annotated[str, Field(pattern=r"^cache\.[a-z0-9-]+\.[a-z0-9]+$")] = "cache.t4g.small"
    nodes: int = Field(2, ge=1, le=6)
    engine_version: Annotated[str, Field(pattern=r"^[6-9]\.[0-9]+$")] = "7.1"


class Aws(Model):
    """The AWS target (``infra/``). The region is Pulumi's own ``aws:region`` key."""

    vpc_cidr: Annotated[ipaddress.IPv4Network, AfterValidator(_vpc_network)] = (
        ipaddress.IPv4Network("10.40.0.0/16")
    )
    availability_zones: int = Field(2, ge=2, le=3)
    nat_gateways: Literal["perAz", "one"] = "perAz"
    hosted_zone: DnsName | None = None
    app_instance_type: InstanceType = "t3.small"
    app_root_volume_gb: int = Field(20, ge=8, le=1024)
    ssh_public_key: SshPublicKey | None = None
    access: Literal["ssm", "bastion"] = "ssm"
    bastion: JumpHost | None = None
    canary_weight: int = Field(0, ge=0, le=100)
    deregistration_delay_seconds: int = Field(30, ge=0, le=3600)
    ecr_keep_images: int = Field(20, ge=1, le=1000)
    alert_email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[a-z]{2,63}$")] | None = None
    database: AwsDatabase = AwsDatabase()
    cache: AwsCache = AwsCache()

    @model_validator(mode="after")
    def _bastion_named(self) -> Aws:
        if self.access == "bastion" and self.bastion is None:
            raise ValueError("access: bastion needs bastion: [user@]host[:port] (the jump host)")
        if self.access == "ssm" and self.bastion is not None:
            raise ValueError("bastion is only used with access: bastion (SSM needs no jump host)")
        return self


def _bridge_address(value: ipaddress.IPv4Interface) -> ipaddress.IPv4Interface:
    if not value.network.is_private or value.ip == value.network.network_address:
        raise ValueError("must be a host address in a private network, like 172.17.0.1/16")
    if value.network.prefixlen > 28:
        raise ValueError("needs a /28 or larger network (one address per container)")
    return value


class App(Model):
    """The service container on each app host (``roles/docker``, ``roles/app``)."""

    # Uvicorn worker processes (MCP_WORKERS); the guide's hosts have 2 cores.
    workers: int = Field(2, ge=1, le=64)
    # PostgreSQL connections per worker (MCP_DB_POOL_SIZE). Both colors run at once, so the
    # budget is this x workers x every app host of both colors; preflight checks it against
    # the server's max_connections. The guide's 25 per host would fill the default 100
    # exactly.
    db_pool_size: int = Field(20, ge=1, le=500)
    # Docker --memory (swap equal: none); a leak ends in an OOM restart, not a swapping host.
    memory: Size = "1g"
    # Docker --pids-limit: a fork bomb or thread leak stops at this many tasks.
    pids_limit: int = Field(256, ge=32, le=32768)
    # Images of the service kept on each host for a rollback without a pull.
    keep_images: int = Field(3, ge=1, le=50)
    # How long a deploy waits for /health/mcp = 200 before it fails.
    readiness_timeout_seconds: int = Field(120, ge=10, le=1800)
    # docker stop's grace period; the service drains for 5 s less (MCP_SHUTDOWN_TIMEOUT_SECONDS).
    stop_timeout_seconds: int = Field(30, ge=10, le=600)
    # The SSE stream's keep-alive period (MCP_STREAM_KEEPALIVE_SECONDS): below the proxies'
    # read timeout (timeouts.proxyReadSeconds), or nginx ends an open stream as silent.
    stream_keepalive_seconds: int = Field(15, ge=1, le=600)
    # How long a worker keeps the operator's switches (kill switch, cache on/off, TTL and
    # flush generation) before it reads them again (MCP_SETTINGS_CACHE_SECONDS): `ops
    # disable|enable|cache` reach every worker within this. At most the guide's 5 s.
    settings_cache_seconds: float = Field(5.0, ge=0, le=5)
    # Docker's json-file log rotation (guide: Log Aggregation, max-size 10m, max-file 3).
    log_max_size: Size = "10m"
    log_max_files: int = Field(3, ge=1, le=100)
    # docker0's address: containers see nginx's connections come from it (MCP_TRUSTED_PROXIES).
    docker_bridge: Annotated[ipaddress.IPv4Interface, AfterValidator(_bridge_address)] = (
        ipaddress.IPv4Interface("172.17.0.1/16")
    )


ImageRef = Annotated[
    str, Field(pattern=r"^[a-z0-9][a-z0-9._:/-]*(:[\w.-]{1,128})?(@sha256:[0-9a-f]{64})?$")
]


class Release(Model):
    """How ``mcpdeploy release`` judges and guards a release (docs/releases.md)."""

    # After the switch: how long the new color is watched before the release is kept.
    watch_seconds: int = Field(60, ge=0, le=3600)
    # Watch thresholds, over the requests the edge served from the new color in the window.
    max_error_percent: float = Field(1.0, ge=0, le=100)
    max_p99_seconds: float = Field(2.0, gt=0, le=300)
    # Long-lived streams on the old color get this long to finish after a switch; then that
    # color is asked to end them cleanly, and the edge cuts what still remains (gates.drain).
    drain_timeout_seconds: int = Field(30, ge=1, le=3600)
    # A release lock older than this is stale: its holder is reported and it can be broken.
    lock_timeout_minutes: int = Field(60, ge=5, le=1440)


class DataPostgres(Model):
    """PostgreSQL on a self-hosted data host (``roles/data``; RDS on AWS)."""

    # Both app colors' pools (app.dbPoolSize x app.workers per app host) plus migrations and
    # admin sessions.
    max_connections: int = Field(100, ge=20, le=5000)
    # PostgreSQL's own guidance: about a quarter of the host's memory.
    shared_buffers_mb: int = Field(256, ge=16, le=262144)


class DataRedis(Model):
    """Redis on a self-hosted data host (``roles/data``; ElastiCache on AWS)."""

    max_memory_mb: int = Field(256, ge=16, le=1048576)
    # volatile-*: only keys with a TTL (cache entries, rate-limit windows) may be evicted,
    # never the cache generation key (docs/hardening.md, Data role).
    max_memory_policy: Literal["volatile-lru", "volatile-lfu", "noeviction"] = "volatile-lru"


class Data(Model):
    """The data host: PostgreSQL and Redis for the app hosts."""

    postgres: DataPostgres = DataPostgres()
    redis: DataRedis = DataRedis()


# The service's latency histogram buckets (app_image/mcp_service/metrics.py): a slow-response
# threshold can only be read from the metrics at one of these bounds.
LATENCY_BUCKETS_SECONDS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Maintenance(Model):
    """The maintenance timers and their alert thresholds (``roles/maintenance``)."""

    # Guide, Weekly Tasks: check certificate expiration; alert this many days ahead.
    certificate_warning_days: int = Field(21, ge=1, le=365)
    # Guide, Daily Tasks: check disk space; alert above this use of any filesystem.
    disk_alert_percent: int = Field(85, ge=1, le=99)
    # Guide, Performance Monitoring: error rate above 5 % over a window.
    error_rate_alert_percent: float = Field(5.0, gt=0, le=100)
    # Guide, Performance Monitoring: any response slower than 5 s over a window.
    slow_response_seconds: float = 5.0
    performance_window_minutes: int = Field(5, ge=1, le=60)
    # Self-hosted: copy each backup to this S3 bucket (boto3's credential chain on the host).
    backup_bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")] | None = (
        None
    )
    # The lab has no webhook service: run a receiver on the data host (docs/maintenance.md).
    alert_receiver: bool = False
    alert_receiver_port: Port = 9443
    # Guide, Log Aggregation: every host's JSON logs to a collector on the data host.
    log_collector: bool = False
    log_collector_port: Port = 6514

    def collector_ports(self) -> dict[int, str]:
        """The data host's ports every edge and app host sends to: {port: what}."""
        ports = {self.alert_receiver_port: "alerts"} if self.alert_receiver else {}
        if self.log_collector:
            ports[self.log_collector_port] = "logs"
        return ports

    @model_validator(mode="after")
    def _distinct_ports(self) -> Maintenance:
        both = self.alert_receiver and self.log_collector
        if both and self.alert_receiver_port == self.log_collector_port:
            raise ValueError("alertReceiverPort and logCollectorPort must differ")
        return self

    @field_validator("slow_response_seconds")
    @classmethod
    def _histogram_bound(cls, seconds: float) -> float:
        if seconds not in LATENCY_BUCKETS_SECONDS:
            raise ValueError(
                f"must be a bound of the service's latency histogram: {LATENCY_BUCKETS_SECONDS}"
            )
        return seconds


class Settings(Model):
    """Everything a deployment is, for one stack."""

    domain: Annotated[
        str,
        Field(max_length=253, pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"),
    ]
    active_color: Color
    image: ImageRef
    # What each color runs, written by `mcpdeploy release`; a color without one runs `image`.
    blue_image: ImageRef | None = None
    green_image: ImageRef | None = None
    app_hosts_per_color: int = Field(1, ge=1, le=20)
    admin_cidrs: list[AdminCidr] = Field(min_length=1)
    deploy_user: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = "deploy"
    rate_limits: RateLimits = RateLimits()
    nginx_rate_limits: NginxRateLimits = NginxRateLimits()
    cors_origins: list[Origin] = []
    max_request_bytes: int = Field(1048576, ge=1024, le=104857600)
    timeouts: Timeouts = Timeouts()
    retention: Retention = Retention()
    alert_webhook: Webhook | None = None
    # Guide, API Key Rotation (done with no 401): how long `ops rotate-key` keeps the old key.
    api_key_grace_hours: float = Field(24.0, gt=0, le=720)
    journald_max_use: Size = "500M"
    lab: Lab = Lab()
    aws: Aws = Aws()
    app: App = App()
    data: Data = Data()
    maintenance: Maintenance = Maintenance()
    release: Release = Release()

    def image_for(self, color: str) -> str:
        """The image ``color``'s hosts run: its release, or the stack's ``image``."""
        if color not in COLORS:
            raise ValueError(f"unknown color {color!r}")
        return getattr(self, f"{color}_image") or self.image

    @field_validator("app")
    @classmethod
    def _keepalive_within_read_timeout(cls, app: App, info: ValidationInfo) -> App:
        timeouts = info.data.get("timeouts")
        if timeouts and app.stream_keepalive_seconds >= timeouts.proxy_read_seconds:
            raise ValueError(
                f"streamKeepaliveSeconds ({app.stream_keepalive_seconds}) must be below"
                f" timeouts.proxyReadSeconds ({timeouts.proxy_read_seconds}): nginx ends a"
                " stream that stays silent that long"
            )
        return app

    @field_validator("aws")
    @classmethod
    def _domain_in_hosted_zone(cls, aws: Aws, info: ValidationInfo) -> Aws:
        zone, domain = aws.hosted_zone, info.data.get("domain")
        # ACM's DNS validation records can only be written into the zone that owns the name.
        if zone and domain and not (domain == zone or domain.endswith("." + zone)):
            raise ValueError(f"hostedZone {zone!r} must be the domain {domain!r} or a parent of it")
        return aws

    def masked(self) -> dict[str, Any]:
        """The effective settings as stack YAML would spell them, secrets masked."""
        data = self.model_dump(mode="json", by_alias=True)
        return data


def project_root(start: Path | None = None) -> Path:
    """The directory holding ``Pulumi.yaml``, searched upward from ``start`` (the cwd) as
    Pulumi does; the checkout this package runs from when there is none."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / "Pulumi.yaml").is_file():
            return directory
    return PACKAGE_ROOT


def stack_file(stack: str, root: Path | None = None) -> Path:
    """Path of the stack's config file; refuses names Pulumi would refuse."""
    if not STACK_NAME.fullmatch(stack):
        raise SettingsError(
            f"stack {stack!r}",
            [("stack", repr(stack), "lowercase letters, digits and '-', starting with a letter")],
        )
    return (root or project_root()) / f"Pulumi.{stack}.yaml"


def load_settings(stack: str, root: Path | None = None) -> Settings:
    """Read and validate ``Pulumi.<stack>.yaml``; raise :class:`SettingsError` on any problem."""
    path = stack_file(stack, root)
    source = path.name
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SettingsError(
            source, [("file", str(path), "create it (see Pulumi.prod.yaml) or pick a stack")]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        raise SettingsError(
            source, [("yaml", where, f"valid YAML ({exc.__class__.__name__})")]
        ) from None
    return parse_settings(document, source)


def parse_settings(document: Any, source: str = "settings") -> Settings:
    """Validate a parsed stack document (``{"config": {"mcpdeploy:key": ...}}``)."""
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise SettingsError(source, [("config", _show(document), "a mapping under 'config:'")])
    prefix = f"{PROJECT}:"
    ours = {k[len(prefix) :]: v for k, v in document["config"].items() if k.startswith(prefix)}
    try:
        return Settings.model_validate(ours)
    except ValidationError as exc:
        raise SettingsError(source, [_problem(err) for err in exc.errors()]) from None


def _problem(err: Any) -> tuple[str, str, str]:
    loc = [str(p) for p in err["loc"]]
    key = PROJECT + ":" + ".".join(loc) if loc else PROJECT
    if err["type"] == "missing":
        return key, "(missing)", "required"
    if err["type"] == "extra_forbidden":
        return key, _show(err["input"]), "not a known setting (see docs/settings.md)"
    message = err["msg"].removeprefix("Value error, ")
    return key, _show(err["input"]), message


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
