#!/bin/sh
# The guide's weekly "clean old logs": rotated logs and journal entries older than DAYS.
# Usage: log_cleanup.sh DAYS
# Live logs are left to logrotate, Docker's json-file rotation and journald's size cap.
set -eu
days=$1
journalctl --vacuum-time="${days}d"
find /var/log -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \) \
    -mtime +"$days" -print -delete
