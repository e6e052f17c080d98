"""Copy backup files to S3 (self-hosted stacks), each with its sha256 in the metadata.

Usage: backup_upload.py --bucket BUCKET [--prefix PREFIX] FILE...
Credentials come from boto3's usual chain (an instance profile, or the host's AWS config).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CHUNK = 1024 * 1024


def sha256_of(path: Path) -> str:
    """The file's sha256, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def upload(client: Any, bucket: str, prefix: str, paths: Iterable[Path]) -> list[str]:
    """Upload each of ``paths`` as ``prefix/name``; return the keys.

    Encryption is the bucket's default (the stack's backups bucket: its own KMS key), which
    an explicit SSE-S3 header would override. The object's ``sha256`` metadata lets a
    restore verify what it downloaded.
    """
    keys = []
    for path in paths:
        key = f"{prefix.strip('/')}/{path.name}" if prefix.strip("/") else path.name
        client.upload_file(
            str(path),
            bucket,
            key,
            ExtraArgs={"Metadata": {"sha256": sha256_of(path)}},
        )
        keys.append(key)
    return keys


def main(argv: list[str] | None = None) -> int:
    """Upload the named files; boto3 errors end the run (and the backup unit) with a message."""
    import boto3

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for key in upload(boto3.client("s3"), args.bucket, args.prefix, args.files):
        print(f"uploaded s3://{args.bucket}/{key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
