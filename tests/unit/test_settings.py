"""The settings schema: defaults from the guide, every bad value named with what is allowed."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path

import pytest
import yaml

from mcpdeploy.settings import (
    PACKAGE_ROOT,
    SettingsError,
    load_settings,
    parse_settings,
    project_root,
)

VALID = {
    "config": {
        "aws:region": "eu-west-1",
        "mcpdeploy:domain": "mcp.example.com",
        "mcpdeploy:activeColor": "blue",
        "mcpdeploy:image": "registry.example.com/railspress/mcp:1.4.2",
        "mcpdeploy:adminCidrs": ["203.0.113.0/24"],
    }
}


def with_config(**changes: object) -> dict:
    doc = copy.deepcopy(VALID)
    for key, value in changes.items():
        name = f"mcpdeploy:{key}"
        if value is None:
            doc["config"].pop(name)
        else:
            doc["config"][name] = value
    return doc


def test_guide_defaults_fill_what_the_stack_leaves_out():
    settings = parse_settings(VALID)
    assert (
        settings.rate_limits.per_minute,
        settings.rate_limits.per_hour,
        settings.rate_limits.per_day,
    ) == (100, 1000, 10000)
    assert settings.nginx_rate_limits.mcp.rate_per_second == 10
    assert settings.nginx_rate_limits.mcp.burst == 20
    assert settings.nginx_rate_limits.api.rate_per_second == 100
    assert settings.nginx_rate_limits.api.burst == 50
    assert settings.max_request_bytes == 1048576
    assert settings.timeouts.request_seconds == 30
    assert settings.retention.audit_log_days == 90
    assert settings.retention.backup_days == 30
    assert settings.admin_cidrs == [ipaddress.ip_network("203.0.113.0/24")]


def test_other_namespaces_are_left_to_pulumi():
    assert parse_settings(VALID).domain == "mcp.example.com"


BAD = [
    ("bad CIDR", {"adminCidrs": ["10.0.0.300/24"]}, "mcpdeploy:adminCidrs.0", "CIDR"),
    ("CIDR with host bits", {"adminCidrs": ["10.0.0.1/24"]}, "mcpdeploy:adminCidrs.0", "host bits"),
    (
        "SSH open to the internet",
        {"adminCidrs": ["0.0.0.0/0"]},
        "mcpdeploy:adminCidrs.0",
        "whole internet",
    ),
    ("no admin networks", {"adminCidrs": []}, "mcpdeploy:adminCidrs", "at least 1"),
    ("unknown color", {"activeColor": "red"}, "mcpdeploy:activeColor", "'blue' or 'green'"),
    (
        "negative rate limit",
        {"rateLimits": {"perMinute": -5}},
        "mcpdeploy:rateLimits.perMinute",
        "greater than 0",
    ),
    (
        "limits out of order",
        {"rateLimits": {"perMinute": 5000, "perHour": 1000}},
        "mcpdeploy:rateLimits",
        "perMinute <= perHour <= perDay",
    ),
    ("unknown key", {"colour": "blue"}, "mcpdeploy:colour", "not a known setting"),
    (
        "unknown nested key",
        {"timeouts": {"readSeconds": 5}},
        "mcpdeploy:timeouts.readSeconds",
        "not a known setting",
    ),
    ("wrong type", {"appHostsPerColor": "two"}, "mcpdeploy:appHostsPerColor", "integer"),
    ("too many hosts", {"appHostsPerColor": 50}, "mcpdeploy:appHostsPerColor", "less than"),
    ("missing domain", {"domain": None}, "mcpdeploy:domain", "required"),
    ("domain with scheme", {"domain": "https://mcp.example.com"}, "mcpdeploy:domain", "pattern"),
    ("missing image", {"image": None}, "mcpdeploy:image", "required"),
    ("image with spaces", {"image": "my image"}, "mcpdeploy:image", "pattern"),
    (
        "plain-http CORS origin",
        {"corsOrigins": ["http://app.example.com"]},
        "mcpdeploy:corsOrigins.0",
        "https origin",
    ),
    (
        "CORS origin with a path",
        {"corsOrigins": ["https://app.example.com/x"]},
        "mcpdeploy:corsOrigins.0",
        "https origin",
    ),
    (
        "request limit too small",
        {"maxRequestBytes": 10},
        "mcpdeploy:maxRequestBytes",
        "greater than or equal to 1024",
    ),
    (
        "zero timeout",
        {"timeouts": {"requestSeconds": 0}},
        "mcpdeploy:timeouts.requestSeconds",
        "greater than 0",
    ),
    (
        "zero retention",
        {"retention": {"auditLogDays": 0}},
        "mcpdeploy:retention.auditLogDays",
        "greater than or equal to 1",
    ),
    (
        "http webhook",
        {"alertWebhook": "http://hooks.example.com/x"},
        "mcpdeploy:alertWebhook",
        "https:// URL",
    ),
    ("bad journald size", {"journaldMaxUse": "lots"}, "mcpdeploy:journaldMaxUse", "size"),
    ("public lab subnet", {"lab": {"subnet": "8.8.8.0/24"}}, "mcpdeploy:lab.subnet", "private"),
    (
        "privileged lab port",
        {"lab": {"httpsPort": 443}},
        "mcpdeploy:lab.httpsPort",
        "greater than or equal to 1024",
    ),
    ("bad deploy user", {"deployUser": "Root User"}, "mcpdeploy:deployUser", "pattern"),
    (
        "stream keep-alive as long as nginx's read timeout",
        {"app": {"streamKeepaliveSeconds": 30}},
        "mcpdeploy:app",
        "must be below timeouts.proxyReadSeconds (30)",
    ),
    (
        "negative nginx burst",
        {"nginxRateLimits": {"mcp": {"ratePerSecond": 10, "burst": -1}}},
        "mcpdeploy:nginxRateLimits.mcp.burst",
        "greater than or equal to 0",
    ),
]


@pytest.mark.parametrize(("case", "change", "key", "allowed"), BAD, ids=[b[0] for b in BAD])
def test_bad_value_is_named_with_what_is_allowed(case, change, key, allowed):
    with pytest.raises(SettingsError) as caught:
        parse_settings(with_config(**change))
    problems = {k: (v, a) for k, v, a in caught.value.problems}
    assert key in problems, caught.value
    assert allowed in problems[key][1], caught.value


def test_every_problem_is_reported_at_once():
    doc = with_config(activeColor="red", adminCidrs=["nope"], rateLimits={"perDay": -1})
    with pytest.raises(SettingsError) as caught:
        parse_settings(doc)
    keys = [k for k, _, _ in caught.value.problems]
    assert {
        "mcpdeploy:activeColor",
        "mcpdeploy:adminCidrs.0",
        "mcpdeploy:rateLimits.perDay",
    } <= set(keys)


@pytest.mark.parametrize("document", [None, [], {"config": "x"}, {"other": {}}])
def test_document_without_a_config_mapping_is_rejected(document):
    with pytest.raises(SettingsError) as caught:
        parse_settings(document)
    assert caught.value.problems[0][0] == "config"


def test_malformed_yaml_names_the_line(tmp_path: Path):
    (tmp_path / "Pulumi.broken.yaml").write_text("config:\n  mcpdeploy:domain: [unclosed\n")
    with pytest.raises(SettingsError) as caught:
        load_settings("broken", root=tmp_path)
    key, where, allowed = caught.value.problems[0]
    assert key == "yaml" and where.startswith("line ") and "valid YAML" in allowed


def test_missing_stack_file_says_how_to_create_one(tmp_path: Path):
    with pytest.raises(SettingsError) as caught:
        load_settings("staging", root=tmp_path)
    assert "Pulumi.prod.yaml" in caught.value.problems[0][2]


@pytest.mark.parametrize("name", ["Prod", "../etc", "", "a b"])
def test_stack_names_pulumi_would_refuse_are_refused(name):
    with pytest.raises(SettingsError):
        load_settings(name)


def test_secrets_are_masked_in_the_effective_settings():
    settings = parse_settings(with_config(alertWebhook={"secure": "v1:AAAAsecretcipher"}))
    shown = yaml.safe_dump(settings.masked())
    assert "AAAAsecretcipher" not in shown
    assert settings.masked()["alertWebhook"] == "[secret]"


@pytest.mark.parametrize("stack", ["lab", "prod"])
def test_committed_stacks_are_valid(stack):
    settings = load_settings(stack, root=PACKAGE_ROOT)
    assert settings.active_color in ("blue", "green")


def test_project_root_is_found_upward_like_pulumi(tmp_path: Path):
    (tmp_path / "Pulumi.yaml").write_text("name: x\n")
    nested = tmp_path / "infra" / "components"
    nested.mkdir(parents=True)
    assert project_root(nested) == tmp_path.resolve()
