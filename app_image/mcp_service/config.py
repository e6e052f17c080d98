"""Configuration from the environment only (secrets also from files named by `*_FILE`)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SECRET_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "SECRET_KEY_BASE",
    "MCP_API_KEY",
    "MCP_API_KEY_PREVIOUS",
    "MCP_METRICS_TOKEN",
)
# The Host values a request may carry when MCP_ALLOWED_HOSTS is unset: loopback only,
# bare (a proxy's `Host $host`) and with any port (a caller on the published port).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
DEFAULT_ALLOWED_HOSTS = (*LOOPBACK_HOSTS, *(f"{name}:*" for name in LOOPBACK_HOSTS))
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


class ConfigError(Exception):
    """A missing or malformed environment variable, named with what is allowed."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment, validated."""

    database_url: str = ""
    redis_url: str = ""
    secret_key_base: str = ""
    # Inside the container the service must accept the published port on every interface;
    # the host publishes it on 127.0.0.1 only.
    host: str = "0.0.0.0"  # noqa: S104
    port: int = 3000
    workers: int = 1
    db_pool_size: int = 25
    db_timeout: float = 5.0
    mcp_enabled: bool = True
    rate_limit_enabled: bool = True
    rate_limit_by_ip: bool = True
    rate_limit_by_key: bool = True
    rate_limit_per_minute: int = 100
    rate_limit_per_hour: int = 1000
    rate_limit_per_day: int = 10000
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    cors_origins: tuple[str, ...] = ()
    # DNS rebinding protection on the MCP endpoint, always on: a Host outside
    # `allowed_hosts` gets 421, an Origin outside `allowed_origins` and `cors_origins` 403;
    # a request without Origin (not a browser) passes. `allowed_origins` are origins that
    # may call without CORS (the service's own, e.g. https://<domain>).
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    allowed_origins: tuple[str, ...] = ()
    max_request_bytes: int = 1024 * 1024
    request_timeout: float = 30.0
    shutdown_timeout: int = 25
    settings_cache_seconds: float = 5.0
    health_timeout: float = 2.0
    audit_retention_days: int = 90
    runtime_role: str = ""
    api_key: str = ""
    api_key_previous: str = ""
    api_key_previous_expires_hours: float = 24.0
    metrics_token: str = ""
    log_level: str = "INFO"
    # The SSE stream on GET /api/v1/mcp/ (mcp_service.streams): keep-alive period (below
    # every proxy's read timeout), reconnection hint, and where its close flag lives.
    stream_keepalive_seconds: float = 15.0
    stream_retry_ms: int = 3000
    stream_state_dir: str = "/tmp/mcp-streams"  # noqa: S108 - the container's private tmpfs

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, required: Iterable[str] = ("DATABASE_URL",)
    ) -> Settings:
        """Read and validate settings; raise ConfigError naming the first bad variable."""
        reader = _Reader(os.environ if env is None else env)
        for name in required:
            reader.require(name)
        secret = reader.secret("SECRET_KEY_BASE")
        if secret and len(secret) < 32:
            raise ConfigError("SECRET_KEY_BASE", "must be at least 32 characters")
        return cls(
            database_url=reader.url("DATABASE_URL", ("postgres", "postgresql")),
            redis_url=reader.url("REDIS_URL", ("redis", "rediss", "unix")),
            secret_key_base=secret,
            host=reader.text("MCP_HOST", "0.0.0.0"),  # noqa: S104
            port=reader.integer("MCP_PORT", 3000, 1, 65535),
            workers=reader.integer("MCP_WORKERS", 1, 1, 64),
            db_pool_size=reader.integer("MCP_DB_POOL_SIZE", 25, 1, 500),
            db_timeout=reader.number("MCP_DB_TIMEOUT_SECONDS", 5.0, 0.1, 300),
            mcp_enabled=reader.boolean("MCP_ENABLED", True),
            rate_limit_enabled=reader.boolean("MCP_RATE_LIMIT_ENABLED", True),
            rate_limit_by_ip=reader.boolean("MCP_RATE_LIMIT_BY_IP", True),
            rate_limit_by_key=reader.boolean("MCP_RATE_LIMIT_BY_KEY", True),
            rate_limit_per_minute=reader.integer("MCP_RATE_LIMIT_PER_MINUTE", 100, 1, 10**9),
            rate_limit_per_hour=reader.integer("MCP_RATE_LIMIT_PER_HOUR", 1000, 1, 10**9),
            rate_limit_per_day=reader.integer("MCP_RATE_LIMIT_PER_DAY", 10000, 1, 10**9),
            trusted_proxies=reader.networks("MCP_TRUSTED_PROXIES", "127.0.0.1/32"),
            cors_origins=reader.origins("MCP_CORS_ORIGINS"),
            allowed_hosts=reader.items("MCP_ALLOWED_HOSTS") or DEFAULT_ALLOWED_HOSTS,
            allowed_origins=reader.origins("MCP_ALLOWED_ORIGINS"),
            max_request_bytes=reader.integer("MCP_MAX_REQUEST_SIZE", 1024 * 1024, 1024, 64 << 20),
            request_timeout=reader.number("MCP_TIMEOUT_SECONDS", 30.0, 0.1, 3600),
            shutdown_timeout=reader.integer("MCP_SHUTDOWN_TIMEOUT_SECONDS", 25, 0, 3600),
            settings_cache_seconds=reader.number("MCP_SETTINGS_CACHE_SECONDS", 5.0, 0.0, 5.0),
            health_timeout=reader.number("MCP_HEALTH_TIMEOUT_SECONDS", 2.0, 0.1, 30),
            audit_retention_days=reader.integer("MCP_AUDIT_LOG_RETENTION_DAYS", 90, 1, 3650),
            runtime_role=reader.identifier("MCP_RUNTIME_ROLE"),
            api_key=reader.secret("MCP_API_KEY"),
            api_key_previous=reader.secret("MCP_API_KEY_PREVIOUS"),
            api_key_previous_expires_hours=reader.number(
                "MCP_API_KEY_PREVIOUS_EXPIRES_HOURS", 24.0, 0.0, 24 * 365
            ),
            metrics_token=reader.secret("MCP_METRICS_TOKEN"),
            log_level=reader.choice("MCP_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            stream_keepalive_seconds=reader.number("MCP_STREAM_KEEPALIVE_SECONDS", 15.0, 0.5, 600),
            stream_retry_ms=reader.integer("MCP_STREAM_RETRY_MS", 3000, 100, 600000),
            stream_state_dir=reader.text("MCP_STREAM_STATE_DIR", "/tmp/mcp-streams"),  # noqa: S108
        )


class _Reader:
    """Typed access to an environment mapping that names the variable in every error."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str:
        value = self.env.get(name, "").strip()
        if name in SECRET_VARIABLES:
            path = self.env.get(f"{name}_FILE", "").strip()
            if path:
                if value:
                    raise ConfigError(name, f"set either {name} or {name}_FILE, not both")
                try:
                    with open(path, encoding="utf-8") as handle:
                        value = handle.read().strip()
                except OSError as exc:
                    raise ConfigError(
                        f"{name}_FILE", f"cannot read {path}: {exc.strerror}"
                    ) from None
        return value

    def require(self, name: str) -> None:
        if not self.raw(name):
            hint = f" (or {name}_FILE)" if name in SECRET_VARIABLES else ""
            raise ConfigError(name, f"is required{hint}")

    def text(self, name: str, default: str = "") -> str:
        return self.raw(name) or default

    def secret(self, name: str) -> str:
        return self.raw(name)

    def url(self, name: str, schemes: tuple[str, ...]) -> str:
        value = self.raw(name)
        if value and value.split("://", 1)[0] not in schemes:
            allowed = ", ".join(f"{s}://" for s in schemes)
            # Never echo the value: URLs carry passwords.
            raise ConfigError(name, f"must start with one of {allowed}")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.raw(name)
        if not value:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(name, f"{value!r} is not an integer") from None
        if not low <= number <= high:
            raise ConfigError(name, f"{number} is outside {low}..{high}")
        return number

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self.raw(name)
        if not value:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(name, f"{value!r} is not a number") from None
        if not low <= number <= high:
            raise ConfigError(name, f"{number} is outside {low}..{high}")
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name).lower()
        if not value:
            return default
        if value in TRUE_WORDS:
            return True
        if value in FALSE_WORDS:
            return False
        raise ConfigError(name, f"{value!r} is not one of true/false/1/0/yes/no/on/off")

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.raw(name).upper() or default
        if value not in allowed:
            raise ConfigError(name, f"{value!r} is not one of {', '.join(allowed)}")
        return value

    def items(self, name: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.raw(name).split(",") if part.strip())

    def origins(self, name: str) -> tuple[str, ...]:
        origins = self.items(name)
        for origin in origins:
            if origin == "*" or not origin.startswith(("https://", "http://")):
                raise ConfigError(name, f"{origin!r} is not an http(s) origin (no wildcards)")
        return origins

    def networks(
        self, name: str, default: str
    ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        parts = self.items(name) if self.raw(name) else (default,)
        try:
            return tuple(ipaddress.ip_network(part, strict=False) for part in parts)
        except ValueError as exc:
            raise ConfigError(name, f"{exc} (expected comma-separated CIDRs)") from None

    def identifier(self, name: str) -> str:
        value = self.raw(name)
        if value and not (value.replace("_", "a").isalnum() and not value[0].isdigit()):
            raise ConfigError(name, f"{value!r} is not a plain SQL role name")
        return value
