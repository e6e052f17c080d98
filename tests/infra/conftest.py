"""Fixtures for the AWS program's tests; the mocks themselves are in pulumi_harness.py."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from aws_fakes import Alb, FakeStack, moto_alb
from pulumi_harness import PROD_LIKE, Run, run_program, write_project

from mcpdeploy.aws_switch import ACTIVE_KEY


def pytest_configure(config: pytest.Config) -> None:
    # pulumi_aws warns about its own deprecated modules when it is imported.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:pulumi_aws.*")


@pytest.fixture
def prod_config() -> dict[str, Any]:
    return copy.deepcopy(PROD_LIKE)


@pytest.fixture(scope="session")
def prod_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One run of the program with production-like settings, shared by read-only tests."""
    return run_program(write_project(tmp_path_factory.mktemp("prod"), copy.deepcopy(PROD_LIKE)))


@pytest.fixture
def alb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Alb]:
    """A moto ALB (aws_fakes.moto_alb), with fake credentials only."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield from moto_alb()


@pytest.fixture
def stack(alb: Alb) -> FakeStack:
    return FakeStack(alb, {ACTIVE_KEY: "blue", "mcpdeploy:image": "registry/mcp:1.0.0"})
