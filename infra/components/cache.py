"""Cache: ElastiCache Redis, encrypted in transit and at rest, AUTH required."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mcpdeploy.settings import AwsCache


@dataclass(frozen=True, kw_only=True)
class CacheArgs:
    """Settings from ``aws.cache``; ``auth_token`` comes from the Secrets component."""

    identifier: str
    settings: AwsCache
    subnet_ids: list[pulumi.Output[str]]
    security_group_id: pulumi.Input[str]
    auth_token: pulumi.Output[str]
    tags: dict[str, str]


class Cache(pulumi.ComponentResource):
    """A Redis replication group in the private subnets (guide: Redis 6.0+ for caching
    and rate limiting). With two nodes or more the replica takes over automatically,
    in another AZ.

    Outputs: ``primary_endpoint``, ``reader_endpoint``, ``port``, ``member_ids``
    (node ids ``<identifier>-001`` …, for per-node alarms).
    """

    def __init__(
        self, name: str, args: CacheArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mcpdeploy:aws:Cache", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg = args.settings
        replicated = cfg.nodes > 1

        subnets = aws.elasticache.SubnetGroup(
            name,
            description=f"{args.identifier}: private subnets",
            subnet_ids=args.subnet_ids,
            tags=args.tags,
            opts=child,
        )
        group = aws.elasticache.ReplicationGroup(
            name,
            replication_group_id=args.identifier,
            description=f"{args.identifier}: cache and rate limits of the MCP service",
            engine="redis",
            engine_version=cfg.engine_version,
            node_type=cfg.node_type,
            num_cache_clusters=cfg.nodes,
            port=6379,
            automatic_failover_enabled=replicated,
            multi_az_enabled=replicated,
            transit_encryption_enabled=True,
            at_rest_encryption_enabled=True,
            auth_token=args.auth_token,
            subnet_group_name=subnets.name,
            security_group_ids=[args.security_group_id],
            snapshot_retention_limit=1,
            auto_minor_version_upgrade=True,
            apply_immediately=False,
            tags=args.tags,
            opts=child,
        )

        self.primary_endpoint = group.primary_endpoint_address
        self.reader_endpoint = group.reader_endpoint_address
        self.port = group.port
        self.member_ids = [f"{args.identifier}-{i:03d}" for i in range(1, cfg.nodes + 1)]
        self.register_outputs(
            {
                "primary_endpoint": self.primary_endpoint,
                "reader_endpoint": self.reader_endpoint,
                "port": self.port,
                "member_ids": self.member_ids,
            }
        )
