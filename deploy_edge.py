"""pyinfra entry point of the edge alone: the active color's flag and the nginx site.

    pyinfra --limit edge hosts/<stack>.py deploy_edge.py

deploy.py includes it for its edge hosts (a deploy converges everything). A switch runs it
alone (``mcpdeploy switch``, and ``release``/``rollback`` on stacks with an edge,
mcpdeploy/switch.py): a switch changes which color serves, so it moves the flag and
brings the site (both colors' upstreams, from the inventory) up to date, and leaves the
rest of the edge (hardening, firewall, maintenance jobs) to the next deploy: about 20
operations instead of 106, seconds instead of a whole deploy of the edge. Hosts of other
roles run nothing here.
"""

from pyinfra import host, inventory

from mcpdeploy.access import MAINTENANCE_FLAG
from mcpdeploy.credentials import host_tls
from mcpdeploy.settings import COLORS, load_settings
from roles.edge import edge

if host.data.role == "edge":
    settings = load_settings(host.data.stack)
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
        maintenance_flag=MAINTENANCE_FLAG,
    )
