"""The lab image every host of a deploy asks for: built and pushed once, never raced.

pyinfra loads deploy.py for every host at once and each asks for the same image; two
pushes of one layer at a time made the registry answer 500 (a CI run failed on it)."""

from __future__ import annotations

import importlib
import threading
import time

import pytest

from mcpdeploy import images

# The module (mcpdeploy.lab's own ``topology`` attribute is a function of that name).
topology = importlib.import_module("mcpdeploy.lab.topology")

REFERENCE = f"{topology.REGISTRY_NAME}:{topology.REGISTRY_PORT}/mcpdeploy/app"
DIGEST = "sha256:" + "d" * 64


class Registry:
    """The lab registry as release_image sees it: a manifest lookup and a slow push."""

    def __init__(self) -> None:
        self.tags: set[str] = set()
        self.pushes: list[str] = []
        self.in_push = 0
        self.overlapped = False

    def digest(self, repository: str, tag: str) -> str | None:
        return DIGEST if tag in self.tags else None

    def push(self, repository: str, tag: str, source_tag: str, progress) -> None:
        self.in_push += 1
        self.overlapped |= self.in_push > 1
        time.sleep(0.2)  # a push takes a while: long enough for the others to arrive
        self.pushes.append(tag)
        self.tags.add(tag)
        self.in_push -= 1


def test_hosts_asking_at_once_get_one_build_and_push_and_the_same_digest(tmp_path, monkeypatch):
    registry = Registry()
    monkeypatch.setattr(topology, "STATE_DIR", tmp_path)
    monkeypatch.setattr(images, "app_source_tag", lambda: "src-test")
    monkeypatch.setattr(images, "_lab_manifest_digest", registry.digest)
    monkeypatch.setattr(images, "_build_and_push", registry.push)
    answers: list[str] = []
    hosts = [
        threading.Thread(target=lambda: answers.append(images.release_image(REFERENCE)))
        for _ in range(4)
    ]
    for host in hosts:
        host.start()
    for host in hosts:
        host.join(10)
    assert registry.pushes == ["src-test"] and not registry.overlapped
    assert answers == [f"{REFERENCE}@{DIGEST}"] * 4


def test_a_tag_the_registry_lacks_is_never_built_under_that_name(tmp_path, monkeypatch):
    registry = Registry()
    monkeypatch.setattr(topology, "STATE_DIR", tmp_path)
    monkeypatch.setattr(images, "app_source_tag", lambda: "src-test")
    monkeypatch.setattr(images, "_lab_manifest_digest", registry.digest)
    with pytest.raises(images.ImageError, match="has no mcpdeploy/app:v9: push it"):
        images.release_image(f"{REFERENCE}:v9")


_HOLD = """
import sys, time
from pathlib import Path
from mcpdeploy.engine import exclusive
with exclusive(Path(sys.argv[1])):
    print(f"in {time.monotonic()}", flush=True)
    time.sleep(0.3)
    print(f"out {time.monotonic()}", flush=True)
"""


def test_builds_in_two_processes_take_turns(tmp_path):
    """`make test` builds the service image in the service tests and the lab deploy at
    once: the build lock lets one process in at a time (pip download and debootstrap
    into shared directories would race)."""
    import subprocess
    import sys

    lock = tmp_path / "image-build.lock"
    argv = [sys.executable, "-c", _HOLD, str(lock)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    spans = []
    for proc in procs:
        out, _ = proc.communicate(timeout=30)
        marks = dict(line.split() for line in out.splitlines())
        spans.append((float(marks["in"]), float(marks["out"])))
    first, second = sorted(spans)
    assert first[1] <= second[0], spans
