"""`make test-times` (scripts/test_times.py): the per-file table, and its refusal without a
deployed lab."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "test_times.py"
spec = importlib.util.spec_from_file_location("test_times", SCRIPT)
assert spec and spec.loader
test_times = importlib.util.module_from_spec(spec)
spec.loader.exec_module(test_times)


def report(nodeid: str, when: str, duration: float, skipped: bool = False) -> SimpleNamespace:
    return SimpleNamespace(nodeid=nodeid, when=when, duration=duration, skipped=skipped)


def test_the_table_sums_phases_per_file_slowest_first():
    timings = test_times.Timings()
    for nodeid, phases in {
        "tests/hosts/test_a.py::test_one[ssh://edge]": (0.5, 1.0, 0.25),
        "tests/hosts/test_a.py::test_two": (0.0, 2.0, 0.0),
        "tests/lab/test_b.py::test_slow": (10.0, 60.0, 20.0),
    }.items():
        for when, seconds in zip(test_times.PHASES, phases, strict=True):
            timings.pytest_runtest_logreport(report(nodeid, when, seconds))
    timings.pytest_runtest_logreport(report("tests/lab/test_c.py::test_skip", "setup", 0.1, True))
    lines = timings.table(wall=125.0).splitlines()
    assert lines[0].split() == ["file", "tests", "setup", "call", "teardown", "total"]
    assert lines[1].split() == ["tests/lab/test_b.py", "1", "10.0", "60.0", "20.0", "90.0"]
    assert lines[2].split() == ["tests/hosts/test_a.py", "2", "0.5", "3.0", "0.2", "3.8"]
    assert lines[3].split()[:2] == ["tests/lab/test_c.py", "1"]
    assert lines[-1] == "3 files, 4 tests, 94 s in tests; wall time 125 s (2.1 min)"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ('{"up": false, "ca_cert": null}', "the lab is not up"),
        ("", "mcpdeploy lab status failed"),
    ],
)
def test_without_a_lab_it_refuses_and_names_make_lab(monkeypatch, capsys, status, expected):
    def fake_run(argv, **_):
        assert argv[1:] == ["lab", "status", "--json"]
        return subprocess.CompletedProcess(argv, 1, stdout=status, stderr="no engine")

    monkeypatch.setattr(test_times.subprocess, "run", fake_run)
    ran = []
    monkeypatch.setattr(test_times.pytest, "main", lambda *a, **k: ran.append(a) or 0)
    assert test_times.main([]) == 2
    assert ran == []  # no test was started
    error = capsys.readouterr().err
    assert expected in error and "make lab" in error, error
