"""The certificate clients get: trusted, naming the domain, and how long it has left."""

from __future__ import annotations

import socket
import ssl
from datetime import UTC, datetime

from cryptography import x509

from mcpdeploy.preflight.check import Check


def served_certificate(address: str, port: int, server_name: str) -> bytes:
    """The certificate (DER) served at ``address:port`` for ``server_name`` (SNI), read
    without verifying it so that a bad one can still be described."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # verified separately by verification_error
    with (
        socket.create_connection((address, port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("the server sent no certificate")
    return der


def verification_error(address: str, port: int, server_name: str, ca_pem: str | None) -> str:
    """Why a client that trusts the system's CAs (and ``ca_pem``, the stack's own CA)
    rejects the chain served for ``server_name``; empty when it accepts it."""
    context = ssl.create_default_context()
    if ca_pem:
        context.load_verify_locations(cadata=ca_pem)
    try:
        with (
            socket.create_connection((address, port), timeout=10) as sock,
            context.wrap_socket(sock, server_hostname=server_name),
        ):
            return ""
    except ssl.SSLCertVerificationError as exc:
        return str(exc.verify_message or exc)


def dns_names(certificate: x509.Certificate) -> list[str]:
    """The certificate's DNS subject alternative names (what clients match)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return san.value.get_values_for_type(x509.DNSName)


def names_domain(pattern: str, domain: str) -> bool:
    """Whether a DNS name (``*.`` wildcard: exactly one leftmost label) covers ``domain``."""
    if pattern.startswith("*."):
        label, _, rest = domain.partition(".")
        return bool(label) and rest == pattern[2:]
    return pattern == domain


def certificate_check(
    der: bytes, domain: str, warning_days: int, refused: str, now: datetime | None = None
) -> Check:
    """Judge a served certificate: not expired, names ``domain``, trusted (``refused``
    empty), and at least ``warning_days`` (maintenance.certificateWarningDays) left."""
    certificate = x509.load_der_x509_certificate(der)
    now = now or datetime.now(UTC)
    expires = certificate.not_valid_after_utc
    days = (expires - now).days
    names = dns_names(certificate)
    seen = (
        f"{', '.join(names) or 'no DNS names'}; issuer {certificate.issuer.rfc4514_string()}; "
        f"expires {expires:%Y-%m-%d} ({days} days)"
    )
    renew = "renew it and deploy the edge (`pyinfra -y --limit edge hosts/<stack>.py deploy.py`)"
    if expires <= now:
        return Check("certificate", "fail", f"expired: {seen}", renew)
    if not any(names_domain(name, domain) for name in names):
        return Check(
            "certificate",
            "fail",
            f"does not name {domain}: {seen}",
            f"issue one for {domain} and deploy the edge",
        )
    if refused:
        return Check(
            "certificate",
            "fail",
            f"not trusted ({refused}): {seen}",
            "serve the whole chain, from a CA clients trust",
        )
    if days < warning_days:
        warning = f"maintenance.certificateWarningDays is {warning_days}"
        return Check("certificate", "warn", f"{seen}; {warning}", renew)
    return Check("certificate", "pass", seen)


def served_certificate_check(
    address: str, port: int, domain: str, ca_pem: str | None, warning_days: int
) -> Check:
    """The certificate served at ``address:port`` for ``domain``, as a client gets it."""
    try:
        der = served_certificate(address, port, domain)
        refused = verification_error(address, port, domain, ca_pem)
    except OSError as exc:
        return Check(
            "certificate",
            "fail",
            f"no TLS answer on {address}:{port}: {exc}",
            "is the edge up? `systemctl status nginx` on it (lab: `mcpdeploy lab status`)",
        )
    return certificate_check(der, domain, warning_days, refused)
