"""Preflight's checks judged on known inputs: host facts, server versions, migration plans,
certificates (and a real TLS server on 127.0.0.1), registry references, scan reports,
secrets kept out of the report, and the command's exits."""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

import mcpdeploy.preflight as preflight
from mcpdeploy.cli import app
from mcpdeploy.fleet import Fleet, FleetHost
from mcpdeploy.lab.pki import LabCA
from mcpdeploy.migrations import PendingMigration, Plan
from mcpdeploy.preflight import Check, PreflightError, redact, run_preflight
from mcpdeploy.preflight.data import connections_check, dependency_checks, migrations_check
from mcpdeploy.preflight.hosts import (
    Disk,
    GiB,
    HostFacts,
    host_checks,
    host_probe_command,
    parse_host_probe,
    probe_hosts,
)
from mcpdeploy.preflight.image import (
    ScanReportError,
    image_check,
    lab_reference,
    parse_scan_report,
    scan_check,
    scan_report_path,
)
from mcpdeploy.preflight.tls import (
    certificate_check,
    names_domain,
    served_certificate,
    served_certificate_check,
    verification_error,
)
from mcpdeploy.settings import SettingsError

NOW = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
LAB = "registry.mcp.lab.test:5000"

# ---------------------------------------------------------------- hosts


def local_fleet(*hosts: FleetHost) -> Fleet:
    """A fleet whose "ssh" runs the command on this machine: ``sh -c 'eval "$1"' HOST CMD``."""
    return Fleet("lab", ("sh", "-c", 'eval "$1"'), hosts, "hosts/lab.py")


def test_the_host_probe_reads_this_machines_memory_and_disks():
    result = subprocess.run(
        ["sh", "-c", host_probe_command("app")], capture_output=True, text=True, check=True
    )
    facts = parse_host_probe(result.stdout)
    assert facts.memory_bytes > 256 * 1024**2
    mounts = {disk.mount for disk in facts.disks}
    assert "/" in mounts
    assert all(0 <= disk.used_percent <= 100 and disk.free_bytes > 0 for disk in facts.disks)


def test_a_filesystem_is_reported_once_and_missing_memory_is_an_error():
    facts = parse_host_probe(
        "memory 4294967296\ndisk / / 10737418240 40%\ndisk /var/lib/docker / 10737418240 40%\n"
    )
    assert facts == HostFacts(4 * GiB, (Disk("/", "/", 10 * GiB, 40),))
    with pytest.raises(ValueError, match="MemTotal"):
        parse_host_probe("disk / / 1 1%\n")


def test_memory_below_the_guides_minimum_fails():
    small = host_checks("app-blue", HostFacts(1 * GiB, ()), 85)
    assert [(c.name, c.status) for c in small] == [("memory app-blue", "fail")]
    assert "2 GiB" in small[0].fix
    # A 2 GiB VM reports less than 2 GiB in MemTotal: still enough.
    assert host_checks("x", HostFacts(int(1.85 * GiB), ()), 85)[0].status == "pass"


@pytest.mark.parametrize(
    ("free", "used", "status"),
    [(1 * GiB, 50, "fail"), (50 * GiB, 90, "warn"), (50 * GiB, 84, "pass")],
)
def test_disk_space_against_the_release_minimum_and_the_alert_setting(free, used, status):
    checks = host_checks("data", HostFacts(8 * GiB, (Disk("/", "/", free, used),)), 85)
    disk = checks[-1]
    assert (disk.name, disk.status) == ("disk data /", status)
    assert bool(disk.fix) == (status != "pass")


def test_reachable_hosts_are_probed_and_reported():
    fleet = local_fleet(FleetHost("app-blue", "app", "blue", "172.30.77.100"))
    checks, reachable = probe_hosts(fleet, 99)
    assert reachable == {"app-blue"}
    assert checks[0] == Check("ssh app-blue", "pass", "app at 172.30.77.100")
    assert any(c.name == "memory app-blue" for c in checks)


def test_an_unreachable_host_is_one_failed_ssh_check_naming_it():
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        ssh = ("ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", f"Port={port}")
        ssh += ("-o", "HostName=127.0.0.1", "-o", "ConnectTimeout=5")
        fleet = Fleet("lab", ssh, (FleetHost("edge", "edge", None, "172.30.77.10"),), "x")
        checks, reachable = probe_hosts(fleet, 85)
    assert reachable == set()
    assert [(c.name, c.status) for c in checks] == [("ssh edge", "fail")]
    assert "unreachable" in checks[0].detail and "refused" in checks[0].detail
    assert "edge true" in checks[0].fix


# ---------------------------------------------------------------- PostgreSQL and Redis

PG_OK = {"version": "15.8", "number": 150008, "user": "railspress_mcp", "tls": True}
REDIS_OK = {"version": "7.0.15", "user": "mcp", "tls": True}


def test_supported_versions_over_tls_pass():
    checks = dependency_checks({"postgres": PG_OK, "redis": REDIS_OK}, "app-green")
    assert [(c.name, c.status) for c in checks] == [("postgres", "pass"), ("redis", "pass")]
    assert "railspress_mcp" in checks[0].detail and "TLS" in checks[0].detail


def test_versions_below_the_guides_minimum_fail():
    old = {
        "postgres": {**PG_OK, "version": "12.9", "number": 120009},
        "redis": {**REDIS_OK, "version": "5.0.14"},
    }
    checks = dependency_checks(old, "app-green")
    assert [c.status for c in checks] == ["fail", "fail"]
    assert "13" in checks[0].detail and "6.0" in checks[1].detail


def test_connection_errors_fail_and_name_the_host():
    answer = {
        "postgres": {"error": "OperationalError: password authentication failed"},
        "redis": {"error": "ConnectionError: Connection refused"},
    }
    checks = dependency_checks(answer, "app-green")
    assert [c.status for c in checks] == ["fail", "fail"]
    assert "from app-green: OperationalError" in checks[0].detail
    assert "/etc/mcp-service/env" in checks[0].fix


@pytest.mark.parametrize(
    ("max_connections", "status"),
    [(100, "pass"), (85, "warn"), (82, "fail")],
)
def test_the_pools_of_both_colors_must_fit_what_postgres_admits(max_connections, status):
    # 20 per worker x 2 workers on 2 hosts = 80; PostgreSQL keeps 3 for its superuser.
    limits = {**PG_OK, "max_connections": max_connections, "reserved_connections": 3}
    check = connections_check(limits, per_host=40, hosts=2)
    assert check.status == status
    assert "up to 80 (40 on each of 2 app hosts)" in check.detail
    assert f"admits {max_connections - 3}" in check.detail
    assert (check.fix == "") == (status == "pass")


def test_the_guides_pool_of_25_fills_the_default_postgres_and_fails():
    limits = {**PG_OK, "max_connections": 100, "reserved_connections": 3}
    assert connections_check(limits, per_host=25 * 2, hosts=2).status == "fail"


# ---------------------------------------------------------------- migrations


def plan(applied: list[str], pending: list[tuple[str, str]]) -> Plan:
    return Plan(tuple(applied), tuple(PendingMigration(n, p) for n, p in pending))


def test_nothing_pending_passes():
    check = migrations_check(plan(["001", "002"], []), plan(["001", "002"], []), "", False)
    assert check == Check("migrations", "pass", "none pending (2 applied)")


def test_pending_expand_migrations_pass_and_are_listed():
    new = plan(["001"], [("002_add", "expand")])
    check = migrations_check(new, plan(["001"], []), "", False)
    assert (check.status, check.detail) == ("pass", "1 pending expand: 002_add")


def test_a_contract_migration_the_active_image_ships_passes():
    new = plan(["001"], [("003_drop", "contract")])
    active = plan(["001"], [("003_drop", "contract")])
    assert migrations_check(new, active, "", False).status == "pass"


def test_a_new_contract_migration_fails_unless_the_release_defers_it():
    new = plan(["001"], [("002_add", "expand"), ("003_drop", "contract")])
    active = plan(["001"], [])
    failed = migrations_check(new, active, "", False)
    assert failed.status == "fail"
    assert "003_drop is a contract migration new in this release" in failed.detail
    assert "--phase expand" in failed.fix
    deferred = migrations_check(new, active, "", True)
    assert deferred.status == "warn" and "Deferred to the next release" in deferred.detail


def test_without_the_active_images_plan_only_applied_migrations_count():
    new = plan(["001"], [("003_drop", "contract")])
    check = migrations_check(new, None, "the active color's image predates phases", False)
    assert check.status == "fail"
    assert "predates phases" in check.detail


# ---------------------------------------------------------------- certificate


def certificate(names: list[str], not_after: datetime.datetime) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - datetime.timedelta(days=400))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


def in_days(days: int) -> datetime.datetime:
    return NOW + datetime.timedelta(days=days, hours=1)


def test_a_trusted_certificate_for_the_domain_with_time_left_passes():
    check = certificate_check(
        certificate(["mcp.example.com"], in_days(90)), "mcp.example.com", 21, "", NOW
    )
    assert check.status == "pass"
    assert "mcp.example.com" in check.detail and "(90 days)" in check.detail


def test_a_certificate_close_to_expiry_warns():
    check = certificate_check(
        certificate(["mcp.example.com"], in_days(10)), "mcp.example.com", 21, "", NOW
    )
    assert check.status == "warn"
    assert "(10 days)" in check.detail and "certificateWarningDays is 21" in check.detail


def test_an_expired_certificate_fails():
    check = certificate_check(
        certificate(["mcp.example.com"], in_days(-3)), "mcp.example.com", 21, "", NOW
    )
    assert check.status == "fail" and check.detail.startswith("expired")


def test_a_certificate_for_another_name_fails():
    check = certificate_check(
        certificate(["other.example.com"], in_days(90)), "mcp.example.com", 21, "", NOW
    )
    assert check.status == "fail" and "does not name mcp.example.com" in check.detail


def test_an_untrusted_certificate_fails_with_the_reason():
    der = certificate(["mcp.example.com"], in_days(90))
    check = certificate_check(der, "mcp.example.com", 21, "self-signed certificate", NOW)
    assert check.status == "fail" and "not trusted (self-signed certificate)" in check.detail


@pytest.mark.parametrize(
    ("pattern", "domain", "covered"),
    [
        ("*.example.com", "mcp.example.com", True),
        ("*.example.com", "a.mcp.example.com", False),
        ("*.example.com", "example.com", False),
        ("mcp.example.com", "mcp.example.com", True),
    ],
)
def test_wildcards_cover_exactly_one_label(pattern, domain, covered):
    assert names_domain(pattern, domain) is covered


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A TLS server on 127.0.0.1 serving a certificate for mcp.test from a fresh CA."""
    ca = LabCA(tmp_path, "preflight test CA")
    cert, key = ca.issue(tmp_path, "server", ["mcp.test"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, ca.cert_path.read_text()
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_the_served_certificate_is_read_and_verified_over_a_real_connection(tls_server):
    port, ca_pem = tls_server
    der = served_certificate("127.0.0.1", port, "mcp.test")
    assert x509.load_der_x509_certificate(der).subject.rfc4514_string() == "CN=mcp.test"
    assert verification_error("127.0.0.1", port, "mcp.test", ca_pem) == ""
    assert "issuer" in verification_error("127.0.0.1", port, "mcp.test", None)
    assert "mismatch" in verification_error("127.0.0.1", port, "other.test", ca_pem).lower()
    assert served_certificate_check("127.0.0.1", port, "mcp.test", ca_pem, 21).status == "pass"
    untrusted = served_certificate_check("127.0.0.1", port, "mcp.test", None, 21)
    assert untrusted.status == "fail" and "not trusted" in untrusted.detail


def test_nothing_listening_is_a_failed_certificate_check():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        check = served_certificate_check("127.0.0.1", port, "mcp.test", None, 21)
    assert check.status == "fail" and f"no TLS answer on 127.0.0.1:{port}" in check.detail


# ---------------------------------------------------------------- image and scan


def test_lab_references_name_a_repository_and_a_tag_or_digest():
    digest = "sha256:" + "b" * 64
    assert lab_reference(f"{LAB}/mcpdeploy/app:v1") == ("mcpdeploy/app", "v1")
    assert lab_reference(f"{LAB}/mcpdeploy/app@{digest}") == ("mcpdeploy/app", digest)
    assert lab_reference(f"{LAB}/mcpdeploy/app:v1@{digest}") == ("mcpdeploy/app", digest)
    repository, tag = lab_reference(f"{LAB}/mcpdeploy/app")
    assert repository == "mcpdeploy/app" and tag.startswith("src-")
    assert lab_reference("ghcr.io/acme/app:1") is None


def test_an_image_outside_the_lab_registry_fails_without_asking_anyone():
    check, pinned = image_check("ghcr.io/acme/app:1")
    assert pinned is None
    assert check.status == "fail" and "pull from registry.mcp.lab.test:5000 only" in check.detail


def test_the_scan_report_is_named_by_the_digest():
    path = scan_report_path("lab", "sha256:" + "c" * 64)
    assert path == Path("/var/lib/mcpdeploy/lab/scans") / ("c" * 64 + ".json")


TRIVY = {
    "Results": [
        {
            "Target": "app (debian 12.8)",
            "Vulnerabilities": [
                {"VulnerabilityID": "CVE-2024-1", "PkgName": "openssl", "Severity": "CRITICAL"},
                {"VulnerabilityID": "CVE-2024-2", "PkgName": "zlib", "Severity": "HIGH"},
            ],
        },
        {"Target": "python", "Vulnerabilities": None},
    ]
}
GRYPE = {
    "matches": [
        {"vulnerability": {"id": "CVE-2024-3", "severity": "Medium"}, "artifact": {"name": "x"}},
        {"vulnerability": {"id": "CVE-2024-4", "severity": "Critical"}, "artifact": {"name": "y"}},
    ]
}


def test_trivy_and_grype_reports_are_summarised():
    trivy = parse_scan_report(TRIVY)
    assert (trivy.scanner, trivy.counts) == ("trivy", {"CRITICAL": 1, "HIGH": 1})
    assert trivy.critical == ("CVE-2024-1 (openssl)",)
    grype = parse_scan_report(GRYPE)
    assert (grype.scanner, grype.critical) == ("grype", ("CVE-2024-4 (y)",))
    assert parse_scan_report({"Results": []}).counts == {}
    with pytest.raises(ScanReportError):
        parse_scan_report({"vulns": []})


def test_no_scan_warns_and_a_critical_finding_fails(tmp_path: Path):
    assert scan_check(None).status == "warn"
    missing = scan_check(tmp_path / "absent.json")
    assert missing.status == "warn" and missing.detail.startswith("no scan")
    report = tmp_path / "scan.json"
    report.write_text(json.dumps(TRIVY))
    critical = scan_check(report)
    assert critical.status == "fail" and "1 critical: CVE-2024-1 (openssl)" in critical.detail
    report.write_text(
        json.dumps({"Results": [{"Vulnerabilities": [TRIVY["Results"][0]["Vulnerabilities"][1]]}]})
    )
    clean = scan_check(report)
    assert clean.status == "pass" and "trivy: 1 high" in clean.detail
    report.write_text("{not json")
    assert scan_check(report).status == "fail"


# ---------------------------------------------------------------- the checklist and the command


def test_secrets_are_replaced_in_details_and_fixes():
    checks = [Check("redis", "fail", "auth failed for s3cr3t-value-x", "rotate s3cr3t%2Fvalue")]
    clean = redact(checks, ["s3cr3t-value-x", "s3cr3t%2Fvalue", "short"])
    assert clean == [Check("redis", "fail", "auth failed for [secret]", "rotate [secret]")]


def test_an_aws_stack_needs_the_pulumi_cli_to_find_its_hosts(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no pulumi on this machine's PATH either way
    with pytest.raises(PreflightError, match="Pulumi CLI is not installed"):
        run_preflight("prod")


def test_invalid_settings_are_the_one_failing_check(monkeypatch):
    def broken(stack):
        raise SettingsError("Pulumi.lab.yaml", [("mcpdeploy:activeColor", "'x'", "blue or green")])

    monkeypatch.setattr(preflight, "load_settings", broken)
    checks = run_preflight("lab")
    assert [(c.name, c.status) for c in checks] == [("settings", "fail")]
    assert "activeColor" in checks[0].detail


runner = CliRunner()


def test_an_unreachable_aws_stack_is_one_error_line(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    result = runner.invoke(app, ["preflight", "--stack", "prod"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot reach the hosts of prod: the Pulumi CLI")
    assert "Traceback" not in result.output


CHECKS = [
    Check("settings", "pass", "Pulumi.lab.yaml is valid"),
    Check("image scan", "warn", "no scan", "scan it"),
    Check("redis", "fail", "auth failed as [secret]", "look at the data host"),
]


def test_the_table_shows_every_check_and_exits_1_on_a_failure(monkeypatch):
    monkeypatch.setattr(preflight, "run_preflight", lambda *a, **k: CHECKS)
    result = runner.invoke(app, ["preflight"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    for check in CHECKS:
        assert check.name in result.stdout and check.detail in result.stdout
    assert "fix: look at the data host" in result.stdout


def test_json_output_is_the_checks_and_whether_all_passed(monkeypatch):
    monkeypatch.setattr(preflight, "run_preflight", lambda *a, **k: CHECKS[:2])
    result = runner.invoke(app, ["preflight", "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["stack"] == "lab"
    assert doc["checks"][1] == {
        "name": "image scan",
        "status": "warn",
        "detail": "no scan",
        "fix": "scan it",
    }
