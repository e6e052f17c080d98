"""pyinfra entry point: which roles run on which hosts.

    pyinfra hosts/<stack>.py deploy.py

Each host's ``stack`` names the settings (Pulumi.<stack>.yaml); its ``role`` (edge, app,
data) and the inventory's groups decide its firewall allow-list.
"""

from pyinfra import host, inventory

from mcpdeploy.credentials import host_tls, stack_credentials
from mcpdeploy.settings import COLORS, load_settings
from roles.base import base
from roles.edge import edge
from roles.firewall import firewall, firewall_rules

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
    )
)
credentials = stack_credentials(host.data.stack, host.data.credentials)

# Data hosts: PostgreSQL and Redis (lab and self-hosted; RDS and ElastiCache on AWS).

# App hosts: Docker, the service, nginx.

# Edge hosts: the load balancer in front of both colors (lab and self-hosted; the ALB on AWS).
if host.data.role == "edge":
    edge_tls = host_tls(
        host.data.stack,
        host.data.credentials,
        host.name,
        [settings.domain, "localhost", "127.0.0.1", host.name, host.data.address],
    )
    edge(
        certificate_pem=edge_tls.certificate,
        key_pem=edge_tls.key,
        upstream_ca_pem=edge_tls.ca,
        domain=settings.domain,
        active_color=settings.active_color,
        colors={
            color: [app.data.address for app in inventory.get_group(f"app_{color}", [])]
            for color in COLORS
        },
        timeouts=settings.timeouts,
        max_request_bytes=settings.max_request_bytes,
    )
