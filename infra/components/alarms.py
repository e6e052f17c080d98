"""Alarms: the guide's alert thresholds as CloudWatch alarms, sent to an SNS topic."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

ALB = "AWS/ApplicationELB"
ERROR_RATE_PERCENT = 5  # guide: alert when error_rate > 0.05
P99_SECONDS = 5  # guide: alert on response times > 5000 ms
GIB = 1024**3


@dataclass(frozen=True, kw_only=True)
class AlarmsArgs:
    """What to watch (ALB, target groups by color, RDS instance, Redis nodes) and where
    to send alerts: ``webhook`` (HTTPS, often a Pulumi secret) and/or ``email``."""

    lb_arn_suffix: pulumi.Input[str]
    target_group_arn_suffixes: dict[str, pulumi.Output[str]]
    db_identifier: pulumi.Input[str]
    db_storage_gb: int
    cache_member_ids: list[str]
    webhook: pulumi.Input[str] | None
    email: str | None
    tags: dict[str, str]


class Alarms(pulumi.ComponentResource):
    """An encrypted SNS topic with the configured subscriptions, and alarms for:
    ALB 5xx rate > 5 % (metric math over ELB and target 5xx / requests), p99 target
    response time > 5 s, unhealthy hosts > 0 in either color (an unhealthy idle color
    must not be switched to), RDS CPU > 80 % and free storage < 10 %, Redis memory > 80 %.

    Outputs: ``topic_arn``, ``alarm_names``.
    """

    def __init__(
        self, name: str, args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mcpdeploy:aws:Alarms", name, None, opts)
        self._child = pulumi.ResourceOptions(parent=self)
        self._tags = args.tags
        topic = aws.sns.Topic(
            name, kms_master_key_id="alias/aws/sns", tags=args.tags, opts=self._child
        )
        self._actions = [topic.arn]
        if args.webhook is not None:
            # SNS posts a SubscriptionConfirmation first: the endpoint must confirm it.
            aws.sns.TopicSubscription(
                f"{name}-webhook",
                topic=topic.arn,
                protocol="https",
                endpoint=args.webhook,
                opts=self._child,
            )
        if args.email is not None:
            aws.sns.TopicSubscription(
                f"{name}-email",
                topic=topic.arn,
                protocol="email",
                endpoint=args.email,
                opts=self._child,
            )

        lb = {"LoadBalancer": args.lb_arn_suffix}
        self.alarm_names: list[pulumi.Output[str]] = []

        def metric(query_id: str, metric_name: str) -> aws.cloudwatch.MetricAlarmMetricQueryArgs:
            return aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id=query_id,
                metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                    namespace=ALB, metric_name=metric_name, dimensions=lb, period=60, stat="Sum"
                ),
                return_data=False,
            )

        self._alarm(
            f"{name}-5xx-rate",
            "ALB 5xx responses above 5 % of requests",
            threshold=ERROR_RATE_PERCENT,
            metric_queries=[
                metric("elb", "HTTPCode_ELB_5XX_Count"),
                metric("target", "HTTPCode_Target_5XX_Count"),
                metric("requests", "RequestCount"),
                aws.cloudwatch.MetricAlarmMetricQueryArgs(
                    id="rate",
                    expression="100 * (FILL(elb, 0) + FILL(target, 0)) / requests",
                    label="5xx percent",
                    return_data=True,
                ),
            ],
        )
        self._alarm(
            f"{name}-p99-latency",
            "p99 target response time above 5 s",
            threshold=P99_SECONDS,
            namespace=ALB,
            metric_name="TargetResponseTime",
            extended_statistic="p99",
            dimensions=lb,
        )
        for color, suffix in args.target_group_arn_suffixes.items():
            self._alarm(
                f"{name}-unhealthy-{color}",
                f"{color} hosts failing /health/mcp",
                threshold=0,
                namespace=ALB,
                metric_name="UnHealthyHostCount",
                statistic="Maximum",
                dimensions={**lb, "TargetGroup": suffix},
            )
        db = {"DBInstanceIdentifier": args.db_identifier}
        self._alarm(
            f"{name}-db-cpu",
            "RDS CPU above 80 % for 15 minutes",
            threshold=80,
            namespace="AWS/RDS",
            metric_name="CPUUtilization",
            dimensions=db,
            period=300,
            evaluation_periods=3,
        )
        self._alarm(
            f"{name}-db-storage",
            "RDS free storage below 10 %",
            threshold=args.db_storage_gb * GIB // 10,
            comparison="LessThanThreshold",
            namespace="AWS/RDS",
            metric_name="FreeStorageSpace",
            statistic="Minimum",
            dimensions=db,
            period=300,
        )
        for member in args.cache_member_ids:
            self._alarm(
                f"{name}-redis-memory-{member[-3:]}",
                f"Redis {member} memory above 80 %",
                threshold=80,
                namespace="AWS/ElastiCache",
                metric_name="DatabaseMemoryUsagePercentage",
                dimensions={"CacheClusterId": member},
                period=300,
            )

        self.topic_arn = topic.arn
        self.register_outputs({"topic_arn": self.topic_arn, "alarm_names": self.alarm_names})

    def _alarm(
        self,
        name: str,
        description: str,
        threshold: float,
        comparison: str = "GreaterThanThreshold",
        period: int = 60,
        evaluation_periods: int = 5,
        statistic: str | None = None,
        **metric: object,
    ) -> None:
        uses_math = "metric_queries" in metric
        alarm = aws.cloudwatch.MetricAlarm(
            name,
            alarm_description=description,
            comparison_operator=comparison,
            threshold=threshold,
            evaluation_periods=evaluation_periods,
            # 3 of 5 minutes: one bad minute is noise, three are an incident.
            datapoints_to_alarm=min(3, evaluation_periods),
            period=None if uses_math else period,
            statistic=None
            if uses_math or "extended_statistic" in metric
            else (statistic or "Average"),
            treat_missing_data="notBreaching",
            alarm_actions=self._actions,
            ok_actions=self._actions,
            tags=self._tags,
            opts=self._child,
            **metric,
        )
        self.alarm_names.append(alarm.name)
