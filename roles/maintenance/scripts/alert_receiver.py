"""The lab's alert webhook: HTTPS, POST /alerts with {"text": ...}, one JSON line per alert.

Usage: alert_receiver.py --port 9443 --certificate CRT --key KEY ALERTS_FILE
A stand-in for
Slack in the lab only: no authentication, so its port is open to the lab's own hosts only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY_BYTES = 65536


def alert_record(body: bytes, client: str, now: datetime.datetime) -> dict[str, str] | None:
    """The stored line for a Slack-shaped body, None when it is not one."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("text"), str):
        return None
    return {"received": now.isoformat(), "from": client, "text": document["text"]}


def handler_for(alerts: Path) -> type[BaseHTTPRequestHandler]:
    """A request handler appending each alert to ``alerts``."""

    class AlertHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            """Store a Slack-shaped alert; anything else is refused."""
            length = int(self.headers.get("Content-Length") or 0)
            if self.path != "/alerts" or not 0 < length <= MAX_BODY_BYTES:
                self.send_error(404 if self.path != "/alerts" else 413)
                return
            now = datetime.datetime.now(datetime.UTC)
            record = alert_record(self.rfile.read(length), self.client_address[0], now)
            if record is None:
                self.send_error(400, 'expected JSON {"text": ...}')
                return
            with alerts.open("a") as out:
                out.write(json.dumps(record) + "\n")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok")

    return AlertHandler


def main(argv: list[str] | None = None) -> int:
    """Serve until stopped."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certificate", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("alerts", type=Path)
    args = parser.parse_args(argv)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.certificate, args.key)
    server = ThreadingHTTPServer(("0.0.0.0", args.port), handler_for(args.alerts))  # noqa: S104
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"alert receiver listening on {args.port}, writing {args.alerts}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
