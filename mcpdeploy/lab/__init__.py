"""The local lab: production's shape as systemd containers on one machine."""

from mcpdeploy.lab.lab import Lab, LabError
from mcpdeploy.lab.topology import STATE_DIR, LabHost, Topology, topology

__all__ = ["STATE_DIR", "Lab", "LabError", "LabHost", "Topology", "topology"]
