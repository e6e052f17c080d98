"""RDS PostgreSQL (guide: Database Preparation, Database Security, Backup Procedures)."""

from __future__ import annotations

from pulumi_policy import (
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from .config import schema, setting, string_list
from .resources import for_types, listed, of_type, related, stack_name

INSTANCE = "aws:rds/instance:Instance"
PARAMETER_GROUP = "aws:rds/parameterGroup:ParameterGroup"
WHERE = "on aws.rds.Instance (infra/components/database.py)"


def _storage_encrypted(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.props.get("storageEncrypted") is not True:
        report(
            f"RDS instance {args.name} stores data unencrypted: set storage_encrypted=True "
            f"and kms_key_id to the database's KMS key {WHERE}.",
            None,
        )


def _not_public(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.props.get("publiclyAccessible") is True:
        report(
            f"RDS instance {args.name} is publicly accessible: set publicly_accessible=False "
            f"{WHERE}; the app hosts reach it inside the VPC.",
            None,
        )


RETENTION = schema(
    minimumRetentionDays={
        "type": "integer", "minimum": 1, "maximum": 35, "default": 7,
        "description": "Fewest days of automated backups an RDS instance may keep",
    },
)  # fmt: skip


def _backup_retention(args: ResourceValidationArgs, report: ReportViolation) -> None:
    minimum = int(setting(args, RETENTION, "minimumRetentionDays"))
    days = args.props.get("backupRetentionPeriod")
    if days is None or days < minimum:
        shown = "unset (AWS keeps 1 day)" if days is None else f"{days:g} days"
        report(
            f"RDS instance {args.name} keeps backups {shown}: set backup_retention_period "
            f">= {minimum} (aws.database.backupRetentionDays in Pulumi.<stack>.yaml) {WHERE}.",
            None,
        )


PROTECTED = schema(
    stacks=string_list("Stacks whose databases must have deletion protection", ["prod"]),
)


def _deletion_protection(args: ResourceValidationArgs, report: ReportViolation) -> None:
    stack = stack_name(args.urn)
    protected = stack in setting(args, PROTECTED, "stacks")
    if protected and args.props.get("deletionProtection") is not True:
        report(
            f"RDS instance {args.name} in stack {stack} can be deleted: set "
            f"aws.database.deletionProtection: true in Pulumi.{stack}.yaml "
            f"(deletion_protection=True {WHERE}).",
            None,
        )


ENGINE = schema(
    minimumMajorVersion={
        "type": "integer", "minimum": 15, "default": 15,
        "description": "Oldest PostgreSQL major version allowed",
    },
)  # fmt: skip


def _postgres_version(args: ResourceValidationArgs, report: ReportViolation) -> None:
    minimum = int(setting(args, ENGINE, "minimumMajorVersion"))
    engine, version = args.props.get("engine"), str(args.props.get("engineVersion") or "")
    major = version.split(".")[0]
    if engine != "postgres" or not major.isdigit() or int(major) < minimum:
        report(
            f"RDS instance {args.name} runs {engine} {version or '(default version)'}: set "
            f'engine="postgres" and aws.database.engineVersion to {minimum} or newer '
            f"in Pulumi.<stack>.yaml {WHERE}.",
            None,
        )


def _force_ssl(args: StackValidationArgs, report: ReportViolation) -> None:
    groups = of_type(args.resources, PARAMETER_GROUP)
    for instance in of_type(args.resources, INSTANCE):
        found = related(instance, "parameterGroupName", groups, "name", "id")
        forced = [
            g
            for g in found
            if any(
                p.get("name") == "rds.force_ssl" and str(p.get("value")) == "1"
                for p in listed(g.props.get("parameters"))
            )
        ]
        if not forced:
            report(
                f"RDS instance {instance.name} accepts unencrypted connections: give it "
                "parameter_group_name of an aws.rds.ParameterGroup in this stack that sets "
                "rds.force_ssl=1 (infra/components/database.py).",
                instance.urn,
            )


POLICIES = [
    ResourceValidationPolicy(
        name="rds-storage-encrypted",
        description="RDS storage is encrypted at rest.",
        validate=for_types([INSTANCE], _storage_encrypted),
    ),
    ResourceValidationPolicy(
        name="rds-not-public",
        description="RDS instances are not publicly accessible.",
        validate=for_types([INSTANCE], _not_public),
    ),
    ResourceValidationPolicy(
        name="rds-backup-retention",
        description="RDS keeps automated backups at least the minimum retention (7 days).",
        validate=for_types([INSTANCE], _backup_retention),
        config_schema=RETENTION,
    ),
    ResourceValidationPolicy(
        name="rds-deletion-protection",
        description="RDS instances in protected stacks (prod) have deletion protection.",
        validate=for_types([INSTANCE], _deletion_protection),
        config_schema=PROTECTED,
    ),
    ResourceValidationPolicy(
        name="rds-postgres-version",
        description="RDS runs PostgreSQL 15 or newer.",
        validate=for_types([INSTANCE], _postgres_version),
        config_schema=ENGINE,
    ),
    StackValidationPolicy(
        name="rds-force-ssl",
        description="Each RDS instance's parameter group forces TLS (rds.force_ssl=1).",
        validate=_force_ssl,
    ),
]
