"""A release, a rollback and the lock on the AWS target (mcpdeploy/aws_target.py).

The AWS side is moto (the ALB with real target health, DynamoDB, ECR) plus the fake
Automation API stack whose ``up`` moves the listener (aws_fakes.py) and a CloudWatch
that answers the figures a test gives it (moto computes no percentiles). The hosts are a
Fleet whose SSH is replaced by a recorder answering as the service and the scripts would:
what runs on them is exercised for real by the lab suite, which shares that code.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_fakes import REGION, Alb, FakeStack

from mcpdeploy import release as release_module
from mcpdeploy.aws_switch import ACTIVE_KEY, serving_color
from mcpdeploy.aws_target import AwsTarget, alb_dimensions, ecr_image
from mcpdeploy.fleet import Fleet, FleetHost
from mcpdeploy.gates import GateResult
from mcpdeploy.preflight.image import ecr_checks
from mcpdeploy.release import ReleaseError, release, rollback
from mcpdeploy.releaselog import DynamoLog, LockError, ReleaseStore, release_table
from mcpdeploy.stackfile import validated

REPOSITORY = "mcpdeploy/prod/mcp-service"
ROTATED_KEY = "mcp_" + "r0tated" * 8
DRAIN_SECONDS = 30  # release.drainTimeoutSeconds by default
STACK = """config:
  aws:region: us-east-1
  mcpdeploy:domain: mcp.example.com
  mcpdeploy:activeColor: blue
  mcpdeploy:image: {registry}/{repository}:1.0.0
  mcpdeploy:adminCidrs:
    - 203.0.113.0/24
"""


class Hosts(Fleet):
    """SSH replaced: each command is recorded and answered as the host would."""

    def run(  # type: ignore[override]
        self,
        host: str,
        command: str | list[str],
        timeout: float = 120,
        check: bool = True,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        argv = command if isinstance(command, list) else [command]
        CALLS.append((host, argv[:6], stdin))
        answer: Any
        if argv[:2] == ["docker", "inspect"]:
            answer = RUNNING.get(host, "")
        elif "keys" in argv and "create" in argv:
            answer = json.dumps({"key": "mcp_gate_secret", "prefix": "mcp_gate"})
        elif "keys" in argv and "rotate" in argv:
            answer = json.dumps({"name": "env:current", "key": ROTATED_KEY})
        elif "keys" in argv:
            answer = "{}"
        elif argv[:2] == ["python3", "-c"] and '"tools/list"' in argv[2]:
            request = json.loads(stdin or "{}")
            answer = json.dumps(
                [
                    {"gate": gate, "address": a, "ok": True, "seconds": 0.01, "detail": "ok"}
                    for a in request["addresses"]
                    for gate in ("readiness", "handshake", "tools/list")
                ]
            )
        elif argv[:2] == ["python3", "-c"] and '"filters"' in argv[2]:
            # The drain's connection count on an old host: 3 at the switch, 1 outlives the
            # timeout and the clean close, then it is cut.
            request = json.loads(stdin or "{}")
            assert request["filters"] == [["sport", "=", ":443"]]
            before = 3 if request["seconds"] == DRAIN_SECONDS else 1
            answer = json.dumps({"before": before, "left": 1, "still_open": 0})
        elif argv[-1] in ("disable", "enable"):
            answer = json.dumps({"mcp_enabled": argv[-1] == "enable"})
        elif argv[4:5] == ["cache"]:
            ttl = int(argv[argv.index("--ttl") + 1]) if "--ttl" in argv else 300
            answer = json.dumps(
                {
                    "mcp_enable_caching": "--disable" not in argv,
                    "mcp_cache_ttl": ttl,
                    "flushed": "--flush" in argv,
                }
            )
        elif "streams" in argv:
            answer = json.dumps({"open": 0}) if "count" in argv else ""
        else:
            raise AssertionError(f"unexpected command on {host}: {argv}")
        return subprocess.CompletedProcess(argv, 0, answer, "")


CALLS: list[tuple[str, list[str], str | None]] = []
RUNNING: dict[str, str] = {}


@dataclass
class CloudWatch:
    """get_metric_statistics answering the figures of ``figures`` (one datapoint each)."""

    figures: dict[str, float] = field(
        default_factory=lambda: {"requests": 400, "errors": 0, "p99": 0.2}
    )
    asked: list[dict[str, Any]] = field(default_factory=list)

    def get_metric_statistics(self, **request: Any) -> dict[str, Any]:
        self.asked.append(request)
        name = request["MetricName"]
        if name == "TargetResponseTime":
            return {"Datapoints": [{"ExtendedStatistics": {"p99": self.figures["p99"]}}]}
        key = "requests" if name == "RequestCount" else "errors"
        return {"Datapoints": [{"Sum": self.figures[key]}]}


@dataclass
class World:
    alb: Alb
    stack: FakeStack
    target: AwsTarget
    cloudwatch: CloudWatch
    path: Path
    image: str
    pinned: str
    deployed: list[str]


@pytest.fixture
def world(alb: Alb, stack: FakeStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    CALLS.clear()
    RUNNING.clear()
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName=release_table("prod"),
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    ecr = boto3.client("ecr", region_name=REGION)
    registry = ecr.create_repository(repositoryName=REPOSITORY)["repository"]["repositoryUri"]
    registry = registry.split("/")[0]
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "digest": "sha256:" + "1" * 64,
            "size": 1,
            "mediaType": "application/vnd.docker.container.image.v1+json",
        },
        "layers": [],
    }
    digest = ecr.put_image(
        repositoryName=REPOSITORY, imageManifest=json.dumps(manifest), imageTag="1.2.0"
    )["image"]["imageId"]["imageDigest"]
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(STACK.format(registry=registry, repository=REPOSITORY))
    monkeypatch.setattr(release_module, "stack_file", lambda stack: path)
    # Preflight and the contract step have their own tests; the host suite is the lab's.
    monkeypatch.setattr(release_module, "run_preflight", lambda *a, **k: [])
    monkeypatch.setattr(
        release_module, "contract_phase", lambda *a: {"applied": [], "deferred": []}
    )
    monkeypatch.setattr(release_module, "testinfra_gate", not_on_aws)
    deployed: list[str] = []

    def pyinfra(fleet: Fleet, hosts: list[str]) -> subprocess.CompletedProcess[str]:
        for host in hosts:
            deployed.append(host)
            RUNNING[host] = pinned  # the app role now runs the new image there
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(release_module, "pyinfra", pyinfra)
    outputs = alb.outputs("blue")
    fleet = Hosts(
        stack="prod",
        ssh=("ssh", "-F", "unused"),
        hosts=tuple(
            FleetHost(h["name"], "app", color, h["address"])
            for color, hosts in outputs["hosts"].items()
            for h in hosts
        ),
        inventory="hosts/aws.py",
        sudo=True,
    )
    old = f"{registry}/{REPOSITORY}@sha256:" + "0" * 64
    for host in fleet.app_hosts():
        RUNNING[host.name] = old
    cloudwatch = CloudWatch()
    clock = iter(range(0, 10_000, 30))
    target = AwsTarget(
        stack="prod",
        fleet=fleet,
        outputs=outputs,
        workspace=stack.opener,
        elbv2=alb.client,
        cloudwatch=cloudwatch,
        dynamodb=dynamodb,
        ecr=ecr,
        sleep=lambda seconds: None,
        clock=lambda: float(next(clock)),
    )
    pinned = f"{registry}/{REPOSITORY}@{digest}"
    image = f"{registry}/{REPOSITORY}:1.2.0"
    return World(alb, stack, target, cloudwatch, path, image, pinned, deployed)


def not_on_aws(*args: Any) -> GateResult:
    raise AssertionError("tests/hosts is the lab's suite: not a gate on AWS")


def serving(world: World) -> str | None:
    return serving_color(world.alb.client, world.alb.listener, world.alb.groups)


def test_a_release_deploys_gates_switches_through_pulumi_and_records_in_dynamodb(world):
    report = release(world.target, world.image)
    assert report.outcome == "kept", report.error
    # The image pinned by its ECR digest, recorded as green's before green was deployed.
    assert report.image == world.pinned
    assert f"greenImage: {world.pinned}" in world.path.read_text()
    assert world.deployed == ["green1", "green2"]  # one at a time, green only
    # activeColor through the Automation API, then pulumi up moved the listener.
    assert world.stack.calls == [("set_config", ACTIVE_KEY, "green"), ("up", "green")]
    assert serving(world) == "green"
    gates = {(g["gate"], g["host"]) for g in report.gates if g["ok"]}
    for host in ("green1", "green2"):
        assert {("readiness", host), ("tools/list", host), ("alb", host)} <= gates
    # The service gates ran on the green hosts themselves, on loopback, never on blue.
    gate_runs = [c for c in CALLS if c[1][:2] == ["python3", "-c"] and '"tools/list"' in c[1][2]]
    assert {c[0] for c in gate_runs} == {"green1", "green2"}
    assert all(json.loads(c[2])["addresses"] == ["127.0.0.1"] for c in gate_runs)
    # Both blue hosts drained, summed; the watch asked CloudWatch for green's target group.
    assert report.drain["open_at_switch"] == 6 and report.drain["drained"] == 4
    assert (report.drain["closed"], report.drain["cut"]) == (0, 2)
    drained_on = {c[0] for c in CALLS if c[1][:2] == ["python3", "-c"] and "filters" in c[1][2]}
    assert drained_on == {"blue1", "blue2"}  # counted and cut on the old hosts themselves
    dimensions = world.cloudwatch.asked[0]["Dimensions"]
    assert dimensions == alb_dimensions(world.target.outputs, "green")
    assert report.watch["verdict"] == "pass" and report.watch["requests"] == 400
    log = ReleaseStore(DynamoLog("prod", world.target.dynamodb))
    (record,) = log.last(5)
    assert record["outcome"] == "kept" and record["to_color"] == "green"
    assert record["image"] == world.pinned and record["previous_image"].endswith("0" * 64)
    assert log.holder() is None  # the lock was given back


def test_errors_in_the_watch_window_switch_back_through_pulumi(world):
    world.cloudwatch.figures = {"requests": 200, "errors": 30, "p99": 0.3}
    report = release(world.target, world.image)
    assert report.outcome == "rolled-back"
    assert "30 of 200 responses failed" in report.error
    assert [c for c in world.stack.calls if c[0] == "up"] == [("up", "green"), ("up", "blue")]
    assert serving(world) == "blue" and world.stack.config[ACTIVE_KEY] == "blue"


def test_a_target_unhealthy_after_the_switch_fails_the_watch_at_once(world, monkeypatch):
    real_drain = world.target.drain

    def drain_then_fail(hosts: list[FleetHost], seconds: int) -> dict[str, int]:
        green = world.alb.host("green", 1)["id"]
        world.alb.ec2.stop_instances(InstanceIds=[green])
        return real_drain(hosts, seconds)

    monkeypatch.setattr(world.target, "drain", drain_then_fail)
    report = release(world.target, world.image)
    assert report.outcome == "rolled-back"
    assert "unhealthy in the target group: green2" in report.error
    assert len(world.cloudwatch.asked) == 3  # one poll, no waiting for the window to end
    assert serving(world) == "blue"


def test_an_unhealthy_idle_target_stops_the_release_before_the_switch(world):
    world.alb.ec2.stop_instances(InstanceIds=[world.alb.host("green", 0)["id"]])
    original = world.path.read_text()
    with pytest.raises(ReleaseError, match="gate alb failed on green1") as stopped:
        release(world.target, world.image)
    assert "No switch: blue keeps serving" in str(stopped.value)
    assert world.stack.calls == [] and serving(world) == "blue"
    assert world.path.read_text() == original
    log = ReleaseStore(DynamoLog("prod", world.target.dynamodb))
    assert log.last(1)[0]["failed_step"] == "gates" and log.holder() is None


def test_an_image_missing_from_ecr_stops_before_anything_is_deployed(world):
    with pytest.raises(ReleaseError, match=r"is not in ECR: push it"):
        release(world.target, world.image.replace("1.2.0", "9.9.9"))
    assert world.deployed == [] and world.stack.calls == []


def test_a_second_release_is_refused_by_the_dynamodb_lock(world):
    holder = world.target.store().acquire("release to green", 60)
    with pytest.raises(LockError, match=r"prod is locked by .* \(pid \d+, release to green\)"):
        release(world.target, world.image)
    assert world.deployed == []
    world.target.store().release(holder)
    assert release(world.target, world.image).outcome == "kept"


def test_rollback_checks_the_alb_and_switches_back(world):
    release(world.target, world.image)
    # The stack file the way the Automation API leaves it after the switch.
    world.path.write_text(world.path.read_text().replace("Color: blue", "Color: green"))
    RUNNING.update({h.name: world.pinned for h in world.target.fleet.app_hosts("blue")})
    text = world.path.read_text().replace(
        "mcpdeploy:greenImage", f"mcpdeploy:blueImage: {world.pinned}\n  mcpdeploy:greenImage"
    )
    world.path.write_text(text)
    assert validated(text, "x").image_for("blue") == world.pinned
    report = rollback(world.target)
    assert report.outcome == "kept"
    assert serving(world) == "blue" and world.stack.config[ACTIVE_KEY] == "blue"


def test_rollback_refuses_a_color_unhealthy_on_the_alb(world):
    world.alb.ec2.stop_instances(InstanceIds=[world.alb.host("green", 0)["id"]])
    world.path.write_text(
        world.path.read_text().replace(
            "1.0.0\n", f"1.0.0\n  mcpdeploy:greenImage: {world.pinned}\n"
        )
    )
    RUNNING.update({h.name: world.pinned for h in world.target.fleet.app_hosts("green")})
    with pytest.raises(ReleaseError, match=r"green is not ready \(green1: unused"):
        rollback(world.target)
    assert world.stack.calls == [] and serving(world) == "blue"


def test_ecr_pins_by_digest_and_reads_the_scan(world):
    ecr = world.target.ecr
    assert ecr_image(ecr, world.image) == (world.pinned, None)
    image, scan, pinned = ecr_checks(world.image, ecr)
    assert (image.status, scan.status, pinned) == ("pass", "warn", world.pinned)
    ecr.start_image_scan(repositoryName=REPOSITORY, imageId={"imageTag": "1.2.0"})
    pinned_again, counts = ecr_image(ecr, world.pinned)
    assert pinned_again == world.pinned and counts == {"HIGH": 1}  # moto's one finding
    assert ecr_checks(world.image, ecr)[1].status == "pass"
    image, scan, pinned = ecr_checks(world.image.replace("1.2.0", "9"), ecr)
    assert (image.status, pinned) == ("fail", None) and "is not in ECR" in image.detail


def test_a_critical_ecr_finding_fails_the_scan_check():
    class Scanned:
        exceptions = boto3.client("ecr", region_name=REGION).exceptions

        def describe_images(self, **request: Any) -> dict[str, Any]:
            return {"imageDetails": [{"imageDigest": "sha256:" + "2" * 64}]}

        def describe_image_scan_findings(self, **request: Any) -> dict[str, Any]:
            counts = {"CRITICAL": 2, "HIGH": 5}
            findings = {"findingSeverityCounts": counts}
            return {"imageScanStatus": {"status": "COMPLETE"}, "imageScanFindings": findings}

    _, scan, _ = ecr_checks("1.dkr.ecr.us-east-1.amazonaws.com/mcp:1", Scanned())
    assert scan.status == "fail" and "2 critical" in scan.detail


def test_a_slow_p99_fails_the_watch_only_with_enough_requests(world):
    world.cloudwatch.figures = {"requests": 5, "errors": 1, "p99": 9.0}
    assert release(world.target, world.image).outcome == "kept"  # 5 requests say nothing
    world.path.write_text(world.path.read_text().replace("Color: green", "Color: blue"))
    world.stack.config[ACTIVE_KEY] = "blue"
    world.alb.client.modify_listener(
        ListenerArn=world.alb.listener, DefaultActions=world.alb.forward("blue")
    )
    world.cloudwatch.figures = {"requests": 400, "errors": 0, "p99": 9.0}
    report = release(world.target, world.image)
    assert report.outcome == "rolled-back" and "p99 9.000 s above" in report.error


def test_the_ssh_of_an_aws_fleet_runs_every_command_through_sudo():
    fleet = Fleet("prod", ("echo",), (), "hosts/aws.py", sudo=True)
    result = Fleet.run(fleet, "green1", ["docker", "inspect", "mcp-service"])
    assert result.stdout.strip() == "green1 sudo -n sh -c 'docker inspect mcp-service'"


def test_status_of_an_aws_stack_reads_the_alb_the_hosts_and_dynamodb(world, monkeypatch):
    from typer.testing import CliRunner

    from mcpdeploy import cli

    release(world.target, world.image)
    world.alb.ec2.stop_instances(InstanceIds=[world.alb.host("blue", 1)["id"]])
    monkeypatch.setattr(cli, "target_for", lambda stack: world.target)
    result = CliRunner().invoke(cli.app, ["status", "--stack", "prod", "--json"])
    doc = json.loads(result.stdout)
    health = {h["name"]: h["health"] for h in doc["hosts"]}
    assert health["green1"] == 200 and health["blue1"] == 200
    assert health["blue2"].startswith("unused")
    images = {h["name"]: h["image"] for h in doc["hosts"]}
    assert images["green2"] == world.pinned
    (last,) = doc["releases"]
    assert (last["kind"], last["outcome"], last["to_color"]) == ("release", "kept", "green")
    # Pulumi.prod.yaml says blue serves, and blue2 is down: exit 1.
    assert doc["active_color"] == "blue" and result.exit_code == 1


def test_the_kill_switch_of_an_aws_stack_runs_on_an_active_host(world, monkeypatch):
    from typer.testing import CliRunner

    from mcpdeploy import cli, targets

    monkeypatch.setattr(targets, "target_for", lambda stack: world.target)
    result = CliRunner().invoke(cli.app, ["ops", "disable", "--stack", "prod"])
    assert result.exit_code == 0, result.output
    assert "MCP API disabled" in result.stdout and "blue1" in result.stdout
    (call,) = [c for c in CALLS if "disable" in c[1]]
    # Pulumi.prod.yaml says blue serves: its first host, in the service's container.
    assert call[0] == "blue1" and call[1][:2] == ["docker", "exec"]


def test_the_cache_settings_of_an_aws_stack_change_on_an_active_host(world, monkeypatch):
    from typer.testing import CliRunner

    from mcpdeploy import cli, targets

    monkeypatch.setattr(targets, "target_for", lambda stack: world.target)
    result = CliRunner().invoke(cli.app, ["ops", "cache", "--off", "--ttl", "60", "-s", "prod"])
    assert result.exit_code == 0, result.output
    assert "read-tool cache off, TTL 60 s (set from blue1)" in result.stdout
    (call,) = [c for c in CALLS if "cache" in c[1]]
    assert call[0] == "blue1" and call[1] == [
        "docker",
        "exec",
        "mcp-service",
        "mcp-service",
        "cache",
        "--disable",
    ]


def test_maintenance_on_aws_is_a_listener_rule_answering_the_api_only(world, monkeypatch):
    from typer.testing import CliRunner

    from mcpdeploy import cli, targets
    from mcpdeploy.access import MAINTENANCE_BODY, MAINTENANCE_RULE_TAG

    monkeypatch.setattr(targets, "target_for", lambda stack: world.target)
    client, listener = world.alb.client, world.alb.listener
    runner = CliRunner()
    on = runner.invoke(cli.app, ["ops", "maintenance", "on", "--stack", "prod"])
    assert on.exit_code == 0, on.output
    assert "maintenance ON" in on.stdout and "Retry-After" not in on.stdout
    (rule,) = [
        r for r in client.describe_rules(ListenerArn=listener)["Rules"] if not r["IsDefault"]
    ]
    assert rule["Priority"] == "1"  # ahead of every other rule
    assert rule["Conditions"][0]["PathPatternConfig"]["Values"] == ["/api/*"]  # not /health*
    (action,) = rule["Actions"]
    answer = action["FixedResponseConfig"]
    assert (answer["StatusCode"], answer["ContentType"]) == ("503", "application/json")
    assert json.loads(answer["MessageBody"]) == MAINTENANCE_BODY
    tags = client.describe_tags(ResourceArns=[rule["RuleArn"]])["TagDescriptions"][0]["Tags"]
    assert [t["Key"] for t in tags] == [MAINTENANCE_RULE_TAG]
    # The listener still forwards everything else to the serving color.
    assert serving(world) == "blue"
    again = runner.invoke(cli.app, ["ops", "maintenance", "on", "--stack", "prod"])
    assert again.exit_code == 0 and len(client.describe_rules(ListenerArn=listener)["Rules"]) == 2
    status = runner.invoke(cli.app, ["ops", "maintenance", "status", "--stack", "prod", "--json"])
    (state,) = json.loads(status.stdout)
    assert state["on"] is True and state["rule"] == rule["RuleArn"]
    off = runner.invoke(cli.app, ["ops", "maintenance", "off", "--stack", "prod"])
    assert off.exit_code == 0 and "maintenance off" in off.stdout
    assert [r["IsDefault"] for r in client.describe_rules(ListenerArn=listener)["Rules"]] == [True]


def test_rotate_key_on_aws_puts_the_new_key_in_secrets_manager_never_on_screen(world, monkeypatch):
    from typer.testing import CliRunner

    from mcpdeploy import cli, targets

    secrets = boto3.client("secretsmanager", region_name=REGION)
    old = "mcp_" + "oldkey" * 10
    secrets.create_secret(Name="/mcpdeploy/prod/mcp-api-key", SecretString=old)
    monkeypatch.setattr(targets, "target_for", lambda stack: world.target)
    result = CliRunner().invoke(
        cli.app, ["ops", "rotate-key", "--stack", "prod", "--grace-hours", "2"]
    )
    assert result.exit_code == 0, result.output
    current = secrets.get_secret_value(SecretId="/mcpdeploy/prod/mcp-api-key")
    assert current["SecretString"] == ROTATED_KEY and "AWSCURRENT" in current["VersionStages"]
    assert "Secrets Manager /mcpdeploy/prod/mcp-api-key" in result.stdout
    assert ROTATED_KEY not in result.output and old not in result.output
    (call,) = [c for c in CALLS if "rotate" in c[1]]
    assert call[0] == "blue1"  # the serving color's first host (Pulumi.prod.yaml: blue)
