"""ECR (guide: Docker Deployment, Application Dependencies — check for vulnerabilities)."""

from __future__ import annotations

from pulumi_policy import ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from .resources import for_types, nested

REPOSITORY = "aws:ecr/repository:Repository"
WHERE = "on aws.ecr.Repository (infra/components/registry.py)"


def _scan_on_push(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if nested(args.props.get("imageScanningConfiguration")).get("scanOnPush") is not True:
        report(
            f"Repository {args.name} does not scan pushed images: set "
            f"image_scanning_configuration scan_on_push=True {WHERE}.",
            None,
        )


def _immutable_tags(args: ResourceValidationArgs, report: ReportViolation) -> None:
    mutability = args.props.get("imageTagMutability") or "MUTABLE (the default)"
    if mutability != "IMMUTABLE":
        report(
            f"Repository {args.name} has {mutability} tags, so a release tag can be "
            f'overwritten: set image_tag_mutability="IMMUTABLE" {WHERE}.',
            None,
        )


POLICIES = [
    ResourceValidationPolicy(
        name="ecr-scan-on-push",
        description="ECR repositories scan images on push.",
        validate=for_types([REPOSITORY], _scan_on_push),
    ),
    ResourceValidationPolicy(
        name="ecr-immutable-tags",
        description="ECR repositories have immutable tags.",
        validate=for_types([REPOSITORY], _immutable_tags),
    ),
]
