"""The AWS switch (mcpdeploy/aws_switch.py): a fake Automation API stack whose ``up`` does
what infra/ does to the listener, over a moto ALB with real target health; and the
program under Pulumi mocks, whose outputs the switch relies on."""

from __future__ import annotations

import pytest
from aws_fakes import Alb, FakeStack
from pulumi_harness import Run, run_program, write_project

from mcpdeploy.aws_switch import (
    ACTIVE_KEY,
    AwsSwitch,
    AwsSwitchError,
    serving_color,
    switch_aws,
)
from mcpdeploy.settings import COLORS


def switch(stack: FakeStack, color: str, lines: list[str] | None = None) -> AwsSwitch:
    progress = (lines if lines is not None else []).append
    return switch_aws(
        "prod", color, workspace=stack.opener, elbv2=stack.alb.client, progress=progress
    )


def serving(alb: Alb) -> str | None:
    return serving_color(alb.client, alb.listener, alb.groups)


def test_a_healthy_switch_sets_the_color_runs_up_once_and_checks_the_listener(stack):
    lines: list[str] = []
    result = switch(stack, "green", lines)
    assert stack.calls == [("set_config", ACTIVE_KEY, "green"), ("up", "green")]
    assert serving(stack.alb) == "green"
    green = [f"{h['name']} ({h['id']})" for h in stack.alb.hosts["green"]]
    assert result == AwsSwitch("prod", "blue", "green", tuple(green))
    # pulumi up's own output is streamed to the operator, line by line.
    assert " ~ aws:lb:Listener mcpdeploy-prod-https updated" in lines
    assert lines[-1] == "green is serving"


def test_an_unhealthy_target_group_refuses_before_any_config_change(stack):
    alb = stack.alb
    stopped, missing = alb.host("green", 0), alb.host("green", 1)
    alb.ec2.stop_instances(InstanceIds=[stopped["id"]])
    alb.client.deregister_targets(
        TargetGroupArn=alb.groups["green"], Targets=[{"Id": missing["id"]}]
    )
    with pytest.raises(AwsSwitchError) as refused:
        switch(stack, "green")
    message = str(refused.value)
    assert f"green1 ({stopped['id']}) unused (Target.InvalidState: " in message
    assert f"green2 ({missing['id']}) not registered in the target group" in message
    assert "blue keeps serving, nothing was changed" in message
    assert stack.calls == []
    assert stack.config[ACTIVE_KEY] == "blue" and serving(alb) == "blue"


def test_a_failing_up_puts_the_old_color_back_with_a_second_up(stack):
    stack.failing = {1}
    with pytest.raises(AwsSwitchError) as failed:
        switch(stack, "green")
    assert stack.calls == [
        ("set_config", ACTIVE_KEY, "green"),
        ("up", "green"),
        ("set_config", ACTIVE_KEY, "blue"),
        ("up", "blue"),
    ]
    message = str(failed.value)
    assert "error: update failed: creating ELBv2 Listener: AccessDenied" in message
    assert message.endswith("mcpdeploy:activeColor is blue again and the listener forwards to blue")
    assert stack.config[ACTIVE_KEY] == "blue" and serving(stack.alb) == "blue"


def test_an_up_that_leaves_the_listener_on_the_old_color_is_undone(stack):
    stack.inert = True
    with pytest.raises(AwsSwitchError, match="listener forwards to blue, not green"):
        switch(stack, "green")
    assert [c for c in stack.calls if c[0] == "up"] == [("up", "green"), ("up", "blue")]
    assert stack.config[ACTIVE_KEY] == "blue"


def test_when_putting_back_fails_too_the_error_says_what_serves(stack):
    stack.failing = {1, 2}
    with pytest.raises(AwsSwitchError) as failed:
        switch(stack, "green")
    message = str(failed.value)
    assert "putting blue back failed too" in message
    assert "the listener forwards to blue." in message
    assert "pulumi up -s prod" in message


def test_a_no_op_is_refused_without_touching_the_stack_or_aws(stack):
    with pytest.raises(AwsSwitchError, match="blue is already the active color of prod"):
        switch_aws("prod", "blue", workspace=stack.opener, elbv2=object())
    assert stack.calls == []


def test_an_unknown_color_is_refused_before_the_stack_is_opened():
    def no_stack(stack: str) -> FakeStack:
        raise AssertionError("the stack must not be opened")

    with pytest.raises(AwsSwitchError, match="unknown color 'purple': blue or green"):
        switch_aws("prod", "purple", workspace=no_stack, elbv2=object())


def test_a_stack_without_the_switch_outputs_is_refused(stack, monkeypatch):
    monkeypatch.setattr(stack.alb, "outputs", lambda active: {"activeColor": active})
    with pytest.raises(AwsSwitchError, match="no output 'targetGroupArns'"):
        switch(stack, "green")
    assert stack.calls == []


@pytest.mark.parametrize("active", COLORS)
def test_the_program_sends_the_listener_to_the_active_colors_target_group(
    tmp_path, prod_config, active
):
    run: Run = run_program(
        write_project(tmp_path, {**prod_config, "mcpdeploy:activeColor": active})
    )
    out = run.outputs
    (https,) = [r for r in run.mocks.of_type("aws:lb/listener:Listener") if r.inputs["port"] == 443]
    assert out["httpsListenerArn"].endswith(f":{https.name}")
    forward = https.inputs["defaultActions"][0]["forward"]["targetGroups"]
    weights = {g["arn"]: g["weight"] for g in forward}
    (idle,) = set(COLORS) - {active}
    assert weights == {out["targetGroupArns"][active]: 100, out["targetGroupArns"][idle]: 0}
    # The group the listener favours holds exactly the active color's hosts.
    attached = {
        a.inputs["targetId"]
        for a in run.mocks.of_type("aws:lb/targetGroupAttachment:TargetGroupAttachment")
        if a.inputs["targetGroupArn"] == out["targetGroupArns"][active]
    }
    assert attached == {h["id"] for h in out["hosts"][active]}
    assert len(attached) == prod_config["mcpdeploy:appHostsPerColor"]


def test_without_the_pulumi_cli_the_default_workspace_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AwsSwitchError, match="the Pulumi CLI is not installed"):
        switch_aws("prod", "green")
