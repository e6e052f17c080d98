"""A blue-green switch is one setting: only the HTTPS listener's forward weights change."""

from __future__ import annotations

from pulumi_harness import Run, run_program, write_project


def inputs_by_resource(run: Run) -> dict[tuple[str, str], dict]:
    found = {(r.typ, r.name): r.inputs for r in run.mocks.resources}
    assert len(found) == len(run.mocks.resources), "two resources share a type and name"
    return found


def weights(run: Run) -> dict[str, int]:
    (https,) = [r for r in run.mocks.of_type("aws:lb/listener:Listener") if r.inputs["port"] == 443]
    groups = https.inputs["defaultActions"][0]["forward"]["targetGroups"]
    return {g["arn"].rsplit("-", 1)[1]: g["weight"] for g in groups}


def run_with(tmp_path, config: dict, active: str, canary: int = 0) -> Run:
    config = {**config, "mcpdeploy:activeColor": active}
    config["mcpdeploy:aws"] = {**config["mcpdeploy:aws"], "canaryWeight": canary}
    # Same directory for both runs, as a user edits one Pulumi.prod.yaml in one checkout.
    return run_program(write_project(tmp_path, config))


def test_switching_color_changes_only_the_listener_default_action(tmp_path, prod_config):
    blue = run_with(tmp_path, prod_config, "blue")
    green = run_with(tmp_path, prod_config, "green")
    before, after = inputs_by_resource(blue), inputs_by_resource(green)
    assert before.keys() == after.keys()
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {("aws:lb/listener:Listener", "mcpdeploy-prod-https")}
    listener = ("aws:lb/listener:Listener", "mcpdeploy-prod-https")
    rest = {k: v for k, v in before[listener].items() if k != "defaultActions"}
    assert rest == {k: v for k, v in after[listener].items() if k != "defaultActions"}
    assert weights(blue) == {"blue": 100, "green": 0}
    assert weights(green) == {"blue": 0, "green": 100}
    assert (blue.outputs["activeColor"], green.outputs["activeColor"]) == ("blue", "green")


def test_canary_weight_sends_that_share_to_the_idle_color(tmp_path, prod_config):
    plain = run_with(tmp_path, prod_config, "blue")
    canary = run_with(tmp_path, prod_config, "blue", canary=10)
    before, after = inputs_by_resource(plain), inputs_by_resource(canary)
    assert {k for k in before if before[k] != after[k]} == {
        ("aws:lb/listener:Listener", "mcpdeploy-prod-https")
    }
    assert weights(canary) == {"blue": 90, "green": 10}
