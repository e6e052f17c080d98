"""Policies against the program run with other settings: what a stack-file edit does."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from guardrails import POLICIES
from mocked_stack import Stack, of_policy, registered_stack, violations
from pulumi_harness import PROD_LIKE


def _run(tmp_path: Any, stack: str = "prod", **aws: Any) -> Stack:
    config = copy.deepcopy(PROD_LIKE)
    config["mcpdeploy:aws"].update(aws)
    return registered_stack(tmp_path, config, stack)


def test_prod_database_without_deletion_protection_is_refused(tmp_path: Any) -> None:
    stack = _run(tmp_path, database={"deletionProtection": False})
    found = of_policy(violations(POLICIES, stack), "rds-deletion-protection")
    assert len(found) == 1
    assert "aws.database.deletionProtection: true in Pulumi.prod.yaml" in found[0].message


def test_other_stacks_may_drop_deletion_protection(tmp_path: Any) -> None:
    stack = _run(tmp_path, stack="staging", database={"deletionProtection": False})
    assert violations(POLICIES, stack) == []


def test_protected_stacks_are_configurable(tmp_path: Any) -> None:
    stack = _run(tmp_path, stack="staging", database={"deletionProtection": False})
    config = {"rds-deletion-protection": {"stacks": ["prod", "staging"]}}
    assert len(of_policy(violations(POLICIES, stack, config), "rds-deletion-protection")) == 1


def test_minimum_retention_is_configurable(prod_stack: Stack) -> None:
    config = {"rds-backup-retention": {"minimumRetentionDays": 30.0}}
    found = of_policy(violations(POLICIES, prod_stack, config), "rds-backup-retention")
    assert "set backup_retention_period >= 30" in found[0].message


@pytest.fixture(scope="module")
def bastion_stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return _run(tmp_path_factory.mktemp("bastion"), access="bastion", bastion="admin@203.0.113.5")


def test_ssh_from_admins_needs_the_admin_cidrs_in_policy_config(bastion_stack: Stack) -> None:
    found = of_policy(violations(POLICIES, bastion_stack), "security-group-ssh-admins-only")
    assert len(found) == 1
    assert "from 203.0.113.0/28" in found[0].message


@pytest.mark.parametrize("admins", [["203.0.113.0/28"], ["203.0.113.0/24", "2001:db8::/32"]])
def test_ssh_from_configured_admin_cidrs_passes(bastion_stack: Stack, admins: list[str]) -> None:
    config = {"security-group-ssh-admins-only": {"adminCidrs": admins}}
    assert violations(POLICIES, bastion_stack, config) == []


def test_switching_to_green_keeps_one_active_color(tmp_path: Any) -> None:
    config = copy.deepcopy(PROD_LIKE)
    config["mcpdeploy:activeColor"] = "green"
    assert violations(POLICIES, registered_stack(tmp_path, config)) == []


@pytest.mark.parametrize(("canary", "refused"), [(10, False), (50, True)])
def test_canary_share_must_leave_one_color_in_charge(
    tmp_path: Any, canary: int, refused: bool
) -> None:
    stack = _run(tmp_path, canaryWeight=canary)
    found = of_policy(violations(POLICIES, stack), "blue-green-one-active-color")
    assert bool(found) is refused, found
