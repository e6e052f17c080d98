"""Where a stack runs, as far as a release cares: what differs between the edge and AWS.

A release, a rollback and ``status`` do the same steps on every target
(mcpdeploy/release.py); a :class:`Target` is the part that differs:

==================  ==========================================  ===============================
                    :class:`EdgeTarget` (lab, self-hosted)      AWS (:mod:`mcpdeploy.aws_target`)
==================  ==========================================  ===============================
lock and log        files on the edge host                      the stack's DynamoDB table
image               the lab registry (built when missing)       ECR, pinned by digest
readiness           ``/health/mcp`` as the edge reaches a host  the ALB's target health
service gates       run on the edge against each host           run on each host, on loopback
testinfra gate      tests/hosts on the idle hosts               not run (the suite is the lab's)
switch              ``activeColor`` + deploy_edge.py (flag)     ``activeColor`` + ``pulumi up``
drain               the edge's connections to the old color     the old hosts' inbound :443
watch               the edge's access log                       CloudWatch, per target group
==================  ==========================================  ===============================

Both reach hosts the same way (:class:`~mcpdeploy.fleet.Fleet`, over SSH) to deploy
them, run the gates' key and the testinfra suite, and read what they run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from mcpdeploy import gates
from mcpdeploy.engine import Progress, no_progress
from mcpdeploy.fleet import Fleet, FleetHost, lab_fleet
from mcpdeploy.images import release_image
from mcpdeploy.releaselog import EdgeLog, ReleaseStore
from mcpdeploy.settings import Release
from mcpdeploy.stackfile import edited
from mcpdeploy.switch import SwitchError, apply_edge


class Target(Protocol):
    """The target-specific steps of a release (module docstring)."""

    stack: str
    fleet: Fleet
    # Who the service gates and the watch look through, for progress lines.
    vantage: str
    # Whether the testinfra suite (tests/hosts, written against the lab's topology) is a
    # gate here.
    host_suite: bool

    def store(self) -> ReleaseStore:
        """The stack's release lock and log."""
        ...

    def resolve(self, image: str, progress: Progress) -> str:
        """``image`` pinned by digest as the hosts will pull it (raises ImageError)."""
        ...

    def readiness(self, domain: str, color: str) -> dict[str, int | str]:
        """{host: 200, or what is wrong} for every host of ``color``, as traffic reaches it."""
        ...

    def service_gates(
        self, hosts: list[FleetHost], domain: str, key: str
    ) -> list[gates.GateResult]: ...

    def switch(self, path: Path, current: str, color: str, progress: Progress) -> str:
        """Serve ``color``; ``current`` is the stack file's text now. Returns its text after.
        On failure nothing changed: raises :class:`~mcpdeploy.switch.SwitchError` (or the
        target's own error) saying what serves."""
        ...

    def drain(self, hosts: list[FleetHost], seconds: int) -> dict[str, int]: ...

    def watch(self, hosts: list[FleetHost], domain: str, rules: Release) -> dict[str, Any]:
        """Judge ``hosts`` (the new color) for ``rules.watch_seconds``: the verdict, its
        reason and the figures (requests, errors, error_percent, p99_seconds)."""
        ...


class EdgeTarget:
    """Stacks with edge hosts in front of the colors: the lab and self-hosted."""

    vantage = "the edge"
    host_suite = True

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.stack = fleet.stack

    def store(self) -> ReleaseStore:
        return ReleaseStore(EdgeLog(self.fleet))

    def resolve(self, image: str, progress: Progress = no_progress) -> str:
        return release_image(image, progress)

    def readiness(self, domain: str, color: str) -> dict[str, int | str]:
        hosts = self.fleet.app_hosts(color)
        if not hosts:
            raise SwitchError(f"{color} has no app hosts in {self.fleet.inventory}")
        return self.fleet.health_from_edge(domain, hosts)

    def service_gates(
        self, hosts: list[FleetHost], domain: str, key: str
    ) -> list[gates.GateResult]:
        return gates.service_gates(self.fleet, hosts, domain, key)

    def switch(self, path: Path, current: str, color: str, progress: Progress = no_progress) -> str:
        progress(f"activeColor: {color} in {path.name}; deploying the edge")
        new = edited(current, {"activeColor": color})
        apply_edge(self.fleet, path, current, new)
        return new

    def drain(self, hosts: list[FleetHost], seconds: int) -> dict[str, int]:
        return gates.drain(self.fleet, hosts, seconds)

    def watch(self, hosts: list[FleetHost], domain: str, rules: Release) -> dict[str, Any]:
        return gates.watch(self.fleet, hosts, domain, rules)


def target_for(stack: str) -> Target:
    """The target of ``stack``: the lab's edge, or the AWS stack of that name."""
    if stack == "lab":
        return EdgeTarget(lab_fleet())
    from mcpdeploy.aws_target import AwsTarget  # boto3 and the Automation API: AWS only

    return AwsTarget.open(stack)
