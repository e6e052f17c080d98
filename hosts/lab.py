"""Inventory of the local lab (``mcpdeploy lab up``): ``pyinfra -y hosts/lab.py deploy.py``.

Derived from ``Pulumi.lab.yaml``; groups by role and by color.
"""

from mcpdeploy.lab.inventory import lab_groups

_groups = lab_groups()
edge = _groups["edge"]
app = _groups["app"]
app_blue = _groups["app_blue"]
app_green = _groups["app_green"]
data = _groups["data"]
