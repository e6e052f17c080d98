"""Run inside the service's image with its runtime environment file (not imported here).

Connects with ``DATABASE_URL`` and ``REDIS_URL`` exactly as the service does (the runtime
role, verify-full TLS against the mounted stack CA) and prints one JSON line: each
server's version, the user it logged in as and whether TLS is in use (PostgreSQL: and
its connection limits), or the error, scrubbed of the URLs and their passwords.
"""

import json
import os
from urllib.parse import unquote, urlsplit

secrets = []
for variable in ("DATABASE_URL", "REDIS_URL"):
    url = os.environ.get(variable, "")
    password = urlsplit(url).password or ""
    secrets += [value for value in (url, password, unquote(password)) if value]


def failure(exc: Exception) -> dict:
    """The error's first line without any secret."""
    text = (str(exc).strip().splitlines() or [""])[0]
    for secret in secrets:
        text = text.replace(secret, "[secret]")
    return {"error": f"{type(exc).__name__}: {text}"}


out = {}
try:
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), current_setting('server_version_num'),"
            " current_user, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()),"
            " current_setting('max_connections')::int,"
            " current_setting('superuser_reserved_connections')::int"
            " + coalesce(current_setting('reserved_connections', true)::int, 0)"
        ).fetchone()
    out["postgres"] = {
        "version": row[0],
        "number": int(row[1]),
        "user": row[2],
        "tls": row[3],
        "max_connections": row[4],
        "reserved_connections": row[5],
    }
except Exception as exc:
    out["postgres"] = failure(exc)
try:
    import redis

    url = os.environ["REDIS_URL"]
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    # HELLO is allowed to every ACL user; INFO is not granted to the service's user.
    hello = client.execute_command("HELLO", "2")
    fields = dict(zip(hello[::2], hello[1::2], strict=True))
    out["redis"] = {
        "version": fields[b"version"].decode(),
        "user": urlsplit(url).username or "default",
        "tls": url.startswith("rediss://"),
    }
except Exception as exc:
    out["redis"] = failure(exc)
print(json.dumps(out))
