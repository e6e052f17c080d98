"""The ALB (guide: Nginx Configuration — listen 443 ssl, TLSv1.2/1.3, HTTP → HTTPS;
SSL Certificate; Log Monitoring)."""

from __future__ import annotations

from pulumi_policy import (
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from .config import schema, setting, string_list
from .resources import for_types, listed, nested, of_type, related

LOAD_BALANCERS = ("aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer")
LISTENERS = ("aws:lb/listener:Listener", "aws:alb/listener:Listener")
WHERE = "in infra/components/loadbalancer.py"

TLS = schema(
    approvedTlsPolicies=string_list(
        "ELB security policies an HTTPS listener may use (TLS 1.2+, forward secrecy)",
        [
            "ELBSecurityPolicy-TLS13-1-2-2021-06",
            "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
            "ELBSecurityPolicy-TLS13-1-3-2021-06",
            "ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04",
            "ELBSecurityPolicy-TLS13-1-3-FIPS-2023-04",
        ],
    ),
)


def _application(lb_type: object) -> bool:
    # The provider's default load balancer type is "application".
    return lb_type in (None, "application")


def _tls_policy(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.props.get("protocol") not in ("HTTPS", "TLS"):
        return
    approved = list(setting(args, TLS, "approvedTlsPolicies"))
    policy = args.props.get("sslPolicy")
    if policy not in approved:
        shown = policy or "unset (AWS picks ELBSecurityPolicy-2016-08, TLS 1.0)"
        report(
            f"Listener {args.name} uses TLS policy {shown}: set ssl_policy to one of "
            f"{', '.join(approved)} {WHERE}.",
            None,
        )
    if not args.props.get("certificateArn"):
        report(
            f"Listener {args.name} has no certificate: set certificate_arn to the ACM "
            f"certificate (Tls component's certificate_arn) {WHERE}.",
            None,
        )


def _https_listener(args: StackValidationArgs, report: ReportViolation) -> None:
    listeners = of_type(args.resources, *LISTENERS)
    for lb in of_type(args.resources, *LOAD_BALANCERS):
        if not _application(lb.props.get("loadBalancerType")):
            continue
        own = [
            listener
            for listener in listeners
            if lb in related(listener, "loadBalancerArn", [lb], "arn", "id")
        ]
        if not any(listener.props.get("protocol") == "HTTPS" for listener in own):
            report(
                f"Load balancer {lb.name} has no HTTPS listener: add an aws.lb.Listener on "
                f"443 with protocol HTTPS, an approved ssl_policy and the ACM certificate "
                f"{WHERE}.",
                lb.urn,
            )


def _http_redirects(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.props.get("protocol") != "HTTP":
        return
    actions = listed(args.props.get("defaultActions"))
    redirects = [
        a
        for a in actions
        if a.get("type") == "redirect" and nested(a.get("redirect")).get("protocol") == "HTTPS"
    ]
    if not actions or len(redirects) != len(actions):
        report(
            f"HTTP listener {args.name} serves content: its default action must be "
            'type="redirect" with redirect protocol="HTTPS", port="443", '
            f'status_code="HTTP_301" {WHERE}.',
            None,
        )


def _access_logs(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if not _application(args.props.get("loadBalancerType")):
        return
    logs = nested(args.props.get("accessLogs"))
    if logs.get("enabled") is not True or not logs.get("bucket"):
        report(
            f"Load balancer {args.name} keeps no access logs: set access_logs with "
            f"enabled=True and the logs bucket {WHERE}.",
            None,
        )


POLICIES = [
    ResourceValidationPolicy(
        name="alb-tls-policy",
        description="HTTPS listeners use an approved TLS policy and a certificate.",
        validate=for_types(LISTENERS, _tls_policy),
        config_schema=TLS,
    ),
    StackValidationPolicy(
        name="alb-https-listener",
        description="Every application load balancer has an HTTPS listener.",
        validate=_https_listener,
    ),
    ResourceValidationPolicy(
        name="alb-http-redirects-only",
        description="HTTP listeners only redirect to HTTPS.",
        validate=for_types(LISTENERS, _http_redirects),
    ),
    ResourceValidationPolicy(
        name="alb-access-logs",
        description="Application load balancers write access logs.",
        validate=for_types(LOAD_BALANCERS, _access_logs),
    ),
]
