"""The guide's daily disk space check: exit 1 naming each filesystem fuller than a limit.

Usage: disk_check.py PERCENT
"""

from __future__ import annotations

import subprocess
import sys

# Memory-backed and read-only image filesystems cannot fill the disk.
SKIPPED_TYPES = ("tmpfs", "devtmpfs", "squashfs")


def usage(df_output: str) -> dict[str, int]:
    """Mount point -> percent used, from ``df --output=pcent,target``."""
    result = {}
    for line in df_output.splitlines()[1:]:
        percent, _, target = line.strip().partition(" ")
        if percent.endswith("%"):
            result[target.strip()] = int(percent[:-1])
    return result


def main(argv: list[str]) -> int:
    """Print every filesystem above ``argv[1]`` percent and exit 1, or one line and 0."""
    limit = int(argv[1])
    excluded = [f"--exclude-type={kind}" for kind in SKIPPED_TYPES]
    output = subprocess.run(
        ["df", "--local", "--output=pcent,target", *excluded],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    full = {target: percent for target, percent in usage(output).items() if percent > limit}
    for target, percent in sorted(full.items()):
        print(f"disk space alert: {target} is {percent}% full (limit {limit}%)")
    if not full:
        print(f"every filesystem is at most {limit}% full")
    return 1 if full else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
