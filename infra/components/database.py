"""Database: RDS PostgreSQL, encrypted, private, TLS-only, backed up."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mcpdeploy.settings import AwsDatabase

DB_NAME = "railspress_production"  # guide: Database Preparation
MASTER_USER = "railspress_admin"


@dataclass(frozen=True, kw_only=True)
class DatabaseArgs:
    """Settings from ``aws.database``; ``identifier`` names the instance and its snapshot."""

    identifier: str
    settings: AwsDatabase
    subnet_ids: list[pulumi.Output[str]]
    security_group_id: pulumi.Input[str]
    tags: dict[str, str]


class Database(pulumi.ComponentResource):
    """RDS PostgreSQL in the private subnets.

    Encrypted with its own KMS key (storage, Performance Insights, master secret), never
    publicly accessible, ``rds.force_ssl=1``, automated backups kept at least 7 days,
    deletion protection and a final snapshot. The master password is generated and kept
    by RDS in Secrets Manager (never in Pulumi state). The least-privilege owner and
    runtime roles are created by the migration step (docs/aws.md), not here.

    Outputs: ``address``, ``port``, ``endpoint`` (host:port), ``identifier``,
    ``master_secret_arn``, ``kms_key_arn``.
    """

    def __init__(
        self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mcpdeploy:aws:Database", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg = args.settings
        major = cfg.engine_version.split(".")[0]

        key = aws.kms.Key(
            f"{name}-database",
            description=f"{args.identifier}: RDS storage, Performance Insights, master secret",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags=args.tags,
            opts=child,
        )
        subnets = aws.rds.SubnetGroup(name, subnet_ids=args.subnet_ids, tags=args.tags, opts=child)
        params = aws.rds.ParameterGroup(
            name,
            family=f"postgres{major}",
            description=f"{args.identifier}: TLS only",
            parameters=[
                aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1"),
                # guide: mcp_performance_threshold_ms 1000 → slow statements are logged.
                aws.rds.ParameterGroupParameterArgs(
                    name="log_min_duration_statement", value="1000"
                ),
            ],
            tags=args.tags,
            opts=child,
        )
        instance = aws.rds.Instance(
            name,
            identifier=args.identifier,
            engine="postgres",
            engine_version=cfg.engine_version,
            instance_class=cfg.instance_class,
            db_name=DB_NAME,
            username=MASTER_USER,
            manage_master_user_password=True,
            master_user_secret_kms_key_id=key.key_id,
            allocated_storage=cfg.allocated_storage_gb,
            max_allocated_storage=cfg.allocated_storage_gb * 4,
            storage_type="gp3",
            storage_encrypted=True,
            kms_key_id=key.arn,
            multi_az=cfg.multi_az,
            db_subnet_group_name=subnets.name,
            vpc_security_group_ids=[args.security_group_id],
            publicly_accessible=False,
            parameter_group_name=params.name,
            backup_retention_period=cfg.backup_retention_days,
            deletion_protection=cfg.deletion_protection,
            skip_final_snapshot=False,
            final_snapshot_identifier=f"{args.identifier}-final",
            copy_tags_to_snapshot=True,
            performance_insights_enabled=True,
            performance_insights_kms_key_id=key.arn,
            performance_insights_retention_period=7,
            enabled_cloudwatch_logs_exports=["postgresql", "upgrade"],
            auto_minor_version_upgrade=True,
            tags=args.tags,
            opts=child,
        )

        self.address = instance.address
        self.port = instance.port
        self.endpoint = instance.endpoint
        self.identifier = instance.identifier
        self.master_secret_arn = instance.master_user_secrets.apply(
            lambda secrets: secrets[0].secret_arn if secrets else None
        )
        self.kms_key_arn = key.arn
        self.register_outputs(
            {
                "address": self.address,
                "port": self.port,
                "endpoint": self.endpoint,
                "identifier": self.identifier,
                "master_secret_arn": self.master_secret_arn,
                "kms_key_arn": self.kms_key_arn,
            }
        )
