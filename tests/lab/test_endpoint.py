"""The MCP endpoint to the spec through the edge, on the active color (tests/lab/mcp_endpoint.py;
tests/lab/test_switch.py runs the same checks on the other color while it is switched)."""

from __future__ import annotations

import pytest
from mcp_endpoint import check_endpoint
from release_harness import lab_status

from mcpdeploy.settings import load_settings

pytestmark = pytest.mark.lab


def test_the_mcp_endpoint_is_to_the_spec_through_the_edge():
    assert check_endpoint(lab_status()) == load_settings("lab").active_color
