"""Inventory for your own servers: copy to ``hosts/<stack>.py`` and edit.

    pyinfra -y hosts/<stack>.py deploy.py

Settings come from ``Pulumi.<stack>.yaml`` (``stack`` below). Every host carries the data
the roles read: ``role`` (edge, app or data), ``color`` for app hosts, ``address`` (the
private address other hosts use to reach it: firewall allow-lists are built from these),
``deploy_authorized_keys`` (public keys of the deploy user) and ``credentials``: ``file``
keeps the stack's secrets and CA root-only under /var/lib/mcpdeploy/<stack>/ on the
operator machine (mcpdeploy/credentials.py). Groups are by role and by color, as in
``hosts/lab.py``.
"""

_STACK = "prod"
_KEYS = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleReplaceWithYourOwnKey ops@example.com"]


def _host(name: str, role: str, address: str, color: str | None = None) -> tuple[str, dict]:
    return (
        name,
        {
            "ssh_user": "root",
            "role": role,
            "color": color,
            "address": address,
            "stack": _STACK,
            "deploy_authorized_keys": _KEYS,
            "credentials": "file",
        },
    )


edge = [_host("edge1.example.com", "edge", "10.0.1.10")]
app_blue = [_host("blue1.example.com", "app", "10.0.2.11", "blue")]
app_green = [_host("green1.example.com", "app", "10.0.2.21", "green")]
app = app_blue + app_green
data = [_host("db1.example.com", "data", "10.0.3.10")]
