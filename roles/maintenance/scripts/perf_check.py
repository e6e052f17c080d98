"""The guide's Performance Monitoring: error rate and slow responses over a window.

Usage: perf_check.py --url URL --error-percent 5 --slow-seconds 5 --token-file F STATE_FILE
Reads the service's Prometheus metrics (with the token in F),
compares them with the previous run's counters kept in STATE_FILE, and exits 1 when more
than ``--error-percent`` of the window's responses were 5xx or any took longer than
``--slow-seconds``. The window is the time between two runs (the timer's interval).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "mcp_http_requests"
LATENCY = "mcp_http_request_duration_seconds"
TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Counters:
    """Cumulative counts since the service started."""

    requests: float
    errors: float
    slow: float


def read_counters(text: str, slow_seconds: float) -> Counters:
    """Total requests, 5xx responses and responses slower than ``slow_seconds``."""
    requests = errors = within = total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.name == REQUESTS and sample.name == f"{REQUESTS}_total":
                requests += sample.value
                if sample.labels.get("status", "").startswith("5"):
                    errors += sample.value
            elif family.name == LATENCY and sample.name == f"{LATENCY}_bucket":
                bound = sample.labels["le"]
                if bound == "+Inf":
                    total += sample.value
                elif float(bound) == slow_seconds:
                    within += sample.value
    return Counters(requests=requests, errors=errors, slow=total - within)


def judge(previous: Counters | None, current: Counters, error_percent: float) -> list[str]:
    """The window's problems, empty when it was healthy (or is the first window)."""
    if previous is None or current.requests < previous.requests:
        return []  # no baseline yet, or the service restarted: the counters began again
    requests = current.requests - previous.requests
    errors = current.errors - previous.errors
    slow = current.slow - previous.slow
    problems = []
    if requests and errors / requests * 100 > error_percent:
        problems.append(
            f"error rate {errors / requests:.1%} ({errors:.0f} of {requests:.0f} responses 5xx)"
            f" above {error_percent}%"
        )
    if slow > 0:
        problems.append(f"{slow:.0f} response(s) slower than the threshold")
    return problems


def fetch(url: str, token: str) -> str:
    """The metrics exposition text."""
    # The URL is fixed by the role (the service on 127.0.0.1), never user input.
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - see above
        return response.read().decode()


def main(argv: list[str] | None = None) -> int:
    """Judge the window since the last run; remember the counters for the next one."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--error-percent", type=float, required=True)
    parser.add_argument("--slow-seconds", type=float, required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("state_file", type=Path)
    args = parser.parse_args(argv)
    token = args.token_file.read_text().strip()
    current = read_counters(fetch(args.url, token), args.slow_seconds)
    previous = (
        Counters(**json.loads(args.state_file.read_text())) if args.state_file.exists() else None
    )
    args.state_file.write_text(json.dumps(asdict(current)))
    problems = judge(previous, current, args.error_percent)
    for problem in problems:
        print(f"MCP performance alert: {problem} (threshold {args.slow_seconds}s)")
    if not problems:
        print("MCP performance within thresholds for this window")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
