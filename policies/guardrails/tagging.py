"""Tags (guide: Monitoring, Troubleshooting — find a stack's resources; hosts/aws.py finds
the hosts by ``Project``/``Stack``/``Color``). Advisory: a missing tag blocks nothing."""

from __future__ import annotations

import importlib
from functools import cache

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from .config import schema, setting, string_list
from .resources import nested, stack_name

# Per-color resources: the inventory and the alarms tell the colors apart by this tag.
COLORED = ("aws:ec2/instance:Instance", "aws:lb/targetGroup:TargetGroup")

TAGS = schema(
    requiredTags=string_list("Tags every taggable AWS resource carries", ["Project", "Stack"]),
    colors=string_list("Values the Color tag of per-color resources may take", ["blue", "green"]),
)


@cache
def taggable(resource_type: str) -> bool:
    """Whether the pulumi-aws resource of this type takes ``tags``; the schema, not the
    program's inputs, decides, so a resource created without tags is still caught."""
    package, module, name = [*resource_type.split(":"), "", ""][:3]
    if package != "aws" or not name:
        return False
    module = module.split("/")[0]
    try:
        sdk = importlib.import_module("pulumi_aws" if module == "index" else f"pulumi_aws.{module}")
    except ImportError:
        return False
    return isinstance(getattr(getattr(sdk, name, None), "tags", None), property)


def _required_tags(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if not taggable(args.resource_type):
        return
    provider_defaults = nested(args.provider.props.get("defaultTags")) if args.provider else {}
    tags = {**nested(provider_defaults.get("tags")), **nested(args.props.get("tags"))}
    stack = stack_name(args.urn)
    missing = [t for t in setting(args, TAGS, "requiredTags") if not tags.get(t)]
    if missing:
        report(
            f"{args.name} lacks tag(s) {', '.join(missing)}: pass the stack's tags "
            "(infra/__main__.py `tags`) to it.",
            None,
        )
    if "Stack" in tags and tags["Stack"] != stack:
        report(
            f"{args.name} is tagged Stack={tags['Stack']} in stack {stack}: tag it {stack}.", None
        )
    colors = list(setting(args, TAGS, "colors"))
    if args.resource_type in COLORED and tags.get("Color") not in colors:
        report(
            f"{args.name} is a per-color resource without a Color tag of "
            f"{' or '.join(colors)}: add Color=<its color> to its tags.",
            None,
        )


POLICIES = [
    ResourceValidationPolicy(
        name="required-tags",
        description="Taggable AWS resources carry Project and Stack (and Color where per-color).",
        validate=_required_tags,
        config_schema=TAGS,
        enforcement_level=EnforcementLevel.ADVISORY,
    ),
]
