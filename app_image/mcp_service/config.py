"""Configuration from the environment only (secrets also from files named by `*_FILE`)."""

from __future__ import annotations

import ipaddress
import os
import re
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
# Who may call the MCP endpoint: API keys (the guide's), OAuth 2.1 access tokens (the MCP
# authorization spec), or both.
AUTH_MODES = ("apiKey", "oauth", "both")
# JWS algorithms a token may be signed with: asymmetric only. `none` and the HMAC family
# are refused: with HS*, anyone holding the issuer's public key could sign a token.
ASYMMETRIC_ALGORITHMS = (
    *(f"{family}{bits}" for family in ("RS", "PS", "ES") for bits in (256, 384, 512)),
    "EdDSA",
)
DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")
# RFC 6749 section 3.3: a scope token is one or more of these characters.
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


class ConfigError(Exception):
    """A missing or malformed environment variable, named with what is allowed."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


@dataclass(frozen=True)
class AuthConfig:
    """How callers of the MCP endpoint authenticate (``MCP_AUTH_*``).

    ``apiKey`` is the guide's static keys only. ``oauth`` and ``both`` make the service an
    OAuth 2.1 resource server: access tokens from ``issuer`` (its RFC 8414 metadata, then
    OpenID discovery, names the JWKS unless ``jwks_uri`` does), signed with one of
    ``algorithms``, whose ``aud`` holds ``audience`` (the URL clients call, RFC 9728
    section 3.3 and RFC 8707) and whose scopes include ``required_scopes``; ``exp`` and
    ``nbf`` are judged with ``clock_skew_seconds`` of slack, and the issuer's keys are kept
    ``jwks_cache_seconds``; the issuer's TLS is checked against the system store and
    ``ca_file``.
    """

    mode: str = "apiKey"
    issuer: str = ""
    jwks_uri: str = ""
    audience: str = ""
    required_scopes: tuple[str, ...] = ("mcp:tools",)
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    clock_skew_seconds: float = 60.0
    jwks_cache_seconds: float = 300.0
    # PEM certificates trusted for the issuer's TLS besides the system store (a private CA).
    ca_file: str = ""

    @property
    def metadata_url(self) -> str:
        """Where this resource's RFC 9728 metadata is (section 3.1), on the audience's host."""
        return well_known(self.audience, "oauth-protected-resource")

    @property
    def tokens(self) -> bool:
        """Whether access tokens are accepted (``oauth`` or ``both``)."""
        return self.mode != "apiKey"

    @property
    def api_keys(self) -> bool:
        """Whether API keys are accepted (``apiKey`` or ``both``)."""
        return self.mode != "oauth"


def well_known(url: str, name: str) -> str:
    """``url`` with ``/.well-known/<name>`` inserted between its host and its path, as RFC
    8414 (authorization server metadata) and RFC 9728 (resource metadata) place it."""
    scheme, rest = url.split("://", 1)
    host, _, path = rest.partition("/")
    path = "/" + path.rstrip("/") if path.strip("/") else ""
    return f"{scheme}://{host}/.well-known/{name}{path}"


def _auth_config(reader: _Reader) -> AuthConfig:
    """``MCP_AUTH_*`` validated; a token mode without issuer or audience is refused."""
    found = reader.raw("MCP_AUTH_MODE") or "apiKey"
    modes = {mode.lower(): mode for mode in AUTH_MODES}
    if found.lower() not in modes:
        raise ConfigError("MCP_AUTH_MODE", f"{found!r} is not one of {', '.join(AUTH_MODES)}")
    mode = modes[found.lower()]
    config = AuthConfig(
        mode=mode,
        issuer=reader.https_url("MCP_AUTH_ISSUER"),
        jwks_uri=reader.https_url("MCP_AUTH_JWKS_URI"),
        audience=reader.https_url("MCP_AUTH_AUDIENCE"),
        required_scopes=reader.scopes("MCP_AUTH_REQUIRED_SCOPES", AuthConfig.required_scopes),
        algorithms=reader.algorithms("MCP_AUTH_ALGORITHMS"),
        clock_skew_seconds=reader.number("MCP_AUTH_CLOCK_SKEW_SECONDS", 60.0, 0, 600),
        jwks_cache_seconds=reader.number("MCP_AUTH_JWKS_CACHE_SECONDS", 300.0, 10, 86400),
        ca_file=reader.readable_file("MCP_AUTH_CA_FILE"),
    )
    if config.tokens:
        for name, value in (
            ("MCP_AUTH_ISSUER", config.issuer),
            ("MCP_AUTH_AUDIENCE", config.audience),
        ):
            if not value:
                raise ConfigError(name, f"is required when MCP_AUTH_MODE is {mode}")
    return config


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
    auth: AuthConfig = AuthConfig()

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
            auth=_auth_config(reader),
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

    def https_url(self, name: str) -> str:
        """An absolute https:// URL with a host and no fragment (OAuth identifiers)."""
        value = self.raw(name)
        if not value:
            return value
        scheme, _, rest = value.partition("://")
        host = rest.split("/", 1)[0]
        if scheme != "https" or not host or "#" in value or any(c.isspace() for c in value):
            raise ConfigError(name, f"{value!r} is not an https:// URL with a host, no fragment")
        return value

    def readable_file(self, name: str) -> str:
        path = self.raw(name)
        if path and not os.access(path, os.R_OK):
            raise ConfigError(name, f"cannot read {path}")
        return path

    def scopes(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.raw(name)
        if not value:
            return default
        scopes = tuple(dict.fromkeys(value.replace(",", " ").split()))
        for scope in scopes:
            if not SCOPE_TOKEN.fullmatch(scope):
                raise ConfigError(name, f"{scope!r} is not an OAuth scope token (RFC 6749 3.3)")
        return scopes

    def algorithms(self, name: str) -> tuple[str, ...]:
        found = self.items(name)
        if not found:
            return DEFAULT_ALGORITHMS
        for algorithm in found:
            if algorithm not in ASYMMETRIC_ALGORITHMS:
                raise ConfigError(
                    name,
                    f"{algorithm!r} is refused: asymmetric algorithms only "
                    f"({', '.join(ASYMMETRIC_ALGORITHMS)})",
                )
        return tuple(dict.fromkeys(found))

    def identifier(self, name: str) -> str:
        value = self.raw(name)
        if value and not (value.replace("_", "a").isalnum() and not value[0].isdigit()):
            raise ConfigError(name, f"{value!r} is not a plain SQL role name")
        return value
