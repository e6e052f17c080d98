"""roles/docker's rendered files: daemon.json, the ECR client config, the DOCKER-USER rules."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from mcpdeploy.settings import load_settings
from roles.docker import client_config, daemon_config, docker_user_rules, json_text


def lab_daemon() -> dict:
    app = load_settings("lab").app
    return daemon_config(
        bridge=app.docker_bridge, log_max_size=app.log_max_size, log_max_files=app.log_max_files
    )


def test_daemon_json_hardening_keys():
    daemon = lab_daemon()
    assert daemon["no-new-privileges"] is True
    assert daemon["live-restore"] is True
    assert daemon["userland-proxy"] is False
    assert daemon["icc"] is False
    # Guide, Log Aggregation: json-file, 10m x 3.
    assert daemon["log-driver"] == "json-file"
    assert daemon["log-opts"] == {"max-size": "10m", "max-file": "3"}
    assert daemon["bip"] == "172.17.0.1/16"
    assert "insecure-registries" not in daemon


def test_daemon_json_text_is_stable_json():
    text = json_text(lab_daemon())
    assert json.loads(text) == lab_daemon()
    assert text == json_text(dict(reversed(list(lab_daemon().items()))))


def test_ecr_registries_use_the_credential_helper():
    registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    config = client_config([registry])
    assert config == {"credHelpers": {registry: "ecr-login"}}
    assert "auths" not in config  # no stored password


def test_docker_user_rules_drop_new_forwarded_connections_from_outside():
    rules = docker_user_rules().splitlines()
    assert rules.index(":DOCKER-USER - [0:0]") < rules.index("COMMIT")
    drop = rules.index("-A DOCKER-USER -m conntrack --ctstate NEW -j DROP")
    established = rules.index("-A DOCKER-USER -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")
    bridges = [i for i, r in enumerate(rules) if r.startswith("-A DOCKER-USER -i ")]
    assert established < drop and bridges and all(i < drop for i in bridges)
    assert rules[drop + 1] == "-A DOCKER-USER -j RETURN"


def test_docker_user_rules_parse_with_iptables_restore():
    result = subprocess.run(
        ["iptables-restore", "--test", "--noflush"],
        input=docker_user_rules(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("bridge", ["8.8.8.1/24", "172.17.0.1/30", "172.17.0.0/16"])
def test_bridge_must_be_a_private_host_address_with_room(bridge):
    from mcpdeploy.settings import SettingsError, parse_settings

    document = {
        "config": {
            "mcpdeploy:domain": "mcp.example.com",
            "mcpdeploy:activeColor": "blue",
            "mcpdeploy:image": "app:1",
            "mcpdeploy:adminCidrs": ["10.0.0.0/8"],
            "mcpdeploy:app": {"dockerBridge": bridge},
        }
    }
    with pytest.raises(SettingsError, match=re.escape("mcpdeploy:app.dockerBridge")):
        parse_settings(document)
