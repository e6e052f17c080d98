"""The guide's health_check.sh: GET /health/mcp on each target; exit 1 naming each failure.

Usage: health_check.py --server-name DOMAIN [--ca FILE] [--port 443] ADDRESS...
Each address is reached over HTTPS and its certificate verified for DOMAIN (the edge and
the app hosts all serve the domain's name), against the system's CAs plus ``--ca``.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import ssl
import sys

PATH = "/health/mcp"
TIMEOUT_SECONDS = 10


class NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address, with SNI, Host and certificate check for another name."""

    def __init__(self, address: str, port: int, server_name: str, context: ssl.SSLContext) -> None:
        super().__init__(address, port, timeout=TIMEOUT_SECONDS, context=context)
        self.server_name = server_name

    def connect(self) -> None:
        """Open the TCP connection to the address, the TLS session for the name."""
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.server_name)  # type: ignore[attr-defined]


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The system's CAs, plus the deployment's internal CA when given."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def check(address: str, port: int, server_name: str, context: ssl.SSLContext) -> str | None:
    """None when ``address`` answers 200 on /health/mcp, else why not."""
    connection = NamedHTTPSConnection(address, port, server_name, context)
    try:
        connection.request(
            "GET", PATH, headers={"Host": server_name, "User-Agent": "mcp-health-check"}
        )
        response = connection.getresponse()
        body = response.read(300).decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        return f"{address}:{port}{PATH}: {exc.__class__.__name__}: {exc}"
    finally:
        connection.close()
    if response.status != 200:
        return f"{address}:{port}{PATH}: HTTP {response.status} {body}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Check every address; print one line per failure, exit 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server-name", required=True)
    parser.add_argument("--ca")
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("addresses", nargs="+")
    args = parser.parse_args(argv)
    context = tls_context(args.ca)
    failures = [
        reason
        for address in args.addresses
        if (reason := check(address, args.port, args.server_name, context)) is not None
    ]
    for reason in failures:
        print(f"MCP health check failed: {reason}")
    if not failures:
        print(f"MCP health check passed on {len(args.addresses)} target(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
