"""Where the lab suite's time goes: ``make test-times``.

Runs the lab part of the suite (``tests/hosts tests/e2e tests/lab``, or the paths given)
against the running lab with ``--durations=0``, then prints one row per test file: its
tests, setup, call and teardown seconds, sorted by total, and the run's wall time. Refuses,
naming ``make lab``, when no lab is deployed. Exits with pytest's status.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx2
import pytest

ROOT = Path(__file__).resolve().parent.parent
LAB_PATHS = ["tests/hosts", "tests/e2e", "tests/lab"]
PHASES = ("setup", "call", "teardown")


class Timings:
    """A pytest plugin: seconds per file and phase, and tests per file."""

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(PHASES, 0.0))
        self.tests: dict[str, int] = defaultdict(int)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        path = report.nodeid.split("::", 1)[0]
        self.seconds[path][report.when] += report.duration
        if report.when == "call" or (report.when == "setup" and report.skipped):
            self.tests[path] += 1

    def table(self, wall: float) -> str:
        rows = sorted(self.seconds.items(), key=lambda item: -sum(item[1].values()))
        width = max([len("file"), *(len(path) for path, _ in rows)])
        lines = [f"{'file':<{width}}  tests   setup    call  teardown   total"]
        for path, phases in rows:
            total = sum(phases.values())
            lines.append(
                f"{path:<{width}}  {self.tests[path]:>5} {phases['setup']:>7.1f} "
                f"{phases['call']:>7.1f} {phases['teardown']:>9.1f} {total:>7.1f}"
            )
        tests = sum(self.tests.values())
        counted = sum(sum(phases.values()) for phases in self.seconds.values())
        lines.append(
            f"{len(rows)} files, {tests} tests, {counted:.0f} s in tests; "
            f"wall time {wall:.0f} s ({wall / 60:.1f} min)"
        )
        return "\n".join(lines)


def lab_problem() -> str | None:
    """Why the lab cannot be timed (not up, or its edge not answering), or None."""
    mcpdeploy = Path(sys.executable).with_name("mcpdeploy")
    result = subprocess.run(
        [str(mcpdeploy), "lab", "status", "--json"], capture_output=True, text=True, check=False
    )
    try:
        status = json.loads(result.stdout)
    except ValueError:
        return f"mcpdeploy lab status failed: {result.stderr.strip()[-300:]}"
    if not status.get("up") or not status.get("ca_cert"):
        return "the lab is not up"
    context = ssl.create_default_context(cafile=status["ca_cert"])
    url = f"{status['url']}/health/mcp"
    try:
        answer = httpx2.get(url, verify=context, timeout=10).status_code
    except httpx2.HTTPError as error:
        return f"the lab is up but not deployed: {url}: {error}"
    return None if answer == 200 else f"the lab is up but not deployed: {url} answers {answer}"


def main(argv: list[str]) -> int:
    problem = lab_problem()
    if problem:
        print(f"error: {problem}: run `make lab` first, then `make test-times`", file=sys.stderr)
        return 2
    os.chdir(ROOT)
    timings = Timings()
    started = time.monotonic()
    # httpx2 (above) loaded anyio before pytest could rewrite its plugin: harmless here.
    quiet = ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    code = pytest.main([*(argv or LAB_PATHS), "--durations=0", *quiet], plugins=[timings])
    print()
    print(timings.table(time.monotonic() - started))
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
