"""roles/maintenance: every unit checked by systemd's own tools, every script by behaviour.

Units are rendered as the lab renders them, then ``systemd-analyze verify`` parses them and
``systemd-analyze security --offline=true`` scores each one (printed; must be ≤ 3.0, the
guide's unit scores 8.9). The scripts run here against local servers and moto's S3.
"""

from __future__ import annotations

import datetime
import json
import re
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from mcpdeploy.lab.pki import LabCA
from mcpdeploy.settings import (
    LATENCY_BUCKETS_SECONDS,
    Settings,
    SettingsError,
    load_settings,
    parse_settings,
)
from roles.firewall import firewall_rules
from roles.maintenance import (
    Job,
    alert_job,
    audit_cleanup_job,
    backup_job,
    certificate_check_job,
    disk_check_job,
    health_check_job,
    log_cleanup_job,
    performance_check_job,
    receiver_job,
    render_units,
)
from roles.maintenance.scripts import (
    alert,
    alert_receiver,
    backup_upload,
    disk_check,
    health_check,
    perf_check,
)

MAX_EXPOSURE = 3.0
EXPOSURE = re.compile(r"Overall exposure level for (\S+): (\d+\.\d+)")


def lab_jobs(settings: Settings) -> list[Job]:
    """Every job with the lab's settings, as deploy.py renders them."""
    maintenance = settings.maintenance
    return [
        alert_job(),
        disk_check_job(maintenance.disk_alert_percent),
        log_cleanup_job(settings.retention.log_days),
        certificate_check_job(settings.domain, maintenance.certificate_warning_days),
        health_check_job(settings.domain, ["127.0.0.1", "172.30.77.100", "172.30.77.120"]),
        performance_check_job(
            url="http://127.0.0.1:3000/api/v1/mcp/metrics",
            error_percent=maintenance.error_rate_alert_percent,
            slow_seconds=maintenance.slow_response_seconds,
            window_minutes=maintenance.performance_window_minutes,
        ),
        audit_cleanup_job("mcp-service", settings.retention.audit_log_days),
        backup_job(
            database="railspress_production",
            days=settings.retention.backup_days,
            bucket="mcp-backups",
            prefix="data",
        ),
        receiver_job(maintenance.alert_receiver_port),
    ]


@pytest.fixture(scope="module")
def unit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rendered units; the alert template as an instance (analyze needs one)."""
    directory = tmp_path_factory.mktemp("units")
    for name, text in render_units(lab_jobs(load_settings("lab"))).items():
        (directory / name.replace("@.", "@example.")).write_text(text)
    return directory


SERVICES = sorted(
    name.replace("@.", "@example.")
    for name in render_units(lab_jobs(load_settings("lab")))
    if name.endswith(".service")
)
TIMERS = sorted(
    name for name in render_units(lab_jobs(load_settings("lab"))) if name.endswith(".timer")
)


@pytest.mark.parametrize("unit", SERVICES)
def test_unit_exposure_at_most_3(unit_dir: Path, unit: str) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", unit],
        cwd=unit_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    match = EXPOSURE.search(result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(2))
    print(f"{unit}: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE


@pytest.mark.parametrize("unit", SERVICES + TIMERS)
def test_unit_passes_systemd_analyze_verify(unit_dir: Path, unit: str) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", unit],
        cwd=unit_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.parametrize("timer", TIMERS)
def test_timer_schedule_is_a_calendar_systemd_accepts(unit_dir: Path, timer: str) -> None:
    schedule = re.search(r"^OnCalendar=(.+)$", (unit_dir / timer).read_text(), re.M)
    assert schedule
    result = subprocess.run(
        ["systemd-analyze", "calendar", schedule.group(1)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "Next elapse" in result.stdout, result.stderr


def test_every_job_but_the_alert_itself_alerts_on_failure() -> None:
    for name, text in render_units(lab_jobs(load_settings("lab"))).items():
        if name.endswith(".service"):
            assert ("OnFailure=mcp-alert@%n.service" in text) == (name != "mcp-alert@.service")


def test_performance_window_sets_the_timer() -> None:
    job = performance_check_job(
        url="http://127.0.0.1:3000/m", error_percent=5, slow_seconds=5, window_minutes=10
    )
    assert "OnCalendar=*:0/10" in render_units([job])["mcp-perf-check.timer"]


def test_backup_reaches_the_internet_only_when_uploading() -> None:
    local = render_units([backup_job(database="db", days=30)])["mcp-backup.service"]
    upload = render_units([backup_job(database="db", days=30, bucket="b")])["mcp-backup.service"]
    assert "RestrictAddressFamilies=AF_UNIX\n" in local
    assert "MCP_BACKUP_BUCKET" not in local
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in upload
    assert "Environment=MCP_BACKUP_BUCKET=b" in upload


# --- settings and firewall -------------------------------------------------------------


MINIMAL = {
    "mcpdeploy:domain": "a.example.com",
    "mcpdeploy:activeColor": "blue",
    "mcpdeploy:image": "x/y:1",
    "mcpdeploy:adminCidrs": ["10.0.0.0/8"],
}


def test_maintenance_defaults_are_the_guides() -> None:
    maintenance = parse_settings({"config": MINIMAL}).maintenance
    assert (maintenance.certificate_warning_days, maintenance.disk_alert_percent) == (21, 85)
    assert (maintenance.error_rate_alert_percent, maintenance.slow_response_seconds) == (5.0, 5.0)
    assert maintenance.alert_receiver is False


def test_slow_response_threshold_must_be_a_histogram_bound() -> None:
    document = {"config": {**MINIMAL, "mcpdeploy:maintenance": {"slowResponseSeconds": 4}}}
    with pytest.raises(SettingsError, match=re.escape("maintenance.slowResponseSeconds")):
        parse_settings(document)


def test_latency_bounds_match_the_services_histogram() -> None:
    metrics = Path(__file__).parents[2] / "app_image" / "mcp_service" / "metrics.py"
    buckets = re.search(r"buckets=\(([^)]*)\)", metrics.read_text())
    assert buckets
    assert set(LATENCY_BUCKETS_SECONDS) <= {float(b) for b in buckets.group(1).split(",")}


def test_data_host_opens_its_collectors_to_edge_and_app_hosts_only() -> None:
    maintenance = parse_settings(
        {
            "config": {
                **MINIMAL,
                "mcpdeploy:maintenance": {"alertReceiver": True, "logCollector": True},
            }
        }
    ).maintenance
    assert maintenance.collector_ports() == {9443: "alerts", 6514: "logs"}
    rules = firewall_rules(
        "data",
        admin_cidrs=[],
        edge_addresses=["10.0.0.10"],
        app_addresses=["10.0.0.100"],
        collector_ports=maintenance.collector_ports(),
    )
    for port in (9443, 6514):
        assert {str(rule.source) for rule in rules if rule.port == port} == {
            "10.0.0.10/32",
            "10.0.0.100/32",
        }
    closed = firewall_rules("data", admin_cidrs=[], app_addresses=["10.0.0.100"])
    assert not [rule for rule in closed if rule.port in (9443, 6514)]


def test_receiver_and_collector_ports_must_differ() -> None:
    both = {"alertReceiver": True, "logCollector": True, "logCollectorPort": 9443}
    with pytest.raises(SettingsError, match="must differ"):
        parse_settings({"config": {**MINIMAL, "mcpdeploy:maintenance": both}})


# --- scripts --------------------------------------------------------------------------


@pytest.fixture()
def receiver(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The lab's alert receiver on 127.0.0.1 (plain HTTP here): (URL, alerts file)."""
    alerts = tmp_path / "alerts.jsonl"
    server = ThreadingHTTPServer(("127.0.0.1", 0), alert_receiver.handler_for(alerts))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", alerts
    server.shutdown()
    server.server_close()


def test_alert_posts_slack_json_that_the_receiver_stores(receiver: tuple[str, Path]) -> None:
    url, alerts = receiver
    assert alert.post(url, "[edge] mcp-health-check.service failed") == 200
    record = json.loads(alerts.read_text())
    assert record["text"] == "[edge] mcp-health-check.service failed"
    assert record["from"] == "127.0.0.1"


def test_receiver_refuses_a_body_that_is_not_slack_shaped() -> None:
    now = datetime.datetime.now(datetime.UTC)
    assert alert_receiver.alert_record(b'{"message": "x"}', "10.0.0.1", now) is None
    assert alert_receiver.alert_record(b"not json", "10.0.0.1", now) is None


def test_alert_text_keeps_what_the_last_run_printed() -> None:
    journal = "\n".join(
        [
            "Starting mcp-disk-check.service - Check disks...",
            "every filesystem is at most 85% full",
            "Finished mcp-disk-check.service - Check disks.",
            "Starting mcp-disk-check.service - Check disks...",
            "disk space alert: / is 91% full (limit 85%)",
            "mcp-disk-check.service: Main process exited, code=exited, status=1/FAILURE",
            "Failed to start mcp-disk-check.service - Check disks.",
        ]
    )
    text = alert.alert_text("data", "mcp-disk-check.service", journal)
    assert (
        text == "[data] mcp-disk-check.service failed\ndisk space alert: / is 91% full (limit 85%)"
    )


def test_disk_usage_parsed_from_df() -> None:
    output = "Use% Mounted on\n 91% /\n  3% /var/lib/docker\n   - /sys/fs/cgroup\n"
    assert disk_check.usage(output) == {"/": 91, "/var/lib/docker": 3}


def _exposition(requests: dict[str, int], durations: list[float]) -> str:
    registry = CollectorRegistry()
    counter = Counter("mcp_http_requests", "r", ["route", "method", "status"], registry=registry)
    histogram = Histogram(
        "mcp_http_request_duration_seconds",
        "l",
        ["route"],
        buckets=(0.1, 1.0, 5.0, 10.0, 30.0),
        registry=registry,
    )
    for status, count in requests.items():
        counter.labels(route="/api/v1/mcp/", method="POST", status=status).inc(count)
    for seconds in durations:
        histogram.labels(route="/api/v1/mcp/").observe(seconds)
    return generate_latest(registry).decode()


def test_performance_alerts_on_error_rate_above_threshold() -> None:
    before = perf_check.read_counters(_exposition({"200": 100}, [0.05] * 100), 5.0)
    after = perf_check.read_counters(_exposition({"200": 190, "503": 10}, [0.05] * 200), 5.0)
    assert perf_check.judge(before, after, 5.0) == [
        "error rate 10.0% (10 of 100 responses 5xx) above 5.0%"
    ]
    assert perf_check.judge(before, after, 15.0) == []


def test_performance_alerts_on_any_response_slower_than_threshold() -> None:
    before = perf_check.read_counters(_exposition({"200": 10}, [0.05] * 10), 5.0)
    after = perf_check.read_counters(_exposition({"200": 12}, [0.05] * 11 + [7.5]), 5.0)
    assert perf_check.judge(before, after, 5.0) == ["1 response(s) slower than the threshold"]


def test_performance_first_window_and_restart_are_baselines() -> None:
    busy = perf_check.read_counters(_exposition({"500": 50}, [9.0] * 50), 5.0)
    fresh = perf_check.read_counters(_exposition({"200": 1}, [0.1]), 5.0)
    assert perf_check.judge(None, busy, 5.0) == []
    assert perf_check.judge(busy, fresh, 5.0) == []


@pytest.fixture(scope="module")
def https_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """A local HTTPS server for mcp.example.test answering /health/mcp: (port, CA file)."""
    directory = tmp_path_factory.mktemp("pki")
    ca = LabCA(directory)
    cert, key = ca.issue(directory, "service", ["mcp.example.test"])

    class Health(BaseHTTPRequestHandler):
        status = 200

        def do_GET(self) -> None:
            """200 or 503 as the test sets it."""
            self.send_response(Health.status)
            self.end_headers()
            self.wfile.write(b'{"status":"ok"}')

        def log_message(self, *args: object) -> None:
            """Quiet."""

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], str(ca.cert_path)
    server.shutdown()
    server.server_close()


def test_health_check_verifies_the_domain_on_each_address(
    https_service: tuple[int, str], capsys: pytest.CaptureFixture[str]
) -> None:
    port, ca = https_service
    argv = ["--server-name", "mcp.example.test", "--ca", ca, "--port", str(port), "127.0.0.1"]
    assert health_check.main(argv) == 0
    argv[1] = "other.example.test"
    assert health_check.main(argv) == 1
    assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().out


def test_health_check_fails_on_a_closed_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert health_check.main(["--server-name", "x.example.test", "--port", "9", "127.0.0.1"]) == 1
    assert "MCP health check failed: 127.0.0.1:9/health/mcp" in capsys.readouterr().out


def test_backup_upload_puts_each_file_with_its_checksum_under_the_buckets_kms_key(
    tmp_path: Path,
) -> None:
    dump = tmp_path / "railspress_production_20261125T021500Z.dump"
    dump.write_bytes(b"PGDMP" + bytes(range(256)) * 64)
    checksum = tmp_path / f"{dump.name}.sha256"
    checksum.write_text(f"{backup_upload.sha256_of(dump)}  {dump.name}\n")
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(
            Bucket="mcp-backups", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        # As infra/components/backups.py configures it.
        client.put_bucket_encryption(
            Bucket="mcp-backups",
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]
            },
        )
        keys = backup_upload.upload(client, "mcp-backups", "data/", [dump, checksum])
        assert keys == [f"data/{dump.name}", f"data/{checksum.name}"]
        head = client.head_object(Bucket="mcp-backups", Key=keys[0])
        body = client.get_object(Bucket="mcp-backups", Key=keys[0])["Body"].read()
    assert body == dump.read_bytes()
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["Metadata"]["sha256"] == backup_upload.sha256_of(dump)
