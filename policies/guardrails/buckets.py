"""S3 buckets (guide: Backup Procedures; Security Settings — encryption).

pulumi-aws 7 configures a bucket through separate resources that name it in ``bucket``;
these stack policies find each bucket's companions and check them together.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pulumi_policy import (
    PolicyResource,
    ReportViolation,
    StackValidationArgs,
    StackValidationPolicy,
)

from .resources import listed, nested, of_type, related

BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
ENCRYPTION = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
)
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
VERSIONING = (
    "aws:s3/bucketVersioning:BucketVersioning",
    "aws:s3/bucketVersioningV2:BucketVersioningV2",
)
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
BACKUPS_COMPONENT = "mcpdeploy:aws:Backups"
SSE_ALGORITHMS = ("AES256", "aws:kms", "aws:kms:dsse")
BLOCK_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
WHERE = "(secure_bucket in infra/components/__init__.py)"


def _companions(
    args: StackValidationArgs, bucket: PolicyResource, *types: str
) -> list[PolicyResource]:
    return [
        r
        for r in of_type(args.resources, *types)
        if bucket in related(r, "bucket", [bucket], "id", "bucket")
    ]


def _encrypted(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in of_type(args.resources, *BUCKETS):
        rules = [
            nested(rule.get("applyServerSideEncryptionByDefault")).get("sseAlgorithm")
            for config in _companions(args, bucket, *ENCRYPTION)
            for rule in listed(config.props.get("rules"))
        ]
        if not any(algorithm in SSE_ALGORITHMS for algorithm in rules):
            report(
                f"Bucket {bucket.name} has no default encryption: add an "
                "aws.s3.BucketServerSideEncryptionConfiguration for it with sse_algorithm "
                f'"aws:kms" (or "AES256") {WHERE}.',
                bucket.urn,
            )


def _public_access_blocked(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in of_type(args.resources, *BUCKETS):
        blocks = _companions(args, bucket, PUBLIC_ACCESS_BLOCK)
        if not any(all(b.props.get(flag) is True for flag in BLOCK_FLAGS) for b in blocks):
            report(
                f"Bucket {bucket.name} may be made public: add an aws.s3.BucketPublicAccessBlock "
                "for it with block_public_acls, block_public_policy, "
                f"ignore_public_acls and restrict_public_buckets True {WHERE}.",
                bucket.urn,
            )


def _backups_versioned(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in of_type(args.resources, *BUCKETS):
        if bucket.parent is None or bucket.parent.resource_type != BACKUPS_COMPONENT:
            continue
        statuses = [
            nested(v.props.get("versioningConfiguration")).get("status")
            for v in _companions(args, bucket, *VERSIONING)
        ]
        if "Enabled" not in statuses:
            report(
                f"Backup bucket {bucket.name} is not versioned, so an overwritten or deleted "
                "backup is gone: add an aws.s3.BucketVersioning for it with status "
                f'"Enabled" {WHERE}.',
                bucket.urn,
            )


def _statements(document: Any) -> list[Mapping[str, Any]]:
    """The statements of an IAM policy document (JSON text, as the provider takes it)."""
    parsed = nested(json.loads(document) if isinstance(document, str) else document)
    statement = parsed.get("Statement")
    return [statement] if isinstance(statement, Mapping) else listed(statement)


def _denies_plain_http(statement: Mapping[str, Any]) -> bool:
    actions = listed(statement.get("Action")) or [statement.get("Action")]
    principal = statement.get("Principal")
    condition = nested(nested(statement.get("Condition")).get("Bool"))
    return (
        statement.get("Effect") == "Deny"
        and principal in ("*", {"AWS": "*"})
        and any(a in ("s3:*", "*") for a in actions)
        and str(condition.get("aws:SecureTransport")).lower() == "false"
    )


def _tls_only(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in of_type(args.resources, *BUCKETS):
        policies = _companions(args, bucket, BUCKET_POLICY)
        statements = [s for p in policies for s in _statements(p.props.get("policy"))]
        if not any(_denies_plain_http(s) for s in statements):
            report(
                f"Bucket {bucket.name} accepts plain HTTP requests: add an aws.s3.BucketPolicy "
                'for it with a statement Effect "Deny", Principal "*", Action "s3:*" on the '
                'bucket and its objects, Condition {"Bool": {"aws:SecureTransport": "false"}} '
                f"{WHERE}.",
                bucket.urn,
            )


POLICIES = [
    StackValidationPolicy(
        name="s3-encryption",
        description="Every S3 bucket has default server-side encryption.",
        validate=_encrypted,
    ),
    StackValidationPolicy(
        name="s3-public-access-block",
        description="Every S3 bucket blocks all public access.",
        validate=_public_access_blocked,
    ),
    StackValidationPolicy(
        name="s3-backup-versioning",
        description="The backup bucket is versioned.",
        validate=_backups_versioned,
    ),
    StackValidationPolicy(
        name="s3-tls-only",
        description="Every S3 bucket policy denies requests without TLS.",
        validate=_tls_only,
    ),
]
