"""Backups: the bucket hosts put database dumps and configuration archives into."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from . import secure_bucket


@dataclass(frozen=True, kw_only=True)
class BackupsArgs:
    """``retention_days`` is ``retention.backupDays`` (guide: keep 30 days)."""

    retention_days: int
    tags: dict[str, str]


class Backups(pulumi.ComponentResource):
    """An S3 bucket encrypted with its own KMS key, private, versioned, TLS-only, whose
    objects expire after the retention (guide: Backup Procedures, ``find -mtime +30
    -delete``, done by S3 lifecycle instead of a cron job on a host).

    Outputs: ``bucket`` (name), ``bucket_arn``, ``kms_key_arn``.
    """

    def __init__(
        self, name: str, args: BackupsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mcpdeploy:aws:Backups", name, None, opts)
        key = aws.kms.Key(
            f"{name}-backups",
            description="backups bucket",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        bucket = secure_bucket(name, self, args.retention_days, args.tags, kms_key_arn=key.arn)
        self.bucket = bucket.bucket
        self.bucket_arn = bucket.arn
        self.kms_key_arn = key.arn
        self.register_outputs(
            {"bucket": self.bucket, "bucket_arn": self.bucket_arn, "kms_key_arn": self.kms_key_arn}
        )
