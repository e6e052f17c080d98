"""Load balancer: the ALB, one target group per color, the listener picks the color."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mcpdeploy.settings import COLORS, Color

from . import secure_bucket

# TLS 1.3 and 1.2 with forward-secret AEAD ciphers only (guide: ssl_protocols TLSv1.2 TLSv1.3).
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
HEALTH_PATH = "/health/mcp"  # readiness: 200 only when PostgreSQL and Redis answer


@dataclass(frozen=True, kw_only=True)
class LoadBalancerArgs:
    """``canary_weight`` is the percent of requests sent to the idle color (0: none)."""

    vpc_id: pulumi.Input[str]
    subnet_ids: list[pulumi.Output[str]]
    security_group_id: pulumi.Input[str]
    certificate_arn: pulumi.Input[str]
    active_color: Color
    canary_weight: int
    deregistration_delay: int
    idle_timeout: int
    log_days: int
    domain: str
    zone_id: str | None
    tags: dict[str, str]


class LoadBalancer(pulumi.ComponentResource):
    """An internet-facing ALB in the public subnets with access logs to S3.

    HTTPS listener (ACM certificate, TLS 1.2+/1.3 policy) forwards to the active color's
    target group, with ``canary_weight`` percent to the idle one; HTTP answers 301 to
    HTTPS. Each color's target group reaches its hosts' nginx on 443 and checks
    ``/health/mcp``. With a hosted zone the domain gets an alias record to the ALB.

    Outputs: ``dns_name``, ``zone_id`` (the ALB's), ``arn_suffix``, ``target_group_arns``
    and ``target_group_arn_suffixes`` (color → value), ``https_listener_arn`` (what a
    switch checks), ``logs_bucket``.
    """

    def __init__(
        self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mcpdeploy:aws:LoadBalancer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        elb_account = aws.elb.get_service_account(opts=pulumi.InvokeOptions(parent=self))
        logs = secure_bucket(
            f"{name}-logs",
            self,
            args.log_days,
            args.tags,
            grants=[
                # Regions older than 2022-08 deliver as the regional ELB account, newer
                # ones as the log delivery service.
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": elb_account.arn},
                    "Action": "s3:PutObject",
                },
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
                    "Action": "s3:PutObject",
                },
            ],
        )
        alb = aws.lb.LoadBalancer(
            name,
            load_balancer_type="application",
            internal=False,
            subnets=args.subnet_ids,
            security_groups=[args.security_group_id],
            drop_invalid_header_fields=True,
            enable_deletion_protection=False,
            # Long enough for the MCP proxy read timeout; SSE streams send keep-alives.
            idle_timeout=args.idle_timeout,
            access_logs=aws.lb.LoadBalancerAccessLogsArgs(
                bucket=logs.bucket, enabled=True, prefix="alb"
            ),
            tags=args.tags,
            opts=child,
        )
        groups = {
            color: aws.lb.TargetGroup(
                f"{name}-{color}",
                vpc_id=args.vpc_id,
                target_type="instance",
                protocol="HTTPS",
                port=443,
                deregistration_delay=args.deregistration_delay,
                health_check=aws.lb.TargetGroupHealthCheckArgs(
                    protocol="HTTPS",
                    path=HEALTH_PATH,
                    matcher="200",
                    interval=15,
                    timeout=5,
                    healthy_threshold=2,
                    unhealthy_threshold=3,
                ),
                tags={**args.tags, "Color": color},
                opts=child,
            )
            for color in COLORS
        }
        idle_weight = args.canary_weight
        weights = {
            color: (100 - idle_weight if color == args.active_color else idle_weight)
            for color in COLORS
        }
        https = aws.lb.Listener(
            f"{name}-https",
            load_balancer_arn=alb.arn,
            port=443,
            protocol="HTTPS",
            ssl_policy=TLS_POLICY,
            certificate_arn=args.certificate_arn,
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(
                    type="forward",
                    forward=aws.lb.ListenerDefaultActionForwardArgs(
                        target_groups=[
                            aws.lb.ListenerDefaultActionForwardTargetGroupArgs(
                                arn=groups[color].arn, weight=weights[color]
                            )
                            for color in COLORS
                        ]
                    ),
                )
            ],
            tags=args.tags,
            opts=child,
        )
        aws.lb.Listener(
            f"{name}-http",
            load_balancer_arn=alb.arn,
            port=80,
            protocol="HTTP",
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(
                    type="redirect",
                    redirect=aws.lb.ListenerDefaultActionRedirectArgs(
                        protocol="HTTPS", port="443", status_code="HTTP_301"
                    ),
                )
            ],
            tags=args.tags,
            opts=child,
        )
        if args.zone_id:
            aws.route53.Record(
                f"{name}-alias",
                zone_id=args.zone_id,
                name=args.domain,
                type="A",
                aliases=[
                    aws.route53.RecordAliasArgs(
                        name=alb.dns_name, zone_id=alb.zone_id, evaluate_target_health=True
                    )
                ],
                opts=child,
            )

        self.dns_name = alb.dns_name
        self.zone_id = alb.zone_id
        self.arn_suffix = alb.arn_suffix
        self.target_group_arns = {color: tg.arn for color, tg in groups.items()}
        self.target_group_arn_suffixes = {color: tg.arn_suffix for color, tg in groups.items()}
        self.https_listener_arn = https.arn
        self.logs_bucket = logs.bucket
        self.register_outputs(
            {
                "dns_name": self.dns_name,
                "zone_id": self.zone_id,
                "arn_suffix": self.arn_suffix,
                "target_group_arns": self.target_group_arns,
                "target_group_arn_suffixes": self.target_group_arn_suffixes,
                "https_listener_arn": self.https_listener_arn,
                "logs_bucket": self.logs_bucket,
            }
        )
