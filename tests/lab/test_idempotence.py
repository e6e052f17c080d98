"""A deploy of the lab converges: run it again and pyinfra changes nothing on any host."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.lab


def _lab_up() -> bool:
    status = subprocess.run(
        [str(BIN / "mcpdeploy"), "lab", "status", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    return status.returncode == 0


def deploy() -> list[dict]:
    """``pyinfra -y --json hosts/lab.py deploy.py`` as a user runs it; its per-op results."""
    result = subprocess.run(
        [str(BIN / "pyinfra"), "-y", "--json", "hosts/lab.py", "deploy.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)["results"]["operations"]


@pytest.fixture(scope="module")
def second_deploy() -> list[dict]:
    """The results of a deploy of a converged lab.

    A first deploy converges the lab (or repairs any drift since the last one); when it
    changes nothing, the lab was converged already and that deploy is itself the one to
    judge, so the second runs only when the first changed something. In `make test` the lab
    has just been deployed and every test before this one restores what it changes: one
    deploy (about 23 s) instead of two.
    """
    if not _lab_up():
        pytest.fail("the lab is not up: run `mcpdeploy lab up` (make test-lab does)")
    first = deploy()
    if not any(op["success"] for op in first):
        return first
    return deploy()


def test_second_deploy_changes_nothing(second_deploy):
    changed = {op["name"]: op["success"] for op in second_deploy if op["success"]}
    assert changed == {}


def test_second_deploy_has_no_errors(second_deploy):
    failed = {op["name"]: op["error"] for op in second_deploy if op["error"]}
    assert failed == {}
