"""The image: present in the registry the hosts pull from, and free of critical findings
when a scan report of it exists.

No scanner is part of this project; a report made elsewhere (Trivy or Grype JSON) is read
from ``/var/lib/mcpdeploy/<stack>/scans/<digest>.json`` or a path given with ``--scan``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcpdeploy.credentials import state_dir
from mcpdeploy.images import ImageError, _lab_manifest_digest, app_source_tag
from mcpdeploy.lab.topology import REGISTRY_NAME, REGISTRY_PORT
from mcpdeploy.preflight.check import Check

LAB_REGISTRY = f"{REGISTRY_NAME}:{REGISTRY_PORT}"


@dataclass(frozen=True)
class ScanSummary:
    """A scan report: which scanner, findings counted by severity, the critical ones."""

    scanner: str
    counts: dict[str, int]
    critical: tuple[str, ...]


class ScanReportError(ValueError):
    """A scan report that is neither Trivy's nor Grype's JSON."""


def lab_reference(reference: str) -> tuple[str, str] | None:
    """(repository, tag or ``sha256:`` digest) of a lab registry reference; None for any
    other registry. Without either, the tag a lab deploy gives the current sources."""
    registry, _, rest = reference.partition("/")
    if registry != LAB_REGISTRY or not rest:
        return None
    name, _, digest = rest.partition("@")
    repository, _, tag = name.partition(":")
    return repository, digest or tag or app_source_tag()


def image_check(reference: str) -> tuple[Check, str | None]:
    """Whether the lab registry serves ``reference``: the check, and the reference pinned
    by digest as hosts pull it (None when the registry does not have it)."""
    parsed = lab_reference(reference)
    if parsed is None:
        return (
            Check(
                "image",
                "fail",
                f"{reference}: the lab's hosts pull from {LAB_REGISTRY} only",
                f"push it there (127.0.0.1:{REGISTRY_PORT} from this machine)",
            ),
            None,
        )
    repository, version = parsed
    shown = f"{LAB_REGISTRY}/{repository}{'@' if version.startswith('sha256:') else ':'}{version}"
    try:
        digest = _lab_manifest_digest(repository, version)
    except ImageError as exc:
        return Check("image", "fail", str(exc), "`mcpdeploy lab status`; `mcpdeploy lab up`"), None
    if digest is None:
        return (
            Check(
                "image",
                "fail",
                f"{shown} is not in the registry",
                "check the reference, or build and push it (a lab deploy builds the current "
                "sources: `pyinfra -y hosts/lab.py deploy.py`)",
            ),
            None,
        )
    pinned = f"{LAB_REGISTRY}/{repository}@{digest}"
    return Check("image", "pass", f"{shown} is in the registry as {digest}"), pinned


def scan_report_path(stack: str, digest: str) -> Path:
    """Where the scan report of the image with ``digest`` is read by default. Named by the
    digest because a scan is of those bytes, whatever tags point at them."""
    return state_dir(stack) / "scans" / f"{digest.removeprefix('sha256:')}.json"


def parse_scan_report(document: Any) -> ScanSummary:
    """Summarise a Trivy (``trivy image --format json``) or Grype (``grype -o json``) report."""
    counts: dict[str, int] = {}
    critical: list[str] = []

    def add(severity: Any, finding: str) -> None:
        level = str(severity or "unknown").upper()
        counts[level] = counts.get(level, 0) + 1
        if level == "CRITICAL":
            critical.append(finding)

    if isinstance(document, dict) and isinstance(document.get("Results"), list):
        for result in document["Results"]:
            for vuln in (result or {}).get("Vulnerabilities") or []:
                add(vuln.get("Severity"), f"{vuln.get('VulnerabilityID')} ({vuln.get('PkgName')})")
        return ScanSummary("trivy", counts, tuple(critical))
    if isinstance(document, dict) and isinstance(document.get("matches"), list):
        for match in document["matches"]:
            vuln, artifact = match.get("vulnerability") or {}, match.get("artifact") or {}
            add(vuln.get("severity"), f"{vuln.get('id')} ({artifact.get('name')})")
        return ScanSummary("grype", counts, tuple(critical))
    raise ScanReportError("neither a Trivy report (Results) nor a Grype report (matches)")


def scan_check(path: Path | None) -> Check:
    """The image's scan report at ``path``: absent → warn, unreadable or any critical
    finding → fail. None: the image's digest is unknown, so no report can be found."""
    how = (
        "scan the image and save the JSON report there: `trivy image --format json --output "
        "FILE REF` or `grype REF -o json > FILE` (docs/preflight.md)"
    )
    if path is None:
        why = (
            "no scan: the image is not in the registry, so its digest (the report name) is unknown"
        )
        return Check("image scan", "warn", why, "see the image check")
    if not path.is_file():
        return Check("image scan", "warn", f"no scan ({path} does not exist)", how)
    try:
        summary = parse_scan_report(json.loads(path.read_text()))
    except (ValueError, OSError) as exc:
        return Check("image scan", "fail", f"{path}: unreadable report: {exc}", how)
    counts = ", ".join(f"{n} {level.lower()}" for level, n in sorted(summary.counts.items()))
    seen = f"{summary.scanner}: {counts or 'no findings'} ({path})"
    if summary.critical:
        shown = ", ".join(summary.critical[:5]) + (", ..." if len(summary.critical) > 5 else "")
        return Check(
            "image scan",
            "fail",
            f"{len(summary.critical)} critical: {shown}; {seen}",
            "rebuild on patched packages (app_image/base, app_image/requirements.txt) and "
            "scan again",
        )
    return Check("image scan", "pass", seen)


def ecr_checks(reference: str, ecr: Any) -> tuple[Check, Check, str | None]:
    """The image and image-scan checks of an AWS stack: ``reference`` in ECR (pinned by
    digest when found) and ECR's own scan of it (scan on push): absent → warn, any
    critical finding → fail."""
    from mcpdeploy.aws_target import EcrError, ecr_image

    try:
        pinned, counts = ecr_image(ecr, reference)
    except EcrError as exc:
        no_scan = Check("image scan", "warn", "not checked: the image is not in ECR", "")
        return Check("image", "fail", str(exc), "push the image to the stack's ECR"), no_scan, None
    image = Check("image", "pass", f"{reference} is in ECR as {pinned.rpartition('@')[2]}")
    if counts is None:
        how = "wait for ECR's scan on push, or `aws ecr start-image-scan` (docs/preflight.md)"
        return image, Check("image scan", "warn", "no completed ECR scan yet", how), pinned
    seen = ", ".join(f"{n} {level.lower()}" for level, n in sorted(counts.items()))
    if counts.get("CRITICAL"):
        fix = "rebuild on patched packages (app_image/base, app_image/requirements.txt)"
        return image, Check("image scan", "fail", f"ECR scan: {seen}", fix), pinned
    return image, Check("image scan", "pass", f"ECR scan: {seen or 'no findings'}"), pinned
