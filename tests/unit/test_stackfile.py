"""Stack-file edits keep everything but the values they set."""

from __future__ import annotations

import pytest

from mcpdeploy.stackfile import StackFileError, edited

STACK = """# comment kept
config:
  mcpdeploy:domain: mcp.lab.test
  # the color that serves
  mcpdeploy:activeColor: blue  # trailing comment
  mcpdeploy:image: x/y:1
"""
DIGEST = "reg:5000/app@sha256:" + "a" * 64


def test_only_the_color_changes():
    assert edited(STACK, {"activeColor": "green"}) == STACK.replace(
        "activeColor: blue", "activeColor: green"
    )


def test_a_missing_key_is_added_after_the_active_color_and_then_replaced_in_place():
    once = edited(STACK, {"activeColor": "green", "greenImage": DIGEST})
    assert once == STACK.replace(
        "activeColor: blue  # trailing comment",
        f"activeColor: green  # trailing comment\n  mcpdeploy:greenImage: {DIGEST}",
    )
    twice = edited(once, {"greenImage": "x/y:2"})
    assert twice == once.replace(DIGEST, "x/y:2")


@pytest.mark.parametrize(
    ("text", "values", "problem"),
    [
        ("config:\n  mcpdeploy:domain: x\n", {"activeColor": "green"}, "exactly one line"),
        (
            "config:\n  mcpdeploy:activeColor: blue\n  mcpdeploy:activeColor: green\n",
            {"activeColor": "green"},
            "exactly one line",
        ),
        (STACK + "  mcpdeploy:greenImage:\n    - a\n", {"greenImage": "x/y:2"}, "a block"),
        (STACK, {"greenImage": "x/y:2 # injected"}, "plain scalar"),
    ],
)
def test_edits_that_cannot_be_made_safely_are_refused(text, values, problem):
    with pytest.raises(StackFileError, match=problem):
        edited(text, values)
