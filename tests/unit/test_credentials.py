"""Secrets are generated once, kept root-only, reused, and never shown in a repr."""

from __future__ import annotations

from cryptography import x509

from mcpdeploy.credentials import NAMES, file_credentials, file_host_tls


def test_file_secrets_are_generated_once_root_only_and_reused(tmp_path):
    first = file_credentials(tmp_path / "secrets")
    again = file_credentials(tmp_path / "secrets")
    assert first == again
    assert len({first.api_key, first.db_owner_password, first.redis_password}) == 3
    assert len(first.api_key) >= 64
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    for name in NAMES.values():
        assert (tmp_path / "secrets" / name).stat().st_mode & 0o777 == 0o600


def test_secrets_never_appear_in_repr(tmp_path):
    creds = file_credentials(tmp_path / "secrets")
    shown = repr(creds) + str(creds)
    assert creds.api_key not in shown and creds.db_runtime_password not in shown


def test_host_certificate_names_the_host_and_chains_to_the_ca(tmp_path):
    tls = file_host_tls(tmp_path, "app-blue", ["app-blue", "172.30.77.100", "mcp.lab.test"])
    cert = x509.load_pem_x509_certificate(tls.certificate.encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(n.value) for n in sans} == {"app-blue", "172.30.77.100", "mcp.lab.test"}
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(tls.ca.encode()))
    assert "[secret]" in repr(tls) and "PRIVATE KEY" not in repr(tls)
