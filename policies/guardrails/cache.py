"""ElastiCache Redis (guide: Redis 6.0+ for caching and rate limiting; Security Settings)."""

from __future__ import annotations

from pulumi_policy import ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from .resources import for_types

REPLICATION_GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"
WHERE = "on aws.elasticache.ReplicationGroup (infra/components/cache.py)"


def _transit(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.props.get("transitEncryptionEnabled") is not True:
        report(
            f"Redis {args.name} accepts plaintext connections: set "
            f"transit_encryption_enabled=True {WHERE} (clients use rediss://).",
            None,
        )


def _at_rest(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.props.get("atRestEncryptionEnabled") is not True:
        report(
            f"Redis {args.name} stores data and snapshots unencrypted: set "
            f"at_rest_encryption_enabled=True {WHERE}.",
            None,
        )


def _auth_token(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if not args.props.get("authToken"):
        report(
            f"Redis {args.name} needs no password: set auth_token to the Secrets "
            f"component's redis-auth-token {WHERE}.",
            None,
        )


POLICIES = [
    ResourceValidationPolicy(
        name="elasticache-transit-encryption",
        description="ElastiCache Redis encrypts connections in transit (TLS).",
        validate=for_types([REPLICATION_GROUP], _transit),
    ),
    ResourceValidationPolicy(
        name="elasticache-at-rest-encryption",
        description="ElastiCache Redis encrypts data at rest.",
        validate=for_types([REPLICATION_GROUP], _at_rest),
    ),
    ResourceValidationPolicy(
        name="elasticache-auth-token",
        description="ElastiCache Redis requires an AUTH token.",
        validate=for_types([REPLICATION_GROUP], _auth_token),
    ),
]
