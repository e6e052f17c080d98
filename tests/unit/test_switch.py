"""The stack-file edit behind a switch keeps everything but the color."""

from __future__ import annotations

import pytest

from mcpdeploy.switch import SwitchError, edited_stack

STACK = """# comment kept
config:
  mcpdeploy:domain: mcp.lab.test
  # the color that serves
  mcpdeploy:activeColor: blue  # trailing comment
  mcpdeploy:image: x/y:1
"""


def test_only_the_color_changes():
    edited = edited_stack(STACK, "green")
    assert edited == STACK.replace("activeColor: blue", "activeColor: green")


@pytest.mark.parametrize(
    "text",
    [
        "config:\n  mcpdeploy:domain: x\n",
        "config:\n  mcpdeploy:activeColor: blue\n  mcpdeploy:activeColor: green\n",
    ],
)
def test_a_file_without_exactly_one_active_color_line_is_refused(text):
    with pytest.raises(SwitchError, match="exactly one line"):
        edited_stack(text, "green")
