"""The AWS target of a release (mcpdeploy/targets.py): the ALB, CloudWatch and DynamoDB.

The steps are those of every target (mcpdeploy/release.py); here:

- lock and log: the stack's DynamoDB table (:class:`~mcpdeploy.releaselog.DynamoLog`);
- hosts: the ``hosts`` stack output, reached over SSH through SSM Session Manager or the
  jump host, as ``admin`` with sudo (:func:`aws_fleet`; the same ssh_config as
  ``hosts/aws.py``, which the rolling deploy runs pyinfra with);
- readiness: each host's state in its color's ALB target group (``/health/mcp`` over
  HTTPS, infra/components/loadbalancer.py);
- service gates: readiness, handshake and tools/list run on each idle host against its
  own nginx (the ALB is not a host to run them on), then the target group's health;
- switch: ``activeColor`` in the stack config and ``pulumi up`` through the Automation API
  (:func:`mcpdeploy.aws_switch.switch_aws`: refuses an unhealthy color, verifies the
  listener, puts the old color back on failure);
- drain: the old hosts' inbound HTTPS connections (from the ALB), waited for up to
  ``release.drainTimeoutSeconds``, then closed on the hosts;
- watch: the new color's target group in CloudWatch (RequestCount,
  HTTPCode_Target_5XX_Count, TargetResponseTime p99) plus its target health on every
  poll. ALB metrics arrive a minute or more late: give AWS stacks a
  ``release.watchSeconds`` of 180 or more (docs/releases.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3

from mcpdeploy import gates
from mcpdeploy.aws_inventory import hosts_from_outputs as aws_hosts
from mcpdeploy.aws_inventory import stack_region, write_ssh_config
from mcpdeploy.aws_switch import (
    Workspace,
    local_stack,
    plain_outputs,
    switch_aws,
    target_health_by_instance,
)
from mcpdeploy.engine import Progress, no_progress
from mcpdeploy.fleet import Fleet, FleetError, FleetHost
from mcpdeploy.images import ImageError
from mcpdeploy.releaselog import DynamoLog, ReleaseStore
from mcpdeploy.settings import Release, Settings, load_settings, project_root

NAMESPACE = "AWS/ApplicationELB"
POLL_SECONDS = 30
MIN_REQUESTS = 20  # below this many requests an error rate says nothing yet
# How long a host may take to turn healthy in its target group after its deploy: the
# ALB's healthy threshold (2) times its interval (15 s), with room (loadbalancer.py).
ALB_READY_SECONDS = 120


def aws_fleet(stack: str, outputs: dict[str, Any], settings: Settings, region: str) -> Fleet:
    """The stack's app hosts as the ``hosts`` output lists them, reached as ``hosts/aws.py``
    reaches them (an ssh_config in the operator's cache directory; no secret in it)."""
    hosts = aws_hosts(outputs)
    if not hosts:
        raise FleetError(
            f"stack {stack} has no hosts in its outputs: run 'pulumi up -s {stack}' first"
        )
    config = write_ssh_config(stack, hosts, settings, region)
    return Fleet(
        stack=stack,
        ssh=("ssh", "-F", str(config)),
        hosts=tuple(FleetHost(h.name, h.role, h.color, h.address) for h in hosts),
        inventory="hosts/aws.py",
        sudo=True,
    )


@dataclass
class AwsTarget:
    """An AWS stack (:mod:`mcpdeploy.targets`); the clients and the workspace are seams."""

    stack: str
    fleet: Fleet
    outputs: dict[str, Any]
    workspace: Workspace
    elbv2: Any
    cloudwatch: Any
    dynamodb: Any
    ecr: Any
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    vantage: str = field(default="the ALB and CloudWatch")
    # tests/hosts assumes the lab's topology (an edge, app-blue/app-green): not a gate here.
    host_suite: bool = False

    @classmethod
    def open(cls, stack: str) -> AwsTarget:
        """The stack through the Automation API and boto3 in its region."""
        region = stack_region(stack, project_root())
        pulumi_stack = local_stack(stack)
        outputs = plain_outputs(pulumi_stack.outputs())
        fleet = aws_fleet(stack, outputs, load_settings(stack), region)
        return cls(
            stack=stack,
            fleet=fleet,
            outputs=outputs,
            workspace=lambda _: pulumi_stack,
            elbv2=boto3.client("elbv2", region_name=region),
            cloudwatch=boto3.client("cloudwatch", region_name=region),
            dynamodb=boto3.client("dynamodb", region_name=region),
            ecr=boto3.client("ecr", region_name=region),
        )

    def store(self) -> ReleaseStore:
        return ReleaseStore(DynamoLog(self.stack, self.dynamodb))

    def resolve(self, image: str, progress: Progress = no_progress) -> str:
        """``image`` pinned by its digest in ECR (tags there are immutable, but a digest
        names the bytes in the release log too)."""
        try:
            pinned, _ = ecr_image(self.ecr, image)
        except EcrError as exc:
            raise ImageError(str(exc)) from None
        progress(f"{image} is {pinned}")
        return pinned

    def readiness(self, domain: str, color: str) -> dict[str, int | str]:
        """200 for a host healthy in its target group, else its state and the ALB's reason."""
        by_instance = target_health_by_instance(self.elbv2, self.outputs, color)
        found: dict[str, int | str] = {}
        for host in aws_hosts(self.outputs):
            if host.color != color:
                continue
            health = by_instance.get(host.instance_id)
            if health is None:
                found[host.name] = "not registered in the target group"
            elif health["State"] == "healthy":
                found[host.name] = 200
            else:
                why = health.get("Reason") or health.get("Description") or ""
                found[host.name] = f"{health['State']}" + (f" ({why})" if why else "")
        return found

    def service_gates(
        self, hosts: list[FleetHost], domain: str, key: str
    ) -> list[gates.GateResult]:
        """The service gates on each host, then gate ``alb``: every host healthy in its
        target group. A host just restarted turns healthy only after the ALB's healthy
        threshold of checks, so its state is polled for up to :data:`ALB_READY_SECONDS`."""
        results = gates.service_gates(self.fleet, hosts, domain, key, from_edge=False)
        color = hosts[0].color or ""
        started = self.clock()
        while True:
            health = self.readiness(domain, color)
            ready = all(health.get(h.name) == 200 for h in hosts)
            if ready or self.clock() - started >= ALB_READY_SECONDS:
                break
            self.sleep(5)
        for host in hosts:
            status = health.get(host.name, "not in the stack's hosts output")
            detail = "healthy" if status == 200 else str(status)
            seconds = round(self.clock() - started, 1)
            results.append(
                gates.GateResult("alb", host.name, status == 200, seconds, f"{color}: {detail}")
            )
        return results

    def switch(self, path: Path, current: str, color: str, progress: Progress = no_progress) -> str:
        switch_aws(self.stack, color, workspace=self.workspace, elbv2=self.elbv2, progress=progress)
        return path.read_text()

    def drain(self, hosts: list[FleetHost], seconds: int) -> dict[str, int]:
        """As on the edge (:func:`mcpdeploy.gates.drain`), counting each old host's
        inbound HTTPS connections (from the ALB) instead of the edge's."""
        return gates.drain(self.fleet, hosts, seconds, gates.inbound_connections(self.fleet, hosts))

    def watch(self, hosts: list[FleetHost], domain: str, rules: Release) -> dict[str, Any]:
        """The new color's target group for ``rules.watch_seconds``: CloudWatch's request,
        5xx and p99 figures since the switch, and its target health on every poll (an
        unhealthy host fails at once, without waiting for metrics)."""
        seconds = rules.watch_seconds
        color = hosts[0].color or ""
        dimensions = alb_dimensions(self.outputs, color)
        since = self.clock()
        verdict = {"verdict": "pass", "reason": ""}
        figures: dict[str, Any] = {"requests": 0, "errors": 0, "p99_seconds": 0.0}
        while True:
            unhealthy = {
                name: status
                for name, status in self.readiness(domain, color).items()
                if status != 200
            }
            figures = alb_figures(self.cloudwatch, dimensions, since, self.clock())
            verdict = judge(figures, rules, unhealthy)
            elapsed = self.clock() - since
            if verdict["verdict"] == "fail" or elapsed >= seconds:
                break
            self.sleep(min(POLL_SECONDS, seconds - elapsed))
        return {**verdict, **figures, "seconds": round(self.clock() - since, 1)}


def alb_dimensions(outputs: dict[str, Any], color: str) -> list[dict[str, str]]:
    """CloudWatch dimensions of ``color``'s target group behind the stack's ALB:
    ``targetgroup/<name>/<id>`` and ``app/<name>/<id>`` (the ARNs' resource parts)."""
    group = outputs["targetGroupArns"][color].split(":")[-1]
    listener = outputs["httpsListenerArn"].split(":")[-1]  # listener/app/<name>/<id>/<id>
    balancer = "/".join(listener.split("/")[1:4])
    return [
        {"Name": "TargetGroup", "Value": group},
        {"Name": "LoadBalancer", "Value": balancer},
    ]


def alb_figures(
    cloudwatch: Any, dimensions: list[dict[str, str]], since: float, now: float
) -> dict[str, Any]:
    """Requests, target 5xx and the worst one-minute p99 of the target group in [since,
    now], as CloudWatch has them so far."""
    start = datetime.fromtimestamp(since, UTC).replace(second=0, microsecond=0)
    end = datetime.fromtimestamp(now, UTC) + timedelta(minutes=1)

    def points(metric: str, **statistic: Any) -> list[dict[str, Any]]:
        return cloudwatch.get_metric_statistics(
            Namespace=NAMESPACE,
            MetricName=metric,
            Dimensions=dimensions,
            StartTime=start,
            EndTime=end,
            Period=60,
            **statistic,
        )["Datapoints"]

    requests = sum(p.get("Sum", 0) for p in points("RequestCount", Statistics=["Sum"]))
    errors = sum(p.get("Sum", 0) for p in points("HTTPCode_Target_5XX_Count", Statistics=["Sum"]))
    latency = points("TargetResponseTime", ExtendedStatistics=["p99"])
    p99 = max((p.get("ExtendedStatistics", {}).get("p99", 0.0) for p in latency), default=0.0)
    return {"requests": int(requests), "errors": int(errors), "p99_seconds": float(p99)}


def judge(
    figures: dict[str, Any], rules: Release, unhealthy: dict[str, int | str]
) -> dict[str, Any]:
    """Pass or fail, with the reason: an unhealthy target, the error rate, the p99."""
    requests, errors = figures["requests"], figures["errors"]
    percent = 100.0 * errors / requests if requests else 0.0
    result = {"error_percent": round(percent, 2)}
    if unhealthy:
        detail = "; ".join(f"{name}: {status}" for name, status in unhealthy.items())
        return {**result, "verdict": "fail", "reason": f"unhealthy in the target group: {detail}"}
    if requests >= MIN_REQUESTS and percent > rules.max_error_percent:
        reason = f"{errors} of {requests} responses failed ({percent:.1f} %)"
        return {**result, "verdict": "fail", "reason": reason}
    if requests >= MIN_REQUESTS and figures["p99_seconds"] > rules.max_p99_seconds:
        reason = f"p99 {figures['p99_seconds']:.3f} s above {rules.max_p99_seconds} s"
        return {**result, "verdict": "fail", "reason": reason}
    return {**result, "verdict": "pass", "reason": ""}


class EcrError(Exception):
    """An image reference ECR cannot give a digest for; the message says why."""


def ecr_image(ecr: Any, reference: str) -> tuple[str, dict[str, int] | None]:
    """``reference`` (``<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>`` or
    ``@sha256:…``) pinned by its digest in ECR, and the severity counts of its scan
    (ECR scans on push, infra/components/registry.py; None while there is no scan)."""
    registry, _, rest = reference.partition("/")
    if ".dkr.ecr." not in registry or not rest:
        raise EcrError(f"{reference} is not an ECR image (<account>.dkr.ecr.<region>…/<repo>)")
    if "@" in rest:
        repository, _, digest = rest.partition("@")
        wanted = {"imageDigest": digest}
    else:
        repository, _, tag = rest.partition(":")
        wanted = {"imageTag": tag or "latest"}
    try:
        (found,) = ecr.describe_images(repositoryName=repository, imageIds=[wanted])["imageDetails"]
    except ecr.exceptions.ImageNotFoundException:
        raise EcrError(f"{reference} is not in ECR: push it (or check the tag)") from None
    except ecr.exceptions.RepositoryNotFoundException:
        raise EcrError(f"ECR has no repository {repository}: check the reference") from None
    pinned = f"{registry}/{repository}@{found['imageDigest']}"
    try:
        scan = ecr.describe_image_scan_findings(
            repositoryName=repository, imageId={"imageDigest": found["imageDigest"]}
        )
    except ecr.exceptions.ScanNotFoundException:
        return pinned, None
    if scan.get("imageScanStatus", {}).get("status") != "COMPLETE":
        return pinned, None
    return pinned, dict(scan["imageScanFindings"].get("findingSeverityCounts", {}))
