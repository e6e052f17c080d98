"""The stack the AWS program registers under mocks, as the policy engine hands it over.

``run_program`` (tests/infra/pulumi_harness.py) runs ``infra/`` under its recording mocks;
while it runs, the mock monitor's RegisterResource requests and responses are kept. They
carry what the engine itself knows and the Recorder does not: each resource's URN, parent,
dependencies and property dependencies. Properties go through the policy SDK's own path
(protobuf Struct → ``MessageToDict`` → ``deserialize_properties`` → the unknown-checking
proxy), so a policy sees camelCase keys, float numbers and unwrapped secrets exactly as
under ``pulumi preview``: inputs for resource policies, outputs (plus ``id``, which the
provider puts in every resource's state) for stack policies. The args are the SDK's real
``ResourceValidationArgs``, ``StackValidationArgs`` and ``PolicyResource`` objects.

Not reproduced: the provider's Check (defaults it adds to inputs) and unknown values
(the mocks run as an update, so every value is known).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from inspect import isawaitable
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from pulumi.runtime import mocks
from pulumi_harness import run_program, write_project
from pulumi_policy import (
    Policy,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import unknown_checking_proxy

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"


@dataclass
class Registered:
    """One resource registration: what the engine would know about it after an update."""

    typ: str
    name: str
    urn: str
    parent: str | None
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    dependencies: list[str] = field(default_factory=list)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)


class Stack(list[Registered]):
    """The registrations of one program run, in order, with ways to break a copy of them."""

    def one(self, typ: str, name: str | None = None) -> Registered:
        found = [r for r in self if r.typ == typ and (name is None or r.name == name)]
        assert len(found) == 1, (typ, name, [r.name for r in found])
        return found[0]

    def changed(self, typ: str, name: str | None = None, **props: Any) -> Stack:
        """A copy in which one resource's inputs and outputs have ``props`` (None removes)."""
        broken = Stack(copy.deepcopy(list(self)))
        target = broken.one(typ, name)
        for key, value in props.items():
            # A literal (or absent) value comes from no other resource.
            target.property_dependencies.pop(key, None)
            for state in (target.inputs, target.outputs):
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
        return broken

    def without(self, typ: str, name: str | None = None) -> Stack:
        """A copy without the matching resources (all of ``typ`` when no name is given)."""
        return Stack(
            copy.deepcopy([r for r in self if not (r.typ == typ and name in (None, r.name))])
        )

    def plus(
        self, typ: str, name: str, props: dict[str, Any], depends_on: Mapping[str, Registered]
    ) -> Stack:
        """A copy with one more resource; ``depends_on`` maps its properties to the
        resources they came from (as the engine records them)."""
        stack = self[0].urn.split("::", 1)[0]
        project = self[0].urn.split("::")[1]
        added = Registered(
            typ=typ,
            name=name,
            urn=f"{stack}::{project}::pulumi:pulumi:Stack${typ}::{name}",
            parent=self[0].urn,
            inputs=copy.deepcopy(props),
            outputs={**copy.deepcopy(props), "id": f"{name}-id"},
            dependencies=[r.urn for r in depends_on.values()],
            property_dependencies={key: [source.urn] for key, source in depends_on.items()},
        )
        return Stack([*copy.deepcopy(list(self)), added])


def _properties(struct: Any) -> dict[str, Any]:
    return deserialize_properties(json_format.MessageToDict(struct))


@contextmanager
def _monitor_requests() -> Iterator[list[tuple[Any, Any]]]:
    seen: list[tuple[Any, Any]] = []
    original = mocks.MockMonitor.RegisterResource

    def register(monitor: mocks.MockMonitor, request: Any) -> Any:
        response = original(monitor, request)
        seen.append((request, response))
        return response

    mocks.MockMonitor.RegisterResource = register  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        mocks.MockMonitor.RegisterResource = original  # type: ignore[method-assign]


def registered_stack(directory: Path, config: dict[str, Any], stack: str = "prod") -> Stack:
    """Run the program for ``stack`` with ``config`` and return what it registered."""
    with _monitor_requests() as seen:
        run_program(write_project(directory, config, stack), stack=stack)
    return Stack(
        Registered(
            typ=request.type,
            name=request.name,
            urn=response.urn,
            parent=request.parent or None,
            inputs=_properties(request.object),
            outputs=(
                {**_properties(response.object), "id": response.id}
                if request.custom
                else _properties(response.object)
            ),
            dependencies=list(request.dependencies),
            property_dependencies={
                key: list(deps.urns) for key, deps in request.propertyDependencies.items()
            },
        )
        for request, response in seen
    )


def _options(reg: Registered) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=reg.parent,
    )


def resource_args(
    reg: Registered, config: Mapping[str, Any] | None = None
) -> ResourceValidationArgs:
    """What ``Analyze`` gives a resource policy for this registration."""
    props = unknown_checking_proxy(copy.deepcopy(reg.inputs))
    return ResourceValidationArgs(reg.typ, props, reg.urn, reg.name, _options(reg), None, config)


def stack_args(stack: Stack, config: Mapping[str, Any] | None = None) -> StackValidationArgs:
    """What ``AnalyzeStack`` gives a stack policy: every resource with parent and
    dependencies linked to the resource objects, as the SDK's analyzer links them."""
    resources = {
        reg.urn: PolicyResource(
            reg.typ,
            unknown_checking_proxy(copy.deepcopy(reg.outputs)),
            reg.urn,
            reg.name,
            _options(reg),
            None,
            None,
            [],
            {},
        )
        for reg in stack
    }
    for reg in stack:
        resource = resources[reg.urn]
        resource.parent = resources.get(reg.parent or "")
        resource.dependencies = [resources[u] for u in reg.dependencies if u in resources]
        resource.property_dependencies = {
            key: [resources[u] for u in urns if u in resources]
            for key, urns in reg.property_dependencies.items()
        }
    return StackValidationArgs(list(resources.values()), config)


@dataclass(frozen=True)
class Violation:
    policy: str
    message: str
    urn: str | None


def _settle(result: Any) -> None:
    if isawaitable(result):
        asyncio.run(result)  # type: ignore[arg-type]


def _collector(found: list[Violation], policy: str, urn: str | None) -> ReportViolation:
    # The engine files a resource policy's violation under the resource's own URN.
    def report(message: str, reported: str | None = None) -> None:
        found.append(Violation(policy, message, reported or urn))

    return report


def violations(
    policies: list[Policy], stack: Stack, config: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Violation]:
    """Run each policy as the engine would (resource policies on every resource, stack
    policies once) with its own part of ``config``; return what they report."""
    found: list[Violation] = []
    for policy in policies:
        own = (config or {}).get(policy.name)
        if isinstance(policy, ResourceValidationPolicy):
            for reg in stack:
                report = _collector(found, policy.name, reg.urn)
                _settle(policy.validate(resource_args(reg, own), report))
        elif isinstance(policy, StackValidationPolicy):
            _settle(policy.validate(stack_args(stack, own), _collector(found, policy.name, None)))
    return found


def of_policy(found: list[Violation], policy: str) -> list[Violation]:
    """The violations one policy reported."""
    return [v for v in found if v.policy == policy]
