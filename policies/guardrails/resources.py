"""Reading resources as the policy engine hands them to a policy.

Properties arrive camelCase, as in the provider schema (``storageEncrypted``), numbers as
floats, wrapped in the SDK's proxy that raises ``UnknownValueError`` for a value not known
during preview (the SDK then reports "can't run during preview" instead of a violation).
Resources relate to each other through the engine's property dependencies, which are
known during preview too; matching by value is the fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pulumi_policy import PolicyResource, ReportViolation, ResourceValidationArgs

ResourceCheck = Callable[[ResourceValidationArgs, ReportViolation], None]


def stack_name(urn: str) -> str:
    """The stack of a URN (``urn:pulumi:<stack>::<project>::<type>::<name>``)."""
    return urn.split("::", 1)[0].removeprefix("urn:pulumi:")


def listed(value: Any) -> list[Any]:
    """A list property as a list; absent, a string or a scalar is no list at all."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return []


def nested(value: Any) -> Mapping[str, Any]:
    """An object property (some providers render a single object as a one-item list)."""
    if isinstance(value, Mapping):
        return value
    first = listed(value)[:1]
    return first[0] if first and isinstance(first[0], Mapping) else {}


def for_types(types: Iterable[str], check: ResourceCheck) -> ResourceCheck:
    """A resource validation that runs ``check`` on the given types and ignores the rest."""
    wanted = frozenset(types)

    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if args.resource_type in wanted:
            check(args, report)

    return validate


def of_type(resources: Iterable[PolicyResource], *types: str) -> list[PolicyResource]:
    """The resources of the given types, in stack order."""
    return [r for r in resources if r.resource_type in types]


def related(
    resource: PolicyResource, prop: str, candidates: Iterable[PolicyResource], *keys: str
) -> list[PolicyResource]:
    """The ``candidates`` that ``resource.props[prop]`` refers to.

    The engine records which resources each input came from (``property_dependencies``);
    without that record (state written by an older engine) an output named in ``keys``
    (``id``, ``name``, ``arn`` ...) must equal the value, or one of the values of a list.
    """
    pool = list(candidates)
    sources = {r.urn for r in resource.property_dependencies.get(prop, [])}
    found = [c for c in pool if c.urn in sources]
    if found:
        return found
    value = resource.props.get(prop)
    values = {str(v) for v in listed(value)} if listed(value) else {str(value)}
    return [c for c in pool if any(str(c.props.get(k)) in values for k in keys)]
