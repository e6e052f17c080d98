"""Security groups that mirror the hosts' firewalls (guide: Firewall Configuration)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

HTTPS, HTTP, SSH, POSTGRES, REDIS = 443, 80, 22, 5432, 6379


@dataclass(frozen=True, kw_only=True)
class SecurityGroupsArgs:
    """``admin_cidrs`` reach port 22 on the hosts only when ``ssh_from_admins``
    (``aws.access: bastion``); with SSM there is no inbound SSH at all."""

    vpc_id: pulumi.Input[str]
    admin_cidrs: list[str]
    ssh_from_admins: bool
    tags: dict[str, str]


class SecurityGroups(pulumi.ComponentResource):
    """Four groups, each admitting only its one upstream:

    internet → ``lb`` (443, and 80 for the redirect) → ``hosts`` (443) → ``database``
    (5432) and ``cache`` (6379). The service's 3000 is published on 127.0.0.1 only, so
    no rule names it (the guide's ``ufw deny 3000`` does not stop a Docker-published port).

    Outputs: ``lb_id``, ``hosts_id``, ``database_id``, ``cache_id`` (security group ids).
    """

    def __init__(
        self, name: str, args: SecurityGroupsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mcpdeploy:aws:SecurityGroups", name, None, opts)
        self._child = pulumi.ResourceOptions(parent=self)
        self._tags = args.tags

        def group(role: str, description: str) -> aws.ec2.SecurityGroup:
            # No inline rules: the separate rule resources below are the whole policy, and
            # the provider removes AWS's default allow-all egress.
            return aws.ec2.SecurityGroup(
                f"{name}-{role}",
                vpc_id=args.vpc_id,
                description=description,
                tags={**args.tags, "Name": f"{name}-{role}"},
                opts=self._child,
            )

        lb = group("lb", "ALB: HTTPS (and HTTP redirect) from the internet")
        hosts = group("hosts", "App hosts: HTTPS from the ALB only")
        database = group("database", "RDS PostgreSQL: from the app hosts only")
        cache = group("cache", "ElastiCache Redis: from the app hosts only")

        for port in (HTTPS, HTTP):
            self._ingress(f"{name}-lb-{port}-v4", lb, port, cidr_ipv4="0.0.0.0/0")
            self._ingress(f"{name}-lb-{port}-v6", lb, port, cidr_ipv6="::/0")
        self._egress(f"{name}-lb-to-hosts", lb, HTTPS, group_id=hosts.id)

        self._ingress(f"{name}-hosts-from-lb", hosts, HTTPS, group_id=lb.id)
        if args.ssh_from_admins:
            for i, cidr in enumerate(args.admin_cidrs):
                family = {"cidr_ipv6": cidr} if ":" in cidr else {"cidr_ipv4": cidr}
                self._ingress(f"{name}-hosts-ssh-{i}", hosts, SSH, **family)
        self._egress(f"{name}-hosts-to-database", hosts, POSTGRES, group_id=database.id)
        self._egress(f"{name}-hosts-to-cache", hosts, REDIS, group_id=cache.id)
        # apt (Debian's mirrors are plain HTTP, signed), ECR, SSM and Secrets Manager (HTTPS).
        for port in (HTTPS, HTTP):
            self._egress(f"{name}-hosts-out-{port}", hosts, port, cidr_ipv4="0.0.0.0/0")

        self._ingress(f"{name}-database-from-hosts", database, POSTGRES, group_id=hosts.id)
        self._ingress(f"{name}-cache-from-hosts", cache, REDIS, group_id=hosts.id)

        self.lb_id = lb.id
        self.hosts_id = hosts.id
        self.database_id = database.id
        self.cache_id = cache.id
        self.register_outputs(
            {
                "lb_id": self.lb_id,
                "hosts_id": self.hosts_id,
                "database_id": self.database_id,
                "cache_id": self.cache_id,
            }
        )

    def _ingress(
        self,
        rule: str,
        group: aws.ec2.SecurityGroup,
        port: int,
        group_id: pulumi.Input[str] | None = None,
        **cidr: str,
    ) -> None:
        self._rule(aws.vpc.SecurityGroupIngressRule, rule, group, port, group_id, **cidr)

    def _egress(
        self,
        rule: str,
        group: aws.ec2.SecurityGroup,
        port: int,
        group_id: pulumi.Input[str] | None = None,
        **cidr: str,
    ) -> None:
        self._rule(aws.vpc.SecurityGroupEgressRule, rule, group, port, group_id, **cidr)

    def _rule(
        self,
        kind: type[aws.vpc.SecurityGroupIngressRule] | type[aws.vpc.SecurityGroupEgressRule],
        rule: str,
        group: aws.ec2.SecurityGroup,
        port: int,
        group_id: pulumi.Input[str] | None,
        **cidr: str,
    ) -> None:
        """One TCP port, to or from another group (``group_id``) or a CIDR (``cidr_ipv4=``)."""
        kind(
            rule,
            security_group_id=group.id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            referenced_security_group_id=group_id,
            tags=self._tags,
            opts=self._child,
            **cidr,
        )
