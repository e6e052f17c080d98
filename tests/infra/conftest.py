"""Fixtures for the AWS program's tests; the mocks themselves are in pulumi_harness.py."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pulumi_harness import PROD_LIKE, Run, run_program, write_project


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
