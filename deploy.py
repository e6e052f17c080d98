"""pyinfra entry point: which roles run on which hosts.

    pyinfra hosts/<stack>.py deploy.py

Each host's ``stack`` names the settings (Pulumi.<stack>.yaml); its ``role`` (edge, app,
data) and the inventory's groups decide its firewall allow-list.
"""

import functools
import json

from pydantic import HttpUrl
from pyinfra import host, inventory, local
from pyinfra.operations import files

from mcpdeploy.credentials import (
    DATABASE,
    OWNER_ROLE,
    RUNTIME_ROLE,
    host_tls,
    rds_ca_bundle,
    rds_master_credentials,
    stack_ca,
    stack_credentials,
)
from mcpdeploy.images import release_image
from mcpdeploy.lab.topology import REGISTRY_NAME, REGISTRY_PORT
from mcpdeploy.settings import load_settings
from mcpdeploy.switch import other_color
from roles.app import CONTAINER as APP_CONTAINER
from roles.app import CONTAINER_CA_FILE, app, service_environment
from roles.app import PORT as APP_PORT
from roles.base import base
from roles.data import data, rds, service_urls
from roles.docker import docker_engine
from roles.edge import EXTRA_NAMES
from roles.firewall import firewall, firewall_rules
from roles.logs import APP_NGINX_LOGS, EDGE_NGINX_LOGS, SERVICE_LOGS, log_collector, log_forwarding
from roles.maintenance import (
    alert_receiver,
    alerting,
    audit_cleanup,
    backups,
    certificate_check,
    health_check,
    performance_check,
)
from roles.nginx import nginx

settings = load_settings(host.data.stack)

base(
    deploy_user_name=settings.deploy_user,
    deploy_authorized_keys=host.data.deploy_authorized_keys,
    journald_max_use=settings.journald_max_use,
)
firewall(
    firewall_rules(
        host.data.role,
        admin_cidrs=settings.admin_cidrs,
        edge_addresses=[edge.data.address for edge in inventory.get_group("edge", [])],
        app_addresses=[app.data.address for app in inventory.get_group("app", [])],
        # AWS: the ALB, somewhere in the VPC (hosts/aws.py); the lab's edge is an edge host.
        load_balancer_cidrs=host.data.get("load_balancer_cidrs", []),
        collector_ports=settings.maintenance.collector_ports(),
    )
)
credentials = stack_credentials(host.data.stack, host.data.credentials)

# Data hosts: PostgreSQL and Redis (lab and self-hosted; RDS and ElastiCache on AWS).
if host.data.role == "data":
    data(
        address=host.data.address,
        app_addresses=[app.data.address for app in inventory.get_group("app", [])],
        # Clients verify the name they connect to: the app hosts use the address.
        tls=host_tls(
            host.data.stack, host.data.credentials, host.name, [host.name, host.data.address]
        ),
        credentials=credentials,
        settings=settings.data,
    )

# pyinfra runs one operation at a time on every host it applies to, in waves: the data
# hosts' and app hosts' sections would interleave. An operation every host runs from one
# call site is one step for all of them, so nothing below starts before the data hosts
# are done (the app hosts' migrations need their database and roles).
files.directory(name="Wait until the data hosts are deployed", path="/etc/mcpdeploy")

# App hosts: Docker, the service, nginx.
if host.data.role == "app":
    # Each color runs its own release (blueImage/greenImage, written by mcpdeploy release);
    # the other color's image stays on the host too: a rollback never lacks it.
    image = release_image(settings.image_for(host.data.color))
    rollback_image = release_image(settings.image_for(other_color(host.data.color)))
    registry = image.split("/", 1)[0]
    app_tls = host_tls(
        host.data.stack,
        host.data.credentials,
        host.name,
        [host.name, host.data.address, settings.domain],
    )
    docker_engine(
        bridge=settings.app.docker_bridge,
        log_max_size=settings.app.log_max_size,
        log_max_files=settings.app.log_max_files,
        # The lab registry's certificate is from the stack's CA; ECR uses the instance role.
        registry_ca=(registry, app_tls.ca)
        if registry == f"{REGISTRY_NAME}:{REGISTRY_PORT}"
        else None,
        credential_helper_registries=[registry] if host.data.credentials == "aws" else [],
    )
    data_hosts = inventory.get_group("data", [])
    if data_hosts:
        urls = service_urls(data_hosts[0].data.address, credentials, CONTAINER_CA_FILE)
        # The container verifies the data host against the stack's CA.
        service_ca = app_tls.ca
    elif host.data.get("database_address"):
        # AWS: RDS and ElastiCache (roles/data/rds.py, docs/aws.md); the container verifies
        # RDS against the RDS CA bundle, fetched by this deploy and shipped.
        service_ca = rds_ca_bundle()
        rds.rds_client(ca_bundle=service_ca)
        rds.service_roles(
            name=f"Create the roles {OWNER_ROLE} and {RUNTIME_ROLE} and their grants on RDS "
            "as its master user (once per deploy)",
            address=host.data.database_address,
            port=host.data.database_port,
            database=DATABASE,
            master=functools.partial(rds_master_credentials, host.data.database_master_secret_arn),
            owner=OWNER_ROLE,
            owner_password=credentials.db_owner_password,
            runtime=RUNTIME_ROLE,
            runtime_password=credentials.db_runtime_password,
            _run_once=True,
        )
        urls = rds.managed_service_urls(
            database_address=host.data.database_address,
            database_port=host.data.database_port,
            redis_address=host.data.redis_address,
            redis_port=host.data.redis_port,
            database=DATABASE,
            owner=OWNER_ROLE,
            runtime=RUNTIME_ROLE,
            credentials=credentials,
            ca_file=CONTAINER_CA_FILE,
        )
    else:
        raise RuntimeError(
            f"{host.name}: no data for the service: the inventory needs a data host (group "
            "'data') or the stack's RDS and ElastiCache endpoints (hosts/aws.py sets them)"
        )
    environment = service_environment(
        credentials=credentials,
        urls=urls,
        trusted_proxy=settings.app.docker_bridge.ip,
        workers=settings.app.workers,
        stop_timeout_seconds=settings.app.stop_timeout_seconds,
        settings=settings,
        # The service checks Host and Origin (DNS rebinding): the names the edge answers
        # to, and where clients call from besides https://<domain> (the lab's port).
        extra_names=EXTRA_NAMES,
        client_origins=host.data.get("client_origins") or [],
    )
    app(
        image=image,
        environment=environment,
        # The schema owner migrates; the service itself only ever holds the runtime role.
        migrate_environment={**environment, "DATABASE_URL": urls["MIGRATION_DATABASE_URL"]},
        memory=settings.app.memory,
        pids_limit=settings.app.pids_limit,
        stop_timeout_seconds=settings.app.stop_timeout_seconds,
        readiness_path="/health/mcp",
        readiness_timeout_seconds=settings.app.readiness_timeout_seconds,
        keep_images=settings.app.keep_images,
        ca_pem=service_ca,
        rollback_image=rollback_image,
    )
    nginx(
        certificate_pem=app_tls.certificate,
        key_pem=app_tls.key,
        domain=settings.domain,
        # The load balancer in front: the edge hosts, or the inventory's own list (AWS: the
        # VPC, where the ALB's addresses are).
        trusted_proxies=host.data.get("load_balancer_cidrs")
        or [edge.data.address for edge in inventory.get_group("edge", [])],
        admin_cidrs=[str(cidr) for cidr in settings.admin_cidrs],
        zones=settings.nginx_rate_limits,
        timeouts=settings.timeouts,
        max_request_bytes=settings.max_request_bytes,
    )

# Edge hosts: the load balancer in front of both colors (lab and self-hosted; the ALB on AWS).
# Its own entry point too: a switch runs it alone (deploy_edge.py).
if host.data.role == "edge":
    local.include("deploy_edge.py")

# Maintenance: the guide's Maintenance Procedures as hardened systemd timers on every host
# (roles/maintenance, docs/maintenance.md). On AWS, RDS backups and CloudWatch alarms do the
# data host's part.
maintenance = settings.maintenance
# A Pulumi secret cannot be decrypted here (no Pulumi CLI); such stacks alert via CloudWatch.
alert_url = str(settings.alert_webhook) if isinstance(settings.alert_webhook, HttpUrl) else ""
alerting(
    webhook_url=alert_url,
    ca_pem=stack_ca(host.data.stack, host.data.credentials),
    disk_alert_percent=maintenance.disk_alert_percent,
    log_days=settings.retention.log_days,
)
if host.data.role in ("edge", "app"):
    certificate_check(
        server_name=settings.domain, warning_days=maintenance.certificate_warning_days
    )
if host.data.role == "edge":
    health_check(
        server_name=settings.domain,
        # Through the edge itself, then each app host of both colors (an idle color that
        # fails could not take a switch).
        addresses=["127.0.0.1", *[app.data.address for app in inventory.get_group("app", [])]],
    )
if host.data.role == "app":
    performance_check(
        url=f"http://127.0.0.1:{APP_PORT}/api/v1/mcp/metrics",
        # Its own token (MCP_METRICS_TOKEN above), not the client key: see credentials.NAMES.
        metrics_token=credentials.metrics_token,
        error_percent=maintenance.error_rate_alert_percent,
        slow_seconds=maintenance.slow_response_seconds,
        window_minutes=maintenance.performance_window_minutes,
    )
    audit_cleanup(container=APP_CONTAINER, days=settings.retention.audit_log_days)
if host.data.role == "data":
    backups(
        database=DATABASE,
        days=settings.retention.backup_days,
        # Kept with each backup: what was deployed, the webhook (a credential) masked.
        deployment_json=json.dumps(
            {**settings.masked(), "alertWebhook": "[secret]" if alert_url else None},
            indent=2,
            sort_keys=True,
        )
        + "\n",
        bucket=maintenance.backup_bucket,
        bucket_prefix=host.name,
    )
    if maintenance.alert_receiver:
        receiver_tls = host_tls(
            host.data.stack, host.data.credentials, f"{host.name}-alerts", [host.data.address]
        )
        alert_receiver(
            port=maintenance.alert_receiver_port,
            certificate_pem=receiver_tls.certificate,
            key_pem=receiver_tls.key,
        )

# Guide, Log Aggregation: the service's and nginx's JSON logs, from every host to the data host.
if maintenance.log_collector and inventory.get_group("data", []):
    log_sources = {"edge": [EDGE_NGINX_LOGS], "app": [SERVICE_LOGS, APP_NGINX_LOGS]}
    if host.data.role == "data":
        log_collector(port=maintenance.log_collector_port, days=settings.retention.log_days)
    else:
        log_forwarding(
            sources=log_sources[host.data.role],
            collector=inventory.get_group("data")[0].data.address,
            port=maintenance.log_collector_port,
        )
