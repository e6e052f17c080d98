"""Secrets are generated once, kept root-only, reused, and never shown in a repr."""

from __future__ import annotations

from cryptography import x509

from mcpdeploy.credentials import NAMES, aws_credentials, file_credentials, file_host_tls


class FakeSecrets:
    """Secrets Manager's ``get_secret_value``, from a dict of secret name to value."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get_secret_value(self, SecretId: str) -> dict[str, str]:
        return {"SecretString": self.values[SecretId]}


def test_file_secrets_are_generated_once_root_only_and_reused(tmp_path):
    first = file_credentials(tmp_path / "secrets")
    again = file_credentials(tmp_path / "secrets")
    assert first == again
    values = [getattr(first, attr) for attr in NAMES]
    assert len(set(values)) == len(NAMES)
    assert all(len(value) >= 64 for value in values)
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    for name in NAMES.values():
        assert (tmp_path / "secrets" / name).stat().st_mode & 0o777 == 0o600


def test_secrets_never_appear_in_repr(tmp_path):
    creds = file_credentials(tmp_path / "secrets")
    shown = repr(creds) + str(creds)
    assert not [attr for attr in NAMES if getattr(creds, attr) in shown]


def test_the_metrics_token_is_a_secret_of_its_own_added_to_an_existing_stack(tmp_path):
    # A stack deployed before the token existed keeps its other secrets and gains the token
    # once (0600), distinct from the API key the performance check no longer uses.
    before = file_credentials(tmp_path / "secrets")
    (tmp_path / "secrets" / "metrics-token").unlink()
    after = file_credentials(tmp_path / "secrets")
    assert after.api_key == before.api_key and after.secret_key_base == before.secret_key_base
    assert after.metrics_token not in (before.metrics_token, after.api_key)
    assert (tmp_path / "secrets" / "metrics-token").stat().st_mode & 0o777 == 0o600
    assert file_credentials(tmp_path / "secrets").metrics_token == after.metrics_token


def test_aws_credentials_read_the_metrics_token_from_its_own_secret():
    client = FakeSecrets({f"/mcpdeploy/prod/{name}": f"{name}-value" for name in NAMES.values()})
    creds = aws_credentials("prod", client)
    assert creds.metrics_token == "metrics-token-value"
    assert creds.api_key == "mcp-api-key-value"


def test_host_certificate_names_the_host_and_chains_to_the_ca(tmp_path):
    tls = file_host_tls(tmp_path, "app-blue", ["app-blue", "172.30.77.100", "mcp.lab.test"])
    cert = x509.load_pem_x509_certificate(tls.certificate.encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(n.value) for n in sans} == {"app-blue", "172.30.77.100", "mcp.lab.test"}
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(tls.ca.encode()))
    assert "[secret]" in repr(tls) and "PRIVATE KEY" not in repr(tls)
