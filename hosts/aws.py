"""Inventory of an AWS stack: ``pyinfra hosts/aws.py deploy.py``.

The stack is env ``MCPDEPLOY_STACK`` (default ``prod``); its settings are
``Pulumi.<stack>.yaml``. Hosts come from ``pulumi stack output --json`` when the Pulumi
CLI is installed, otherwise from EC2 tags (Project, Stack, running) with the operator's
AWS credentials. SSH goes through SSM Session Manager or the jump host (``aws.access``);
set ``MCPDEPLOY_SSH_KEY`` to the private key matching ``aws.sshPublicKey`` unless an
ssh-agent holds it. Groups by role and by color, as in ``hosts/lab.py``.
"""

from mcpdeploy.aws_inventory import aws_groups

_groups = aws_groups()
edge = _groups["edge"]
app = _groups["app"]
app_blue = _groups["app_blue"]
app_green = _groups["app_green"]
data = _groups["data"]
