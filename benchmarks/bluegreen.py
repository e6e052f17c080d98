"""Requests, failures and latency through the lab's edge across a blue-green event.

Runs the zero-downtime test's load (mcpdeploy/loadgen.py: open-loop pacing, several client
addresses each within the rate limits, /health + /health/mcp + MCP tools/call) for
--steady seconds, then each step of the event (by default `mcpdeploy switch --to <idle>`
and back; or the --event commands, in order) with --steady seconds after each, and prints
requests sent, failed, achieved rate and latency before, during and after every step, how
long each step ran and when traffic moved. It changes the lab: hold the lab lock, and it
puts Pulumi.lab.yaml and the edge back if a step leaves them changed.

    flock /var/lib/mcpdeploy/lab-session.lock .venv/bin/python benchmarks/bluegreen.py \\
        [--rate 220] [--clients 12] [--steady 15] \\
        [--event "release --stack lab --image REF" --event "rollback --stack lab"]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from mcpdeploy.loadgen import (
    DEFAULT_CLIENTS,
    DEFAULT_RATE,
    LoadGenerator,
    LoadPlanError,
    LoadResult,
    lab_load,
)
from mcpdeploy.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
STACK_FILE = ROOT / "Pulumi.lab.yaml"
BIN = Path(sys.executable).parent
SETUP_SECONDS = 1.0  # connection set-up at the start, left out of "before"


def keep_loading(load: LoadGenerator, seconds: float) -> None:
    until = load.clock() + seconds
    while load.clock() < until and load.running:
        time.sleep(0.1)


def run_event(load: LoadGenerator, steps: list[list[str]], steady: float) -> list[tuple]:
    """Run each step under the load; (command, began, ended, exit code) per step run."""
    marks = []
    keep_loading(load, steady)
    for argv in steps:
        began = load.clock()
        result = subprocess.run(
            [str(BIN / "mcpdeploy"), *argv], cwd=ROOT, capture_output=True, text=True, check=False
        )
        marks.append((" ".join(argv), began, load.clock(), result.returncode))
        if result.returncode != 0:
            print(f"mcpdeploy {' '.join(argv)} failed:\n{result.stderr.strip()}", file=sys.stderr)
            break
        keep_loading(load, steady)
    return marks


def dominant(result: LoadResult) -> str:
    return result.colors.most_common(1)[0][0] if result.colors else "-"


def row(name: str, window: LoadResult, baseline: float) -> str:
    ratio = window.p99 / baseline if baseline > 0 else float("nan")
    return (
        f"{name:<34} {window.sent:>7} {window.failed:>7} {window.achieved_rate:>8.1f} "
        f"{window.p50 * 1000:>8.1f} {window.p99 * 1000:>8.1f} {ratio:>9.2f}"
    )


def report(result: LoadResult, marks: list[tuple], planned: float, clients: int) -> None:
    """Print the table: windows before, during and after each step, then the moves."""
    end = max(s.due for s in result.samples) if result.samples else 0.0
    before = result.window(SETUP_SECONDS, marks[0][1] if marks else end)
    print(f"load: {planned:.0f} req/s planned from {clients} client addresses")
    print(
        f"{'window':<34} {'sent':>7} {'failed':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'p99/before':>9}"
    )
    print(row(f"before (from {SETUP_SECONDS:.0f} s: set-up left out)", before, before.p99))
    for index, (command, began, ended, _) in enumerate(marks):
        after_end = marks[index + 1][1] if index + 1 < len(marks) else end
        print(row(f"during {command}", result.window(began, ended), before.p99))
        print(row(f"after {command}", result.window(ended, after_end), before.p99))
    print(row("whole run", result, before.p99))
    print()
    for index, (command, began, ended, code) in enumerate(marks):
        old = dominant(result.window(began - 1, began))
        new = dominant(result.window(ended, ended + 1))
        line = f"{command}: ran {ended - began:.1f} s (exit {code})"
        during = result.window(began, marks[index + 1][1] if index + 1 < len(marks) else end)
        if new not in ("-", old):
            moved, last_old = during.first_due(new), during.last_due(old)
            line += f"; {old} -> {new}: first {new} answer {moved - began:.1f} s in"
            if last_old is not None:
                line += f", last {old} answer {last_old - began:.1f} s in"
        else:
            line += f"; still {old}"
        print(line)
    print("answers per color: " + ", ".join(f"{c} {n}" for c, n in sorted(result.colors.items())))
    if result.failed:
        print(f"\n{result.failed} failed:\n{result.failure_report()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE)
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS)
    parser.add_argument("--steady", type=float, default=15.0, help="seconds before/after steps")
    parser.add_argument(
        "--event",
        action="append",
        help="an mcpdeploy command run under load (repeat, in order); default: switch and back",
    )
    args = parser.parse_args()
    original = STACK_FILE.read_text()
    active = load_settings("lab").active_color
    idle = "green" if active == "blue" else "blue"
    steps = [shlex.split(e) for e in args.event or [f"switch --to {idle}", f"switch --to {active}"]]
    try:
        with lab_load(rate=args.rate, clients=args.clients, max_seconds=1800) as load:
            marks = run_event(load, steps, args.steady)
            result = load.stop()
    except LoadPlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if STACK_FILE.read_text() != original:
            print("restoring Pulumi.lab.yaml and the edge", file=sys.stderr)
            STACK_FILE.write_text(original)
            subprocess.run(
                [str(BIN / "pyinfra"), "-y", "--limit", "edge", "hosts/lab.py", "deploy.py"],
                cwd=ROOT,
                capture_output=True,
                check=False,
            )
    report(result, marks, args.rate, args.clients)
    return 1 if result.failed or any(code for *_, code in marks) else 0


if __name__ == "__main__":
    raise SystemExit(main())
