"""Fixtures for the policy pack's tests: the pack itself and the mocked prod stack."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The pack's package (as the CLI runs it, from policies/) and the program's mock harness.
for path in (REPO / "policies", REPO / "tests" / "infra"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from mocked_stack import Stack, registered_stack  # noqa: E402
from pulumi_harness import PROD_LIKE  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    # pulumi_aws warns about its own deprecated modules when it is imported.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:pulumi_aws.*")


@pytest.fixture(scope="session")
def prod_stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """The resources the program registers for prod with production-like settings."""
    return registered_stack(tmp_path_factory.mktemp("prod"), copy.deepcopy(PROD_LIKE))
