"""PostgreSQL and Redis on the data host (roles/data; guide: Database Security).

Clients run on an app host (the only hosts the firewall lets in) with python3 alone: a
small PostgreSQL wire-protocol client (TLS, SCRAM-SHA-256) and a RESP client, so the test
needs no package the app role does not install. Passwords reach the app host inside the
client script's environment for the run's duration only.
"""

from __future__ import annotations

import json
import shlex

import pytest

from mcpdeploy.credentials import DATABASE, OWNER_ROLE, RUNTIME_ROLE, stack_credentials
from roles.data import redis as redis_role

CA_PATH = "/tmp/mcpdeploy-test-data-ca.crt"  # on the app host, removed after the module

# One PostgreSQL session: optional TLS, SCRAM-SHA-256 login, then each statement in turn.
# Prints {"login": error|null, "results": [error|null per statement]}.
PG_CLIENT = r"""
import base64, hashlib, hmac, json, os, secrets, socket, ssl, struct, sys
(address, user, database), use_tls = sys.argv[1:4], sys.argv[4] == "tls"
statements = sys.argv[5:]
password, ca = os.environ["PW"], os.environ["CA"]
sock = socket.create_connection((address, 5432), timeout=5)
if use_tls:
    sock.sendall(struct.pack("!ii", 8, 80877103))
    assert sock.recv(1) == b"S"
    sock = ssl.create_default_context(cafile=ca).wrap_socket(sock, server_hostname=address)
def send(kind, body):
    sock.sendall(kind + struct.pack("!i", len(body) + 4) + body)
def read():
    head = b""
    while len(head) < 5:
        chunk = sock.recv(5 - len(head))
        if not chunk:
            return b"X", b""
        head += chunk
    size, body = struct.unpack("!i", head[1:])[0] - 4, b""
    while len(body) < size:
        body += sock.recv(size - len(body))
    return head[:1], body
def error(body):
    fields = dict((f[:1], f[1:].decode()) for f in body.split(b"\0") if f)
    return fields.get(b"M", "error")
params = f"user\0{user}\0database\0{database}\0\0".encode()
sock.sendall(struct.pack("!ii", len(params) + 8, 196608) + params)
nonce, login = base64.b64encode(secrets.token_bytes(18)).decode(), None
while True:
    kind, body = read()
    if kind == b"E" or kind == b"X":
        login = error(body) if kind == b"E" else "connection closed"
        break
    if kind == b"R":
        code = struct.unpack("!i", body[:4])[0]
        if code == 10:
            first = ("n,,n=,r=" + nonce).encode()
            send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
        elif code == 11:
            server_first = body[4:].decode()
            attrs = dict(item.split("=", 1) for item in server_first.split(","))
            salted = hashlib.pbkdf2_hmac(
                "sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
            client_key = hmac.new(salted, b"Client Key", "sha256").digest()
            final = "c=biws,r=" + attrs["r"]
            auth = ",".join(["n=,r=" + nonce, server_first, final]).encode()
            signature = hmac.new(hashlib.sha256(client_key).digest(), auth, "sha256").digest()
            proof = bytes(a ^ b for a, b in zip(client_key, signature))
            send(b"p", (final + ",p=" + base64.b64encode(proof).decode()).encode())
    if kind == b"Z":
        break
results = []
for statement in statements if login is None else []:
    send(b"Q", statement.encode() + b"\0")
    outcome = None
    while True:
        kind, body = read()
        if kind == b"E":
            outcome = error(body)
        if kind in (b"Z", b"X"):
            break
    results.append(outcome)
print(json.dumps({"login": login, "results": results}))
"""

# One Redis connection: optional TLS, then each command (space-separated words); prints
# the first line of each reply, or "closed" once the server has hung up.
REDIS_CLIENT = r"""
import json, os, socket, ssl, sys
address, use_tls, commands = sys.argv[1], sys.argv[2] == "tls", sys.argv[3:]
sock = socket.create_connection((address, 6379), timeout=5)
if use_tls:
    sock = ssl.create_default_context(cafile=os.environ["CA"]).wrap_socket(
        sock, server_hostname=address)
replies = []
for command in commands:
    words = [os.environ["PW"] if w == "$PW" else w for w in command.split()]
    try:
        sock.sendall(b"".join([f"*{len(words)}\r\n".encode()]
                              + [f"${len(w)}\r\n{w}\r\n".encode() for w in words]))
        data = sock.recv(65536)
    except OSError:
        data = b""
    replies.append(data.decode(errors="replace").split("\r\n")[0] if data else "closed")
print(json.dumps(replies))
"""


@pytest.fixture(scope="module")
def data_address(topology):
    addresses = [h["address"] for h in topology.values() if h["role"] == "data"]
    if not addresses:
        pytest.skip("no data host in the topology")
    return addresses[0]


@pytest.fixture(scope="module")
def data_host(lab_hosts, topology):
    return next(lab_hosts[name] for name, h in topology.items() if h["role"] == "data")


@pytest.fixture(scope="module")
def app_host(lab_hosts, topology, data_host):
    """An app host, with the stack CA (from the data host) where the clients read it."""
    name = next(name for name, h in topology.items() if h["role"] == "app")
    client = lab_hosts[name]
    ca = data_host.file("/etc/redis/tls/ca.crt").content_string
    client.check_output(f"printf %s {shlex.quote(ca)} > {CA_PATH}")
    yield client
    client.run(f"rm -f {CA_PATH}")


@pytest.fixture(scope="module")
def credentials(pytestconfig):
    return stack_credentials(pytestconfig.getoption("stack"), "file")


def _run(app_host, script, password, *args):
    command = " ".join(shlex.quote(a) for a in ("python3", "-c", script, *args))
    out = app_host.check_output(f"PW={shlex.quote(password)} CA={CA_PATH} {command}")
    return json.loads(out)


def postgres_session(app_host, address, user, password, *statements, tls=True):
    mode = "tls" if tls else "plain"
    return _run(app_host, PG_CLIENT, password, address, user, DATABASE, mode, *statements)


def redis_session(app_host, address, password, *commands, tls=True):
    return _run(app_host, REDIS_CLIENT, password, address, "tls" if tls else "plain", *commands)


def test_postgres_and_redis_active_and_enabled(data_host):
    for unit in ("postgresql@15-main", "redis-server"):
        service = data_host.service(unit)
        assert service.is_running, unit
        assert service.is_enabled, unit


def test_postgres_and_redis_listen_on_the_private_address_only(data_host, data_address):
    for port in (5432, 6379):
        listening = [s for s in data_host.socket.get_listening_sockets() if s.endswith(f":{port}")]
        assert listening == [f"tcp://{data_address}:{port}"]


def test_pg_hba_trusts_no_one_and_admits_tls_scram_only(data_host):
    rules = data_host.check_output(
        "cd / && runuser -u postgres -- psql -XAt -F ' ' -c "
        "\"SELECT type, array_to_string(user_name, ','), auth_method FROM pg_hba_file_rules\""
    ).splitlines()
    assert "local postgres peer" in rules
    others = [rule for rule in rules if rule != "local postgres peer"]
    assert others
    assert all(rule.startswith("hostssl ") and rule.endswith(" scram-sha-256") for rule in others)


def test_postgres_stores_scram_verifiers_only(data_host):
    stored = data_host.check_output(
        "cd / && runuser -u postgres -- psql -XAt -c "
        f'"SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname IN '
        f"('{OWNER_ROLE}', '{RUNTIME_ROLE}')\""
    ).splitlines()
    assert stored == ["SCRAM-SHA-256$", "SCRAM-SHA-256$"]


def test_runtime_role_logs_in_over_tls_from_an_app_host(app_host, data_address, credentials):
    session = postgres_session(
        app_host, data_address, RUNTIME_ROLE, credentials.db_runtime_password, "SELECT 1"
    )
    assert session == {"login": None, "results": [None]}


def test_login_without_tls_refused(app_host, data_address, credentials):
    session = postgres_session(
        app_host, data_address, RUNTIME_ROLE, credentials.db_runtime_password, tls=False
    )
    assert "no encryption" in session["login"]


def test_wrong_password_refused(app_host, data_address):
    session = postgres_session(app_host, data_address, RUNTIME_ROLE, "not-the-password")
    assert "password authentication failed" in session["login"]


def test_runtime_role_cannot_create_tables(app_host, data_address, credentials):
    session = postgres_session(
        app_host, data_address, RUNTIME_ROLE, credentials.db_runtime_password,
        "CREATE TABLE mcpdeploy_test_runtime (id int)",
    )  # fmt: skip
    assert "permission denied for schema public" in session["results"][0]


def test_runtime_role_gets_dml_on_tables_the_owner_creates_later(
    app_host, data_address, credentials
):
    table = "mcpdeploy_test_default_privileges"
    owner = postgres_session(
        app_host, data_address, OWNER_ROLE, credentials.db_owner_password,
        f"DROP TABLE IF EXISTS {table}", f"CREATE TABLE {table} (id serial, note text)",
    )  # fmt: skip
    assert owner == {"login": None, "results": [None, None]}
    try:
        runtime = postgres_session(
            app_host, data_address, RUNTIME_ROLE, credentials.db_runtime_password,
            f"INSERT INTO {table} (note) VALUES ('x')", f"SELECT * FROM {table}",
            f"DROP TABLE {table}",
        )  # fmt: skip
        assert runtime["results"][:2] == [None, None]
        assert "must be owner" in runtime["results"][2]
    finally:
        postgres_session(app_host, data_address, OWNER_ROLE, credentials.db_owner_password,
                         f"DROP TABLE IF EXISTS {table}")  # fmt: skip


def test_redis_service_user_works_over_tls(app_host, data_address, credentials):
    key = "railspress:mcp:test:mcpdeploy"
    replies = redis_session(
        app_host, data_address, credentials.redis_password,
        f"AUTH {redis_role.SERVICE_USER} $PW", "PING", f"SET {key} 1 EX 10", f"INCR {key}",
    )  # fmt: skip
    assert replies == ["+OK", "+PONG", "+OK", ":2"]


def test_redis_without_tls_refused(app_host, data_address, credentials):
    replies = redis_session(
        app_host, data_address, credentials.redis_password,
        f"AUTH {redis_role.SERVICE_USER} $PW", "PING", tls=False,
    )  # fmt: skip
    assert "+PONG" not in replies


def test_redis_default_user_disabled(app_host, data_address, credentials):
    assert redis_session(app_host, data_address, "", "PING")[0].startswith("-NOAUTH")


@pytest.mark.parametrize(
    "command", ["FLUSHALL", "FLUSHDB", "CONFIG GET maxmemory", "KEYS *", "DEBUG SLEEP 0",
                "SHUTDOWN", "MODULE LIST", "GET other:namespace"],
)  # fmt: skip
def test_redis_service_user_denied_dangerous_commands(app_host, data_address, credentials, command):
    replies = redis_session(
        app_host, data_address, credentials.redis_password,
        f"AUTH {redis_role.SERVICE_USER} $PW", command,
    )  # fmt: skip
    assert replies[0] == "+OK"
    # DEBUG is also off server-wide (enable-debug-command no, Redis 7's default).
    assert replies[1].startswith(("-NOPERM", "-ERR DEBUG command not allowed"))


@pytest.mark.parametrize(
    ("parameter", "attribute"),
    [("maxmemory", "max_memory_mb"), ("maxmemory-policy", "max_memory_policy")],
)
def test_redis_memory_bounded_with_the_settings_policy(data_host, data_address, settings,
                                                       parameter, attribute):  # fmt: skip
    # The admin user's password never leaves the data host.
    value = data_host.check_output(
        f'REDISCLI_AUTH="$(cat {redis_role.ADMIN_PASSWORD})" redis-cli --no-auth-warning '
        f"--tls --cacert {redis_role.TLS_DIR}/ca.crt -h {data_address} --user admin "
        f"CONFIG GET {parameter}"
    ).splitlines()[1]
    wanted = getattr(settings.data.redis, attribute)
    assert value == (str(wanted * 1024 * 1024) if attribute == "max_memory_mb" else wanted)
