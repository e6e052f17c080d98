"""pyinfra entry point: which roles run on which hosts.

    pyinfra hosts/<stack>.py deploy.py

Each host's ``stack`` names the settings (Pulumi.<stack>.yaml); its ``role`` (edge, app,
data) and the inventory's groups decide its firewall allow-list.
"""

from pyinfra import host, inventory

from mcpdeploy.credentials import stack_credentials
from mcpdeploy.settings import load_settings
from roles.base import base
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
