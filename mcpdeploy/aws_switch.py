"""Blue-green switching on AWS: ``activeColor`` in the stack config, then ``pulumi up``.

The same edit as on every target (docs/releases.md), driven through the Pulumi Automation API
and guarded like the lab's switch (``mcpdeploy/switch.py``): every host of the new color
must be healthy in its ALB target group before anything changes, the HTTPS listener must
forward to that target group after ``pulumi up``, and on any failure the old color is
put back (config, then ``pulumi up`` again) and the error says what serves now.

Two seams keep the cloud out of unit tests: ``workspace`` opens the stack (default
:func:`local_stack`, the Automation API on the program and ``Pulumi.<stack>.yaml`` at the
project root) and ``elbv2`` is the boto3 client (default: one in the stack's region).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import boto3
import botocore.exceptions
from pulumi import automation as auto

from mcpdeploy.aws_inventory import hosts_from_outputs, stack_region
from mcpdeploy.engine import Progress, no_progress
from mcpdeploy.settings import (
    COLORS,
    PROJECT,
    Color,
    project_root,
    stack_file,
)
from mcpdeploy.switch import SwitchError

ACTIVE_KEY = f"{PROJECT}:activeColor"
HEALTH_PATH = "/health/mcp"  # the target groups' health check (infra/components/loadbalancer.py)
# Reading the stack or AWS can fail in these ways before anything changed.
READ_ERRORS = (
    auto.errors.CommandError,
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    OSError,
)
T = TypeVar("T")


class AutomationStack(Protocol):
    """The part of ``pulumi.automation.Stack`` a switch uses (tests pass a fake)."""

    def get_config(self, key: str) -> auto.ConfigValue: ...

    def set_config(self, key: str, value: auto.ConfigValue) -> None: ...

    def outputs(self) -> dict[str, auto.OutputValue]: ...

    def up(self, *, on_output: Callable[[str], Any] | None = None) -> Any: ...


Workspace = Callable[[str], AutomationStack]


class AwsSwitchError(SwitchError):
    """The switch did not happen, or was undone; the message says what serves now."""


@dataclass(frozen=True)
class AwsSwitch:
    """A switch that happened: ``previous`` → ``active``, with the targets found healthy."""

    stack: str
    previous: Color
    active: Color
    healthy_targets: tuple[str, ...]


def local_stack(stack: str) -> AutomationStack:
    """``stack`` through the Automation API: a LocalWorkspace on the project root, so
    ``pulumi up`` runs ``infra/`` with ``Pulumi.<stack>.yaml`` as the CLI would."""
    try:
        return auto.select_stack(stack, work_dir=str(project_root()))
    except auto.StackNotFoundError:
        raise AwsSwitchError(
            f"Pulumi has no stack {stack!r} in this backend: 'pulumi login' to the backend "
            f"that holds it, or 'pulumi stack init {stack}'"
        ) from None
    except FileNotFoundError:
        raise AwsSwitchError(
            "the Pulumi CLI is not installed (the Automation API runs it): "
            "install it (https://www.pulumi.com/docs/install/) and retry"
        ) from None


def switch_aws(
    stack: str,
    color: str,
    *,
    workspace: Workspace | None = None,
    elbv2: Any = None,
    progress: Progress = no_progress,
) -> AwsSwitch:
    """Make ``color`` the active color of the AWS ``stack``; refuse, or undo, if unsafe.

    Refused with nothing changed: an unknown color, ``color`` already active, or a target
    of ``color`` that is not healthy (or not registered) in its target group. After
    ``set_config`` + ``pulumi up``, the listener must forward to ``color``'s target group;
    otherwise, or if ``up`` fails, the old color is set and applied again.
    """
    target = _color(color)
    stack_file(stack)  # refuses a name Pulumi would refuse
    pulumi_stack = (workspace or local_stack)(stack)
    previous = _read(f"reading {ACTIVE_KEY}", lambda: pulumi_stack.get_config(ACTIVE_KEY).value)
    if previous == target:
        raise AwsSwitchError(f"{target} is already the active color of {stack}: nothing to switch")
    if previous not in COLORS:
        raise AwsSwitchError(f"{ACTIVE_KEY} of {stack} is {previous!r}: set it to blue or green")
    outputs = _read("reading the stack outputs", lambda: plain_outputs(pulumi_stack.outputs()))
    groups = _output(outputs, "targetGroupArns", stack)
    listener = _output(outputs, "httpsListenerArn", stack)
    client = elbv2 or boto3.client("elbv2", region_name=stack_region(stack, project_root()))

    progress(f"checking {target}'s targets in its load balancer target group")
    healthy, problems = _read(
        "reading the target health", lambda: target_health(client, outputs, target)
    )
    if problems:
        raise AwsSwitchError(
            f"{target} is not ready on the load balancer ({'; '.join(problems)}); "
            f"{previous} keeps serving, nothing was changed. Look at the health check "
            f"({HEALTH_PATH}) and, on those hosts, 'journalctl -u mcp-service' and "
            "'docker logs mcp-service' (ssh through hosts/aws.py's ssh_config)"
        )
    progress(f"{target} healthy: {', '.join(healthy)}")

    progress(f"{ACTIVE_KEY}: {target}; pulumi up -s {stack}")
    _read(
        f"setting {ACTIVE_KEY}",
        lambda: pulumi_stack.set_config(ACTIVE_KEY, auto.ConfigValue(target)),
    )
    try:
        pulumi_stack.up(on_output=_lines(progress))
        serving = serving_color(client, listener, groups)
        if serving != target:
            raise AwsSwitchError(
                f"after pulumi up the listener forwards to {serving or 'no single color'}, "
                f"not {target}"
            )
    # Whatever went wrong (pulumi, AWS, the check itself), the old color goes back.
    except Exception as exc:
        where = (client, listener, groups)
        raise _put_back(pulumi_stack, where, stack, previous, target, exc, progress) from exc
    progress(f"{target} is serving")
    return AwsSwitch(stack, cast(Color, previous), target, tuple(healthy))


def target_health(
    client: Any, outputs: dict[str, Any], color: Color
) -> tuple[list[str], list[str]]:
    """(healthy targets, problems) of ``color``'s target group; a problem names the host,
    its instance, its state and the load balancer's reason. Every host of ``color`` in
    the ``hosts`` output must be registered; no target at all is a problem too."""
    arn = outputs["targetGroupArns"][color]
    names = {h.instance_id: h.name for h in hosts_from_outputs(outputs) if h.color == color}
    found = client.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    healthy, problems = [], []
    for entry in found:
        target_id = entry["Target"]["Id"]
        label = f"{names[target_id]} ({target_id})" if target_id in names else target_id
        health = entry["TargetHealth"]
        if health["State"] == "healthy":
            healthy.append(label)
            continue
        why = ": ".join(part for part in (health.get("Reason"), health.get("Description")) if part)
        problems.append(f"{label} {health['State']}" + (f" ({why})" if why else ""))
    registered = {entry["Target"]["Id"] for entry in found}
    problems += [
        f"{name} ({instance}) not registered in the target group"
        for instance, name in names.items()
        if instance not in registered
    ]
    if not found and not names:
        problems.append("no targets registered in the target group")
    return healthy, problems


def target_health_by_instance(
    client: Any, outputs: dict[str, Any], color: Color
) -> dict[str, dict[str, str]]:
    """{instance id: its ``TargetHealth``} in ``color``'s target group."""
    arn = outputs["targetGroupArns"][color]
    found = client.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    return {entry["Target"]["Id"]: entry["TargetHealth"] for entry in found}


def serving_color(client: Any, listener_arn: str, groups: dict[str, str]) -> Color | None:
    """The color whose target group gets the larger share of the HTTPS listener's
    requests; None when neither does (equal weights, or neither group forwarded to)."""
    (listener,) = client.describe_listeners(ListenerArns=[listener_arn])["Listeners"]
    weights: dict[str, int] = {}
    for action in listener["DefaultActions"]:
        if action["Type"] != "forward":
            continue
        forward = (action.get("ForwardConfig") or {}).get("TargetGroups")
        for group in forward or [{"TargetGroupArn": action.get("TargetGroupArn")}]:
            arn = group["TargetGroupArn"]
            weights[arn] = weights.get(arn, 0) + group.get("Weight", 1)
    shares = {color: weights.get(groups[color], 0) for color in COLORS}
    best = max(shares.values())
    leaders = [color for color, weight in shares.items() if weight == best]
    return leaders[0] if best > 0 and len(leaders) == 1 else None


def _put_back(
    pulumi_stack: AutomationStack,
    where: tuple[Any, str, dict[str, str]],
    stack: str,
    previous: str,
    target: Color,
    cause: BaseException,
    progress: Progress,
) -> AwsSwitchError:
    """Set ``previous`` again and apply it; the error to raise says what serves now
    (``where``: the elbv2 client, the listener ARN and the target group ARNs)."""
    why = _summary(cause)
    progress(f"switch to {target} failed ({why}); putting {previous} back")
    try:
        pulumi_stack.set_config(ACTIVE_KEY, auto.ConfigValue(previous))
        pulumi_stack.up(on_output=_lines(progress))
    except Exception as again:
        return AwsSwitchError(
            f"switching {stack} to {target} failed ({why}) and putting {previous} back failed "
            f"too ({_summary(again)}): the listener forwards to "
            f"{_describe_serving(*where)}. Fix the cause, set {ACTIVE_KEY} to the "
            f"color that should serve and run 'pulumi up -s {stack}'"
        )
    return AwsSwitchError(
        f"switching {stack} to {target} failed ({why}); {ACTIVE_KEY} is {previous} again "
        f"and the listener forwards to {_describe_serving(*where)}"
    )


def _describe_serving(client: Any, listener: str, groups: dict[str, str]) -> str:
    """What the listener serves now, in words, whatever can still be read."""
    try:
        color = serving_color(client, listener, groups)
    except Exception as exc:
        return f"an unknown color (the listener could not be read: {_summary(exc)})"
    return color or "neither color alone (check its weights)"


def _color(color: str) -> Color:
    if color not in COLORS:
        raise AwsSwitchError(f"unknown color {color!r}: blue or green")
    return cast(Color, color)


def _output(outputs: dict[str, Any], key: str, stack: str) -> Any:
    if key not in outputs:
        raise AwsSwitchError(
            f"stack {stack} has no output {key!r}: run 'pulumi up -s {stack}' once with this "
            "version of infra/ (it exports targetGroupArns and httpsListenerArn)"
        )
    return outputs[key]


def plain_outputs(outputs: dict[str, auto.OutputValue]) -> dict[str, Any]:
    """The stack outputs' values (secrets included, in memory only)."""
    return {key: output.value for key, output in outputs.items()}


def _read(what: str, action: Callable[[], T]) -> T:
    """``action()``, with a failure to reach Pulumi or AWS turned into a clear error."""
    try:
        return action()
    except READ_ERRORS as exc:
        raise AwsSwitchError(f"{what} failed, nothing was changed: {_summary(exc)}") from exc


def _lines(progress: Progress) -> Callable[[str], None]:
    """``pulumi up``'s output, line by line, to ``progress``."""

    def show(text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                progress(line.rstrip())

    return show


def _summary(exc: BaseException) -> str:
    """One line of an error: the last meaningful line (pulumi's error comes last)."""
    lines = [line.strip() for line in str(exc).splitlines()]
    useful = [
        line for line in lines if line and not re.fullmatch(r"(code: -?\d+|stdout:|stderr:)", line)
    ]
    return (useful[-1] if useful else type(exc).__name__)[:300]
