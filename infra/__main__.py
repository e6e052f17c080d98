"""The AWS target (DESIGN.md): ``pulumi up -s <stack>`` with ``Pulumi.<stack>.yaml``.

client ─TLS─> ALB (ACM) ─> blue|green target group ─> app hosts (nginx 443, internal CA)
─> RDS PostgreSQL, ElastiCache Redis; ECR image, Secrets Manager, backups, alarms."""

import pulumi
from components import (
    alarms,
    backups,
    cache,
    database,
    hosts,
    loadbalancer,
    network,
    registry,
    releases,
    secrets,
    security,
    tls,
)

from mcpdeploy.settings import PROJECT, Secret, SettingsError, load_settings, project_root

stack = pulumi.get_stack()
settings = load_settings(stack)
aws = settings.aws
if aws.ssh_public_key is None:
    missing = ("mcpdeploy:aws.sshPublicKey", "(missing)", "required on AWS: the hosts' SSH key")
    raise SettingsError(f"Pulumi.{stack}.yaml", [missing])
name, prefix = f"{PROJECT}-{stack}", f"/{PROJECT}/{stack}"
tags = {"Project": PROJECT, "Stack": stack}
# The schema checked the shape of a `secure:` value; only the Pulumi CLI can decrypt it.
webhook = (
    pulumi.Config().require_secret("alertWebhook")
    if isinstance(settings.alert_webhook, Secret)
    else settings.alert_webhook and str(settings.alert_webhook)
)

net = network.Network(name, network.NetworkArgs(
    aws.vpc_cidr, aws.availability_zones, aws.nat_gateways == "perAz",
    settings.retention.audit_log_days, tags,
))  # fmt: skip
groups = security.SecurityGroups(name, security.SecurityGroupsArgs(
    net.vpc_id, [str(c) for c in settings.admin_cidrs], aws.access == "bastion", tags,
))  # fmt: skip
vault = secrets.Secrets(name, secrets.SecretsArgs(prefix, tags))
certs = tls.Tls(name, tls.TlsArgs(settings.domain, aws.hosted_zone, prefix, tags))
db = database.Database(name, database.DatabaseArgs(
    name, aws.database, net.private_subnet_ids, groups.database_id, tags,
))  # fmt: skip
redis = cache.Cache(name, cache.CacheArgs(
    name, aws.cache, net.private_subnet_ids, groups.cache_id, vault.redis_auth_token, tags,
))  # fmt: skip
releases.Releases(name, releases.ReleasesArgs(stack, tags))
backup = backups.Backups(name, backups.BackupsArgs(settings.retention.backup_days, tags))
ecr = registry.Registry(name, registry.RegistryArgs(
    f"{PROJECT}/{stack}/mcp-service", project_root() / "app_image",
    registry.release_tag(settings.image), aws.ecr_keep_images, tags,
))  # fmt: skip
alb = loadbalancer.LoadBalancer(name, loadbalancer.LoadBalancerArgs(
    net.vpc_id, net.public_subnet_ids, groups.lb_id, certs.certificate_arn,
    settings.active_color, aws.canary_weight, aws.deregistration_delay_seconds,
    settings.timeouts.proxy_read_seconds + 30, settings.retention.audit_log_days,
    settings.domain, certs.zone_id, tags,
))  # fmt: skip
app = hosts.Hosts(name, hosts.HostsArgs(
    settings.app_hosts_per_color, aws.app_instance_type, aws.app_root_volume_gb,
    net.private_subnet_ids, groups.hosts_id, alb.target_group_arns, aws.ssh_public_key,
    [*vault.arns.values(), certs.nginx_secret_arn], ecr.repository_arn,
    backup.bucket_arn, backup.kms_key_arn, tags,
))  # fmt: skip
alarms.Alarms(name, alarms.AlarmsArgs(
    alb.arn_suffix, alb.target_group_arn_suffixes, db.identifier,
    aws.database.allocated_storage_gb, redis.member_ids, webhook, aws.alert_email, tags,
))  # fmt: skip

pulumi.export("activeColor", settings.active_color)
pulumi.export("hosts", app.by_color)
pulumi.export("accessMode", aws.access)
pulumi.export("albDnsName", alb.dns_name)
# What mcpdeploy/aws_switch.py checks: each color's target health, where the listener sends.
pulumi.export("targetGroupArns", alb.target_group_arns)
pulumi.export("httpsListenerArn", alb.https_listener_arn)
pulumi.export("certificateStatus", certs.status)
pulumi.export("certificateValidationRecords", certs.validation_records)
pulumi.export("internalCaCert", certs.ca_cert_pem)
pulumi.export("databaseEndpoint", db.endpoint)
pulumi.export("databaseMasterSecretArn", db.master_secret_arn)
pulumi.export("redisEndpoint", redis.primary_endpoint)
pulumi.export("secretArns", {**vault.arns, "nginx-tls": certs.nginx_secret_arn})
pulumi.export("imageRef", ecr.image_ref)
pulumi.export("backupBucket", backup.bucket)
