"""Secrets: generated once by Pulumi, kept in AWS Secrets Manager."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

# name → (length, what reads it). Letters and digits only: every consumer (URLs, Redis
# AUTH, shell environment files) takes them unquoted.
GENERATED: dict[str, tuple[int, str]] = {
    "mcp-api-key": (64, "MCP_API_KEY: clients authenticate with it (guide: API Key Management)"),
    "secret-key-base": (128, "SECRET_KEY_BASE of the service"),
    "redis-auth-token": (64, "ElastiCache AUTH token (REDIS_URL)"),
    "db-owner-password": (48, "PostgreSQL role railspress_owner: runs migrations"),
    "db-runtime-password": (48, "PostgreSQL role railspress_mcp: the service's DML-only login"),
    "metrics-token": (
        64,
        "MCP_METRICS_TOKEN: the app hosts' performance check reads /api/v1/mcp/metrics with it",
    ),
}


@dataclass(frozen=True, kw_only=True)
class SecretsArgs:
    """``prefix`` is ``/<project>/<stack>``; each secret is ``<prefix>/<name>``."""

    prefix: str
    tags: dict[str, str]


class Secrets(pulumi.ComponentResource):
    """One Secrets Manager secret per entry of :data:`GENERATED`, its value a
    ``random.RandomPassword`` (stable across runs, a Pulumi secret in state).

    The path-like names (``/mcpdeploy/prod/mcp-api-key``) let IAM grant a stack's hosts
    ``/mcpdeploy/prod/*`` and let rotation add versions without renaming anything.

    Outputs: ``arns`` (name → ARN), ``names`` (name → secret name), ``redis_auth_token``
    (secret Output, for ElastiCache).
    """

    def __init__(
        self, name: str, args: SecretsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mcpdeploy:aws:Secrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.arns: dict[str, pulumi.Output[str]] = {}
        self.names: dict[str, str] = {}
        values: dict[str, pulumi.Output[str]] = {}
        for key, (length, description) in GENERATED.items():
            password = random.RandomPassword(
                f"{name}-{key}", length=length, special=False, opts=child
            )
            secret = aws.secretsmanager.Secret(
                f"{name}-{key}",
                name=f"{args.prefix}/{key}",
                description=description,
                recovery_window_in_days=7,
                tags=args.tags,
                opts=child,
            )
            aws.secretsmanager.SecretVersion(
                f"{name}-{key}", secret_id=secret.id, secret_string=password.result, opts=child
            )
            self.arns[key] = secret.arn
            self.names[key] = f"{args.prefix}/{key}"
            values[key] = password.result
        self.redis_auth_token = values["redis-auth-token"]
        self.register_outputs({"arns": self.arns, "names": self.names})
