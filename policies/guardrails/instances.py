"""EC2 app hosts (guide: System Requirements, Security Hardening; CIS AWS 5.6 IMDSv2)."""

from __future__ import annotations

from pulumi_policy import ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from .resources import for_types, nested

INSTANCE = "aws:ec2/instance:Instance"
WHERE = "on aws.ec2.Instance (infra/components/hosts.py)"


def _imdsv2(args: ResourceValidationArgs, report: ReportViolation) -> None:
    metadata = nested(args.props.get("metadataOptions"))
    if metadata.get("httpEndpoint") == "disabled":
        return
    if metadata.get("httpTokens") != "required":
        report(
            f"Instance {args.name} answers IMDSv1 (stealable credentials through SSRF): set "
            f'metadata_options http_tokens="required" and http_put_response_hop_limit=1 '
            f"{WHERE}.",
            None,
        )


def _root_encrypted(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if nested(args.props.get("rootBlockDevice")).get("encrypted") is not True:
        report(
            f"Instance {args.name} has an unencrypted root volume: set root_block_device "
            f"encrypted=True {WHERE}.",
            None,
        )


def _no_public_ip(args: ResourceValidationArgs, report: ReportViolation) -> None:
    # Unset means "the subnet decides": say so explicitly, not by a subnet default.
    if args.props.get("associatePublicIpAddress") is not False:
        report(
            f"Instance {args.name} may get a public IP address: set "
            f"associate_public_ip_address=False {WHERE}; hosts are reached through the "
            "ALB and SSM (or the admins' jump host).",
            None,
        )


POLICIES = [
    ResourceValidationPolicy(
        name="ec2-imdsv2-required",
        description="EC2 instances require IMDSv2 session tokens.",
        validate=for_types([INSTANCE], _imdsv2),
    ),
    ResourceValidationPolicy(
        name="ec2-root-volume-encrypted",
        description="EC2 root volumes are encrypted.",
        validate=for_types([INSTANCE], _root_encrypted),
    ),
    ResourceValidationPolicy(
        name="ec2-no-public-ip",
        description="App hosts have no public IP address.",
        validate=for_types([INSTANCE], _no_public_ip),
    ),
]
