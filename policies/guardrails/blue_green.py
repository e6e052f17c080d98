"""Blue-green and its watch (guide: Blue-Green Deployment; Alerting — error rate > 5 %,
response time > 5000 ms)."""

from __future__ import annotations

from pulumi_policy import (
    PolicyResource,
    ReportViolation,
    StackValidationArgs,
    StackValidationPolicy,
)

from .config import schema, setting, string_list
from .resources import listed, nested, of_type

TARGET_GROUPS = ("aws:lb/targetGroup:TargetGroup", "aws:alb/targetGroup:TargetGroup")
LISTENERS = ("aws:lb/listener:Listener", "aws:alb/listener:Listener")
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
ERROR_METRICS = ("HTTPCode_Target_5XX_Count", "HTTPCode_ELB_5XX_Count")
LATENCY_METRIC = "TargetResponseTime"

COLORS = schema(colors=string_list("The deployment colors", ["blue", "green"]))


def _color(group: PolicyResource) -> str | None:
    return nested(group.props.get("tags")).get("Color")


def _weights(listener: PolicyResource) -> list[tuple[str, float]]:
    """(target group ARN, weight) the listener's default forward actions send traffic to."""
    sent: list[tuple[str, float]] = []
    for action in listed(listener.props.get("defaultActions")):
        if action.get("type") != "forward":
            continue
        groups = listed(nested(action.get("forward")).get("targetGroups"))
        if groups:
            sent += [(str(g.get("arn")), float(g.get("weight") or 0)) for g in groups]
        elif action.get("targetGroupArn"):
            sent.append((str(action.get("targetGroupArn")), 100.0))
    return sent


def _one_active_color(args: StackValidationArgs, report: ReportViolation) -> None:
    color_of = {str(g.props.get("arn")): _color(g) for g in of_type(args.resources, *TARGET_GROUPS)}
    forwarding = [(lst, _weights(lst)) for lst in of_type(args.resources, *LISTENERS)]
    forwarding = [(lst, sent) for lst, sent in forwarding if sent]
    if not forwarding:
        report(
            "No listener forwards to a color's target group: the HTTPS listener's default "
            "action must forward to the blue and green target groups "
            "(infra/components/loadbalancer.py).",
            None,
        )
    for listener, sent in forwarding:
        total = sum(weight for _, weight in sent)
        shares: dict[str | None, float] = {}
        for arn, weight in sent:
            color = color_of.get(arn)
            shares[color] = shares.get(color, 0.0) + weight
        # The active color takes most of the traffic; a canary share goes to the idle one.
        active = [c for c, w in shares.items() if total and w > total / 2]
        if len(active) != 1 or active[0] is None:
            shown = ", ".join(f"{c or 'untagged'}={w:g}" for c, w in shares.items())
            report(
                f"Listener {listener.name} has no single active color ({shown}): set "
                "mcpdeploy:activeColor to one color and aws.canaryWeight below 50 in "
                "Pulumi.<stack>.yaml, so one tagged target group takes most of the traffic.",
                listener.urn,
            )


def _group_per_color(args: StackValidationArgs, report: ReportViolation) -> None:
    groups = of_type(args.resources, *TARGET_GROUPS)
    for color in setting(args, COLORS, "colors"):
        tagged = [g for g in groups if _color(g) == color]
        if len(tagged) != 1:
            report(
                f"{len(tagged)} target groups are tagged Color={color}; a switch needs exactly "
                f"one per color: create one aws.lb.TargetGroup tagged Color={color} "
                "(infra/components/loadbalancer.py).",
                None,
            )


def _metrics(alarm: PolicyResource) -> set[str]:
    queries = listed(alarm.props.get("metricQueries"))
    named = [nested(q.get("metric")).get("metricName") for q in queries]
    return {str(m) for m in [alarm.props.get("metricName"), *named] if m}


def _alarms(args: StackValidationArgs, report: ReportViolation) -> None:
    alarms = [a for a in of_type(args.resources, ALARM) if listed(a.props.get("alarmActions"))]
    wanted = {
        "5xx error rate": ("HTTPCode_Target_5XX_Count or HTTPCode_ELB_5XX_Count", ERROR_METRICS),
        "latency": (LATENCY_METRIC, (LATENCY_METRIC,)),
    }
    for what, (shown, metrics) in wanted.items():
        if not any(_metrics(a) & set(metrics) for a in alarms):
            report(
                f"No alarm with alarm_actions watches the {what}: add an "
                f"aws.cloudwatch.MetricAlarm on AWS/ApplicationELB {shown} that notifies the "
                "alerts topic (infra/components/alarms.py).",
                None,
            )


POLICIES = [
    StackValidationPolicy(
        name="blue-green-one-active-color",
        description="The listener sends most traffic to exactly one color.",
        validate=_one_active_color,
    ),
    StackValidationPolicy(
        name="blue-green-target-group-per-color",
        description="There is exactly one target group per color.",
        validate=_group_per_color,
        config_schema=COLORS,
    ),
    StackValidationPolicy(
        name="alarms-5xx-and-latency",
        description="Alarms that notify someone watch the ALB 5xx rate and latency.",
        validate=_alarms,
    ),
]
