"""The release lock and log of an AWS stack: a DynamoDB table (mcpdeploy/releaselog.py).

On the lab and self-hosted targets they are files on the edge host; AWS has no edge host,
so every operator's ``mcpdeploy release`` meets the others here instead."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mcpdeploy.releaselog import release_table


@dataclass(frozen=True, kw_only=True)
class ReleasesArgs:
    stack: str
    tags: dict[str, str]


class Releases(pulumi.ComponentResource):
    """On-demand table keyed ``pk``/``sk`` (the lock item and the log records), encrypted,
    with point-in-time recovery and deletion protection: the audit trail of every release
    must outlive a mistaken ``pulumi destroy``.

    Outputs: ``table`` (name), ``arn``.
    """

    def __init__(
        self, name: str, args: ReleasesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mcpdeploy:aws:Releases", name, None, opts)
        table = aws.dynamodb.Table(
            f"{name}-releases",
            # A fixed name: the CLI finds it from the stack name alone (no outputs needed).
            name=release_table(args.stack),
            billing_mode="PAY_PER_REQUEST",
            hash_key="pk",
            range_key="sk",
            attributes=[
                aws.dynamodb.TableAttributeArgs(name="pk", type="S"),
                aws.dynamodb.TableAttributeArgs(name="sk", type="S"),
            ],
            point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(enabled=True),
            server_side_encryption=aws.dynamodb.TableServerSideEncryptionArgs(enabled=True),
            deletion_protection_enabled=True,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.table = table.name
        self.arn = table.arn
        self.register_outputs({"table": self.table, "arn": self.arn})
