"""PostgreSQL SCRAM-SHA-256 password verifiers (RFC 5802/7677, as ``pg_authid`` stores them).

The deploy sends PostgreSQL a verifier, never the password, and decides whether a role's
password must change by checking the stored verifier against the wanted password.
Passwords are the stack's generated ASCII tokens, for which SASLprep is the identity.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

ITERATIONS = 4096  # PostgreSQL's default scram_iterations
_B64 = r"([A-Za-z0-9+/=]+)"
_VERIFIER = re.compile(rf"SCRAM-SHA-256\$(\d+):{_B64}\${_B64}:{_B64}")


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return hashlib.sha256(client_key).digest(), server_key


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The ``SCRAM-SHA-256$iterations:salt$StoredKey:ServerKey`` verifier of ``password``."""
    salt = secrets.token_bytes(16) if salt is None else salt
    stored_key, server_key = _keys(password, salt, iterations)
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def scram_verifies(verifier: str | None, password: str) -> bool:
    """Whether ``verifier`` (a ``pg_authid.rolpassword``) accepts ``password``."""
    match = _VERIFIER.fullmatch(verifier or "")
    if match is None:
        return False
    iterations, salt, stored, server = match.groups()
    stored_key, server_key = _keys(password, base64.b64decode(salt), int(iterations))
    return hmac.compare_digest(stored_key, base64.b64decode(stored)) and hmac.compare_digest(
        server_key, base64.b64decode(server)
    )
