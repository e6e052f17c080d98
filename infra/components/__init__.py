"""One ComponentResource per concern of the AWS target, composed by ``infra/__main__.py``.

Components take plain values from the validated settings (never files or environment)
and expose documented outputs as attributes; every child is parented to its component.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

# CloudWatch Logs accepts only these retention periods (days).
_LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
)  # fmt: skip


def log_retention(days: int) -> int:
    """The smallest retention CloudWatch accepts that keeps logs at least ``days``."""
    return next(d for d in _LOG_RETENTION_DAYS if d >= days)


def policy_json(statements: list[dict[str, Any]]) -> pulumi.Output[str]:
    """An IAM policy document; statements may hold Outputs (ARNs not known until apply)."""
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": statements})


def assume_role_policy(service: str) -> str:
    """Trust policy letting one AWS service assume a role."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


def secure_bucket(
    name: str,
    parent: pulumi.Resource,
    expire_days: int,
    tags: dict[str, str],
    kms_key_arn: pulumi.Input[str] | None = None,
    grants: list[dict[str, Any]] | None = None,
) -> aws.s3.Bucket:
    """A private S3 bucket: encrypted (SSE-KMS with ``kms_key_arn``, else SSE-S3, which is
    all ALB access logs accept), public access blocked, ACLs disabled, versioned, objects
    and old versions expiring after ``expire_days``, TLS-only policy plus ``grants``."""
    child = pulumi.ResourceOptions(parent=parent)
    # Bucket names are global: ``name`` (project-stack-…) says whose it is, S3 adds a suffix.
    bucket = aws.s3.Bucket(name, bucket_prefix=f"{name[:36]}-", tags=tags, opts=child)
    block = aws.s3.BucketPublicAccessBlock(
        name,
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=child,
    )
    aws.s3.BucketOwnershipControls(
        name,
        bucket=bucket.id,
        rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
        opts=child,
    )
    by_default = (
        aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
            sse_algorithm="aws:kms" if kms_key_arn else "AES256", kms_master_key_id=kms_key_arn
        )
    )
    aws.s3.BucketServerSideEncryptionConfiguration(
        name,
        bucket=bucket.id,
        rules=[
            aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=by_default,
                bucket_key_enabled=bool(kms_key_arn),
            )
        ],
        opts=child,
    )
    versioning = aws.s3.BucketVersioning(
        name,
        bucket=bucket.id,
        versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(
            status="Enabled"
        ),
        opts=child,
    )
    aws.s3.BucketLifecycleConfiguration(
        name,
        bucket=bucket.id,
        rules=[
            aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="expire",
                status="Enabled",
                filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=expire_days),
                noncurrent_version_expiration=(
                    aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=expire_days
                    )
                ),
                abort_incomplete_multipart_upload=(
                    aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=7
                    )
                ),
            )
        ],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[versioning]),
    )
    objects = pulumi.Output.concat(bucket.arn, "/*")
    aws.s3.BucketPolicy(
        name,
        bucket=bucket.id,
        policy=policy_json(
            [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket.arn, objects],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                },
                *[{**grant, "Resource": objects} for grant in grants or []],
            ]
        ),
        # S3 refuses a policy while the public access block is being changed.
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[block]),
    )
    return bucket
