"""Post a Slack-compatible alert ({"text": ...}) to the webhook (runs as mcp-alert@UNIT).

Usage: alert.py --webhook-file FILE [--ca CA] UNIT. The text names the host, the failed
unit and what its last run printed. FILE holds the webhook URL; when it is empty (no
alertWebhook in the settings) the alert only goes to the journal. The webhook's certificate
is verified against the system's CAs plus CA (an internal webhook, like the lab's).
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

JOURNAL_LINES = 50
ALERT_LINES = 8
TIMEOUT_SECONDS = 15
# systemd's own lines about the unit: the alert says what the job itself said.
SYSTEMD_LINES = ("Failed to start ", "Finished ", "Started ", "Stopped ", "Deactivated ")


def alert_text(host: str, unit: str, journal: str) -> str:
    """The alert's one message: where, what, and what the failed run itself printed."""
    lines = journal.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith("Starting ")]
    last_run = lines[starts[-1] + 1 :] if starts else lines
    said = [
        line
        for line in last_run
        if line.strip() and not line.startswith((f"{unit}:", *SYSTEMD_LINES))
    ]
    return f"[{host}] {unit} failed\n" + "\n".join(said[-ALERT_LINES:])


def unit_journal(unit: str) -> str:
    """The unit's last journal lines (the failing check prints why it failed)."""
    result = subprocess.run(
        [
            "journalctl",
            "--unit",
            unit,
            "--lines",
            str(JOURNAL_LINES),
            "--output",
            "cat",
            "--no-pager",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    return result.stdout


def post(url: str, text: str, ca_file: str | None = None) -> int:
    """POST ``{"text": text}`` as JSON to ``url``; return the HTTP status."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    # The URL is the operator's alertWebhook setting, validated as https:// by the schema.
    request = urllib.request.Request(  # noqa: S310
        url,
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=context) as response:  # noqa: S310 - see above
        return int(response.status)


def main(argv: list[str] | None = None) -> int:
    """Build the alert for the unit and post it, or log it when no webhook is set."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--webhook-file", type=Path, required=True)
    parser.add_argument("--ca")
    parser.add_argument("unit")
    args = parser.parse_args(argv)
    unit = args.unit
    text = alert_text(socket.gethostname(), unit, unit_journal(unit))
    url = args.webhook_file.read_text().strip()
    if not url:
        print(f"no alert webhook configured; alert: {text}")
        return 0
    status = post(url, text, args.ca)
    print(f"alert for {unit} posted: HTTP {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
