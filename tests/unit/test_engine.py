"""Failures of the operator machine are named with the next step, not a traceback."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcpdeploy import engine, images
from mcpdeploy.cli import app

runner = CliRunner()


def test_lab_up_as_non_root_says_to_use_sudo(monkeypatch):
    monkeypatch.setattr(engine.os, "geteuid", lambda: 1000)
    result = runner.invoke(app, ["lab", "up"])
    assert result.exit_code == 1
    assert "needs root" in result.stderr and "sudo" in result.stderr
    assert "Traceback" not in result.output


def test_low_disk_space_is_refused_with_numbers(monkeypatch, tmp_path: Path):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(engine.shutil, "disk_usage", lambda _: usage(10, 9, 2**29))
    with pytest.raises(engine.EngineError, match=r"only 0\.5 GiB free .* needs 3 GiB"):
        engine.require_free_space(tmp_path)


def test_engine_that_never_answers_points_at_its_log(monkeypatch):
    monkeypatch.setattr(engine, "_ping", lambda: None)
    monkeypatch.setattr(engine, "_which", lambda _: None)
    monkeypatch.setattr(engine.Path, "is_dir", lambda self: False)
    with pytest.raises(engine.EngineError, match="dockerd is not installed"):
        engine.docker_client(timeout=0)


def test_engine_start_timeout_names_the_log(monkeypatch):
    started = []
    monkeypatch.setattr(engine, "_ping", lambda: None)
    monkeypatch.setattr(engine.Path, "is_dir", lambda self: True)
    monkeypatch.setattr(engine.subprocess, "run", lambda *a, **k: started.append(a))
    with pytest.raises(engine.EngineError, match="did not answer within 0s"):
        engine.docker_client(timeout=0)
    assert started and started[0][0] == ["systemctl", "start", "docker"]


def test_debootstrap_failure_shows_its_last_lines(monkeypatch, tmp_path: Path):
    class NoImage:
        class images:
            @staticmethod
            def get(tag):
                raise images.ImageNotFound(tag)

    monkeypatch.setattr(images, "CACHE", tmp_path)
    monkeypatch.setattr(images, "docker_client", lambda progress: NoImage)

    def fake_debootstrap(cmd, stdout, **kwargs):
        stdout.write("I: Retrieving InRelease\nE: Failed getting release file\n")
        return type("done", (), {"returncode": 1})

    monkeypatch.setattr(images.subprocess, "run", fake_debootstrap)
    with pytest.raises(images.ImageError, match=r"debootstrap failed .*Failed getting release"):
        images.ensure_debootstrap_image("mcpdeploy/test", ["python3"])
