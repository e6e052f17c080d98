#!/bin/sh
# The guide's Database Recovery, safely: mcp-restore FILE [DATABASE]
# Checks FILE against FILE.sha256 (when present, and it must match), then restores it into
# DATABASE (default railspress_production) in one transaction: either every table comes
# back or nothing changes. Objects are dropped and recreated (--clean), owners and grants
# as they were at backup time. Stop the service or disable MCP (mcp-service disable)
# first if clients must not see the restore happen.
set -eu
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: mcp-restore FILE [DATABASE]   (FILE: a pg_dump custom-format backup)" >&2
    exit 2
fi
file=$1 database=${2:-railspress_production}
if [ ! -r "$file" ]; then
    echo "mcp-restore: cannot read $file" >&2
    exit 2
fi
if [ -e "$file.sha256" ]; then
    expected=$(cut -d' ' -f1 "$file.sha256")
    actual=$(sha256sum < "$file" | cut -d' ' -f1)
    if [ "$expected" != "$actual" ]; then
        echo "mcp-restore: $file does not match $file.sha256; refusing to restore" >&2
        exit 1
    fi
    echo "checksum ok: $actual"
fi
# Read by root, restored by postgres: the file may be root-only (e.g. fetched from S3).
runuser -u postgres -- pg_restore --clean --if-exists --single-transaction --exit-on-error \
    --dbname="$database" < "$file"
echo "restored $file into $database"
