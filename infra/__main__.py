"""The AWS target (docs/aws.md): ``pulumi up -s <stack>`` with ``Pulumi.<stack>.yaml``.

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
    cidr=aws.vpc_cidr,
    az_count=aws.availability_zones,
    nat_per_az=aws.nat_gateways == "perAz",
    flow_log_days=settings.retention.audit_log_days,
    tags=tags,
))  # fmt: skip
groups = security.SecurityGroups(name, security.SecurityGroupsArgs(
    vpc_id=net.vpc_id,
    admin_cidrs=[str(c) for c in settings.admin_cidrs],
    ssh_from_admins=aws.access == "bastion",
    tags=tags,
))  # fmt: skip
vault = secrets.Secrets(name, secrets.SecretsArgs(prefix=prefix, tags=tags))
certs = tls.Tls(name, tls.TlsArgs(
    domain=settings.domain, hosted_zone=aws.hosted_zone, secret_prefix=prefix, tags=tags,
))  # fmt: skip
db = database.Database(name, database.DatabaseArgs(
    identifier=name,
    settings=aws.database,
    subnet_ids=net.private_subnet_ids,
    security_group_id=groups.database_id,
    tags=tags,
))  # fmt: skip
redis = cache.Cache(name, cache.CacheArgs(
    identifier=name,
    settings=aws.cache,
    subnet_ids=net.private_subnet_ids,
    security_group_id=groups.cache_id,
    auth_token=vault.redis_auth_token,
    tags=tags,
))  # fmt: skip
releases.Releases(name, releases.ReleasesArgs(stack=stack, tags=tags))
backup = backups.Backups(name, backups.BackupsArgs(
    retention_days=settings.retention.backup_days, tags=tags,
))  # fmt: skip
ecr = registry.Registry(name, registry.RegistryArgs(
    repository=f"{PROJECT}/{stack}/mcp-service",
    context=project_root() / "app_image",
    tag=registry.release_tag(settings.image),
    keep=aws.ecr_keep_images,
    tags=tags,
))  # fmt: skip
alb = loadbalancer.LoadBalancer(name, loadbalancer.LoadBalancerArgs(
    vpc_id=net.vpc_id,
    subnet_ids=net.public_subnet_ids,
    security_group_id=groups.lb_id,
    certificate_arn=certs.certificate_arn,
    active_color=settings.active_color,
    canary_weight=aws.canary_weight,
    deregistration_delay=aws.deregistration_delay_seconds,
    idle_timeout=settings.timeouts.proxy_read_seconds + 30,
    log_days=settings.retention.audit_log_days,
    domain=settings.domain,
    zone_id=certs.zone_id,
    tags=tags,
))  # fmt: skip
app = hosts.Hosts(name, hosts.HostsArgs(
    per_color=settings.app_hosts_per_color,
    instance_type=aws.app_instance_type,
    root_volume_gb=aws.app_root_volume_gb,
    subnet_ids=net.private_subnet_ids,
    security_group_id=groups.hosts_id,
    target_group_arns=alb.target_group_arns,
    ssh_public_key=aws.ssh_public_key,
    secret_arns=[*vault.arns.values(), certs.nginx_secret_arn],
    repository_arn=ecr.repository_arn,
    backup_bucket_arn=backup.bucket_arn,
    backup_key_arn=backup.kms_key_arn,
    tags=tags,
))  # fmt: skip
alarms.Alarms(name, alarms.AlarmsArgs(
    lb_arn_suffix=alb.arn_suffix,
    target_group_arn_suffixes=alb.target_group_arn_suffixes,
    db_identifier=db.identifier,
    db_storage_gb=aws.database.allocated_storage_gb,
    cache_member_ids=redis.member_ids,
    webhook=webhook,
    email=aws.alert_email,
    tags=tags,
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
