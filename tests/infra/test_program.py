"""The AWS program under mocks: security-relevant properties of every component."""

from __future__ import annotations

import json

import pulumi_aws as aws
import pytest
from pulumi_harness import ACCOUNT, PROD_LIKE, Run, run_program, write_project

from mcpdeploy.credentials import NAMES
from mcpdeploy.releaselog import release_table
from mcpdeploy.settings import SettingsError

SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's wire marker of a secret value


def secret(value: object) -> object:
    """The plain value of an input that must arrive as a Pulumi secret."""
    assert isinstance(value, dict) and SECRET_SIG in value, f"not a secret: {value!r}"
    return value["value"]


def rules(run: Run, kind: str) -> list[dict]:
    return [
        r.inputs
        for r in run.mocks.of_type(f"aws:vpc/securityGroup{kind}Rule:SecurityGroup{kind}Rule")
    ]


def group_id(run: Run, role: str) -> str:
    (group,) = [
        g
        for g in run.mocks.of_type("aws:ec2/securityGroup:SecurityGroup")
        if g.name.endswith(f"-{role}")
    ]
    return f"{group.name}-id"


def test_every_component_is_a_mcpdeploy_aws_component(prod_run: Run):
    components = {r.typ for r in prod_run.mocks.resources if r.typ.startswith("mcpdeploy:")}
    assert components == {
        f"mcpdeploy:aws:{c}"
        for c in (
            "Network", "SecurityGroups", "Database", "Cache", "Tls", "LoadBalancer", "Hosts",
            "Registry", "Secrets", "Backups", "Alarms", "Releases",
        )
    }  # fmt: skip


def test_subnets_span_the_configured_azs_and_private_ones_get_no_public_ip(prod_run: Run):
    subnets = [s.inputs for s in prod_run.mocks.of_type("aws:ec2/subnet:Subnet")]
    assert len({s["availabilityZone"] for s in subnets}) == 3
    assert all(s.get("mapPublicIpOnLaunch") is False for s in subnets)
    assert len(prod_run.mocks.of_type("aws:ec2/natGateway:NatGateway")) == 3


def test_one_nat_gateway_when_configured(tmp_path, prod_config):
    prod_config["mcpdeploy:aws"]["natGateways"] = "one"
    run = run_program(write_project(tmp_path, prod_config))
    assert len(run.mocks.of_type("aws:ec2/natGateway:NatGateway")) == 1


def test_vpc_flow_logs_go_to_cloudwatch_with_a_role(prod_run: Run):
    flow = prod_run.mocks.one("aws:ec2/flowLog:FlowLog").inputs
    assert flow["trafficType"] == "ALL" and flow["logDestinationType"] == "cloud-watch-logs"
    assert flow["iamRoleArn"]
    assert prod_run.mocks.one("aws:cloudwatch/logGroup:LogGroup").inputs["retentionInDays"] == 90


def test_internet_reaches_only_the_load_balancer_on_443_and_80(prod_run: Run):
    public = [
        r
        for r in rules(prod_run, "Ingress")
        if r.get("cidrIpv4") == "0.0.0.0/0" or r.get("cidrIpv6") == "::/0"
    ]
    assert {r["securityGroupId"] for r in public} == {group_id(prod_run, "lb")}
    assert {r["fromPort"] for r in public} == {80, 443}


def test_hosts_admit_443_from_the_load_balancer_only_and_no_ssh_with_ssm(prod_run: Run):
    to_hosts = [
        r for r in rules(prod_run, "Ingress") if r["securityGroupId"] == group_id(prod_run, "hosts")
    ]
    assert to_hosts == [
        {
            **to_hosts[0],
            "fromPort": 443,
            "toPort": 443,
            "referencedSecurityGroupId": group_id(prod_run, "lb"),
        }
    ]


def test_ssh_from_admin_cidrs_only_with_a_bastion(tmp_path, prod_config):
    prod_config["mcpdeploy:aws"].update(access="bastion", bastion="ops@jump.example.com")
    run = run_program(write_project(tmp_path, prod_config))
    ssh = [r for r in rules(run, "Ingress") if r["fromPort"] == 22]
    assert [(r["securityGroupId"], r["cidrIpv4"]) for r in ssh] == [
        (group_id(run, "hosts"), "203.0.113.0/28")
    ]


def test_database_and_redis_admit_only_the_hosts_group(prod_run: Run):
    ingress = rules(prod_run, "Ingress")
    for role, port in (("database", 5432), ("cache", 6379)):
        (rule,) = [r for r in ingress if r["securityGroupId"] == group_id(prod_run, role)]
        assert (rule["fromPort"], rule["referencedSecurityGroupId"]) == (
            port,
            group_id(prod_run, "hosts"),
        )


def test_no_rule_admits_the_service_port_3000(prod_run: Run):
    assert all(
        3000 not in (r["fromPort"], r["toPort"])
        for r in rules(prod_run, "Ingress") + rules(prod_run, "Egress")
    )


def test_rds_is_encrypted_private_tls_only_and_protected(prod_run: Run):
    db = prod_run.mocks.one("aws:rds/instance:Instance").inputs
    assert db["storageEncrypted"] is True
    assert db["kmsKeyId"] and db["performanceInsightsKmsKeyId"]
    assert db["publiclyAccessible"] is False
    assert db["manageMasterUserPassword"] is True and "password" not in db
    assert db["backupRetentionPeriod"] >= 7
    assert db["deletionProtection"] is True
    assert db["skipFinalSnapshot"] is False and db["finalSnapshotIdentifier"]
    assert db["performanceInsightsEnabled"] is True
    assert (db["engine"], db["engineVersion"], db["multiAz"]) == ("postgres", "16", True)
    params = prod_run.mocks.one("aws:rds/parameterGroup:ParameterGroup").inputs
    assert params["family"] == "postgres16"
    assert ("rds.force_ssl", "1") in [(p["name"], p["value"]) for p in params["parameters"]]


def test_redis_encrypts_requires_auth_and_fails_over(prod_run: Run):
    redis = prod_run.mocks.one("aws:elasticache/replicationGroup:ReplicationGroup").inputs
    assert redis["transitEncryptionEnabled"] is True and redis["atRestEncryptionEnabled"] is True
    assert len(secret(redis["authToken"])) >= 16
    assert redis["automaticFailoverEnabled"] is True and redis["multiAzEnabled"] is True


def test_single_node_redis_has_no_failover(tmp_path, prod_config):
    prod_config["mcpdeploy:aws"]["cache"] = {"nodes": 1}
    run = run_program(write_project(tmp_path, prod_config))
    redis = run.mocks.one("aws:elasticache/replicationGroup:ReplicationGroup").inputs
    assert redis["automaticFailoverEnabled"] is False and redis["multiAzEnabled"] is False


def test_https_listener_uses_the_tls13_policy_and_http_redirects(prod_run: Run):
    listeners = {
        r.inputs["port"]: r.inputs for r in prod_run.mocks.of_type("aws:lb/listener:Listener")
    }
    assert listeners[443]["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert listeners[443]["certificateArn"]
    redirect = listeners[80]["defaultActions"][0]
    assert redirect["type"] == "redirect" and redirect["redirect"]["protocol"] == "HTTPS"


def test_alb_logs_access_and_each_color_checks_readiness_over_https(prod_run: Run):
    alb = prod_run.mocks.one("aws:lb/loadBalancer:LoadBalancer").inputs
    assert alb["accessLogs"]["enabled"] is True and alb["dropInvalidHeaderFields"] is True
    groups = prod_run.mocks.of_type("aws:lb/targetGroup:TargetGroup")
    assert sorted(g.inputs["tags"]["Color"] for g in groups) == ["blue", "green"]
    for group in groups:
        assert (group.inputs["protocol"], group.inputs["port"]) == ("HTTPS", 443)
        assert group.inputs["healthCheck"]["path"] == "/health/mcp"
        assert group.inputs["deregistrationDelay"] == 30


def test_hosts_require_imdsv2_encrypted_roots_no_public_ip_and_are_tagged(prod_run: Run):
    instances = prod_run.mocks.of_type("aws:ec2/instance:Instance")
    assert len(instances) == 4
    for instance in instances:
        spec = instance.inputs
        assert spec["metadataOptions"]["httpTokens"] == "required"
        assert spec["rootBlockDevice"]["encrypted"] is True
        assert spec["rootBlockDevice"]["volumeType"] == "gp3"
        assert spec["associatePublicIpAddress"] is False
        assert spec["ami"] == "ami-0fec2c2e2017f4e7b"
        assert {"Project", "Stack", "Color", "Role"} <= set(spec["tags"])
        assert spec["tags"]["Stack"] == "prod" and spec["tags"]["Role"] == "app"
    attachments = prod_run.mocks.of_type("aws:lb/targetGroupAttachment:TargetGroupAttachment")
    by_color = {a.name.rsplit("-", 1)[1]: a.inputs["targetGroupArn"] for a in attachments}
    assert {h: arn.rsplit(":", 1)[1] for h, arn in by_color.items()} == {
        "blue1": "mcpdeploy-prod-blue", "blue2": "mcpdeploy-prod-blue",
        "green1": "mcpdeploy-prod-green", "green2": "mcpdeploy-prod-green",
    }  # fmt: skip


def test_instance_role_is_least_privilege(prod_run: Run):
    (policy,) = [
        p
        for p in prod_run.mocks.of_type("aws:iam/rolePolicy:RolePolicy")
        if "flow-logs" not in p.name
    ]
    statements = json.loads(policy.inputs["policy"])["Statement"]
    wildcard = [s["Action"] for s in statements if s["Resource"] == "*"]
    assert wildcard == ["ecr:GetAuthorizationToken"]
    secrets = next(s for s in statements if s["Action"] == "secretsmanager:GetSecretValue")
    assert all(":rds!" not in arn for arn in secrets["Resource"])  # not the master secret
    attached = prod_run.mocks.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment").inputs
    assert attached["policyArn"].endswith("/AmazonSSMManagedInstanceCore")


def test_ecr_scans_keeps_immutable_tags_and_expires_old_images(prod_run: Run):
    repo = prod_run.mocks.one("aws:ecr/repository:Repository").inputs
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert repo["imageScanningConfiguration"]["scanOnPush"] is True
    rule = json.loads(
        prod_run.mocks.one("aws:ecr/lifecyclePolicy:LifecyclePolicy").inputs["policy"]
    )["rules"][0]
    assert rule["selection"]["countNumber"] == 20


def test_image_is_built_for_amd64_from_app_image_and_pushed_to_ecr(prod_run: Run):
    image = prod_run.mocks.one("docker:index/image:Image").inputs
    assert image["build"]["platform"] == "linux/amd64"
    assert image["build"]["context"].endswith("app_image")
    assert image["imageName"].endswith("/mcpdeploy/prod/mcp-service:1.4.2")
    assert secret(image["registry"])["server"].startswith(f"{ACCOUNT}.dkr.ecr.")


def test_secrets_use_rotation_friendly_names(prod_run: Run):
    names = sorted(
        s.inputs["name"] for s in prod_run.mocks.of_type("aws:secretsmanager/secret:Secret")
    )
    assert names == sorted(
        f"/mcpdeploy/prod/{n}"
        for n in ("mcp-api-key", "secret-key-base", "redis-auth-token", "db-owner-password",
                  "db-runtime-password", "metrics-token", "nginx-tls")
    )  # fmt: skip


def test_every_secret_a_deploy_reads_is_created_by_the_stack(prod_run: Run):
    # deploy.py reads credentials.NAMES from Secrets Manager (aws_credentials): one missing
    # here, such as the performance check's metrics-token, fails the first AWS deploy.
    created = {s.inputs["name"] for s in prod_run.mocks.of_type("aws:secretsmanager/secret:Secret")}
    assert {f"/mcpdeploy/prod/{name}" for name in NAMES.values()} <= created


def test_buckets_are_encrypted_private_versioned_expiring_and_tls_only(prod_run: Run):
    mocks = prod_run.mocks
    assert len(mocks.of_type("aws:s3/bucket:Bucket")) == 2
    for block in mocks.of_type("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"):
        flags = (
            "blockPublicAcls",
            "blockPublicPolicy",
            "ignorePublicAcls",
            "restrictPublicBuckets",
        )
        assert all(block.inputs[f] is True for f in flags)
    for sse in mocks.of_type(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ):
        assert sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in (
            "aws:kms",
            "AES256",
        )
    for versioning in mocks.of_type("aws:s3/bucketVersioning:BucketVersioning"):
        assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled"
    for policy in mocks.of_type("aws:s3/bucketPolicy:BucketPolicy"):
        deny = json.loads(policy.inputs["policy"])["Statement"][0]
        assert deny["Effect"] == "Deny" and deny["Condition"] == {
            "Bool": {"aws:SecureTransport": "false"}
        }
    (backups,) = [
        lc.inputs
        for lc in mocks.of_type("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
        if not lc.name.endswith("-logs")
    ]
    assert backups["rules"][0]["expiration"]["days"] == 30


def test_acm_is_validated_in_the_hosted_zone(prod_run: Run):
    cert = prod_run.mocks.one("aws:acm/certificate:Certificate").inputs
    assert (cert["domainName"], cert["validationMethod"]) == ("mcp.example.com", "DNS")
    records = {
        r.inputs["type"]: r.inputs for r in prod_run.mocks.of_type("aws:route53/record:Record")
    }
    assert records["CNAME"]["zoneId"] == "Z0123456789ABCDEFGHIJ"
    assert records["A"]["aliases"][0]["name"].endswith(".elb.amazonaws.com")
    assert prod_run.mocks.of_type("aws:acm/certificateValidation:CertificateValidation")


def test_without_a_hosted_zone_validation_records_are_exported(tmp_path, prod_config):
    del prod_config["mcpdeploy:aws"]["hostedZone"]
    run = run_program(write_project(tmp_path, prod_config))
    assert not run.mocks.of_type("aws:route53/record:Record")
    assert run.outputs["certificateValidationRecords"][0]["type"] == "CNAME"
    assert "aws:route53/getZone:getZone" not in run.mocks.calls


def test_internal_ca_issues_the_nginx_certificate(prod_run: Run):
    ca = prod_run.mocks.one("tls:index/selfSignedCert:SelfSignedCert").inputs
    assert ca["isCaCertificate"] is True
    leaf = prod_run.mocks.one("tls:index/locallySignedCert:LocallySignedCert").inputs
    assert "server_auth" in leaf["allowedUses"]


def test_alarms_cover_the_guide_thresholds(prod_run: Run):
    alarms = {
        a.name.removeprefix("mcpdeploy-prod-"): a.inputs
        for a in prod_run.mocks.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    }
    rate = alarms["5xx-rate"]
    assert rate["threshold"] == 5
    assert any("expression" in q and q["returnData"] for q in rate["metricQueries"])
    assert (alarms["p99-latency"]["extendedStatistic"], alarms["p99-latency"]["threshold"]) == (
        "p99",
        5,
    )
    assert {
        "unhealthy-blue",
        "unhealthy-green",
        "db-cpu",
        "db-storage",
        "redis-memory-001",
        "redis-memory-002",
    } <= set(alarms)
    topic = "arn:aws:sns:us-east-1:123456789012:mcpdeploy-prod"
    assert all(a["alarmActions"] == [topic] for a in alarms.values())
    protocols = sorted(
        s.inputs["protocol"]
        for s in prod_run.mocks.of_type("aws:sns/topicSubscription:TopicSubscription")
    )
    assert protocols == ["email", "https"]


def test_alert_webhook_secret_is_read_from_pulumi_config(prod_run: Run):
    (hook,) = [
        s.inputs
        for s in prod_run.mocks.of_type("aws:sns/topicSubscription:TopicSubscription")
        if s.inputs["protocol"] == "https"
    ]
    assert secret(hook["endpoint"]) == "https://x.test/a"


def test_outputs_are_complete(prod_run: Run):
    out = prod_run.outputs
    assert out["activeColor"] == "blue"
    assert [h["name"] for h in out["hosts"]["blue"]] == ["blue1", "blue2"]
    assert all(
        h["id"] and h["address"].startswith("10.40.")
        for c in ("blue", "green")
        for h in out["hosts"][c]
    )
    assert out["databaseEndpoint"].endswith(":5432") and out["redisEndpoint"]
    assert set(out["secretArns"]) >= {
        "mcp-api-key",
        "secret-key-base",
        "redis-auth-token",
        "nginx-tls",
    }
    assert out["imageRef"].split("@")[1].startswith("sha256:")
    assert out["albDnsName"].endswith(".elb.amazonaws.com")
    assert out["certificateStatus"] == "PENDING_VALIDATION"


def test_the_program_refuses_a_stack_without_an_ssh_key(tmp_path, prod_config):
    del prod_config["mcpdeploy:aws"]["sshPublicKey"]
    with pytest.raises(SettingsError, match="sshPublicKey"):
        run_program(write_project(tmp_path, prod_config))


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"mcpdeploy:adminCidrs": ["10.0.0.300/24"]}, "mcpdeploy:adminCidrs.0"),
        ({"mcpdeploy:activeColor": "red"}, "mcpdeploy:activeColor"),
        ({"mcpdeploy:appHostsPerColor": 0}, "mcpdeploy:appHostsPerColor"),
        ({"mcpdeploy:domain": None}, "mcpdeploy:domain"),
        (
            {"mcpdeploy:aws": {**PROD_LIKE["mcpdeploy:aws"], "canaryWeight": 150}},
            "mcpdeploy:aws.canaryWeight",
        ),
        (
            {"mcpdeploy:aws": {**PROD_LIKE["mcpdeploy:aws"], "hostedZone": "other.org"}},
            "mcpdeploy:aws",
        ),
    ],
    ids=[
        "bad CIDR",
        "unknown color",
        "zero hosts",
        "missing domain",
        "canary out of range",
        "zone not owning domain",
    ],
)
def test_bad_settings_stop_the_program_before_any_resource(tmp_path, prod_config, change, key):
    prod_config.update(change)
    prod_config = {k: v for k, v in prod_config.items() if v is not None}
    with pytest.raises(SettingsError) as caught:
        run_program(write_project(tmp_path, prod_config))
    assert key in [k for k, _, _ in caught.value.problems]


def test_provider_types_reject_a_misspelt_argument():
    with pytest.raises(TypeError, match="storage_encryptd"):
        aws.rds.Instance(
            "typo", engine="postgres", instance_class="db.t4g.micro", storage_encryptd=True
        )


def test_the_release_table_is_named_for_the_cli_encrypted_and_recoverable(prod_run: Run):
    table = prod_run.mocks.one("aws:dynamodb/table:Table").inputs
    assert table["name"] == release_table("prod")  # DynamoLog finds it by the stack name
    assert (table["hashKey"], table["rangeKey"]) == ("pk", "sk")
    assert table["billingMode"] == "PAY_PER_REQUEST"
    assert table["pointInTimeRecovery"]["enabled"] is True
    assert table["serverSideEncryption"]["enabled"] is True
    assert table["deletionProtectionEnabled"] is True
