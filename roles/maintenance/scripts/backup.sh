#!/bin/sh
# The guide's backup_database.sh and backup_config.sh, as one run of mcp-backup.service.
# Usage: backup.sh BACKUP_DIR DATABASE RETENTION_DAYS DEPLOYMENT_JSON
# Writes DATABASE_<stamp>.dump (pg_dump custom format, compressed) and
# mcp_config_<stamp>.tar.gz (the mcp_* site settings as JSON plus the deployment's
# secret-free settings), each with a .sha256 file; deletes both kinds past retention;
# copies the new files to S3 when MCP_BACKUP_BUCKET is set.
set -eu
dir=$1 database=$2 days=$3 deployment=$4
umask 077
cd "$dir"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
# Two runs within a second (a backup, then a restore's safety backup) get two files.
while [ -e "${database}_${stamp}.dump" ]; do
    sleep 1
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
done
# A failed run leaves no half-written file behind.
trap 'rm -f ".${database}_${stamp}.dump.partial" ".mcp_config_${stamp}.tar.gz.partial"' EXIT

dump="${database}_${stamp}.dump"
# Written under a temporary name so a half-written dump is never taken for a backup.
pg_dump --format=custom --compress=6 --file=".${dump}.partial" "$database"
mv ".${dump}.partial" "$dump"
sha256sum "$dump" > "$dump.sha256"

config="mcp_config_${stamp}.tar.gz"
work=$(mktemp -d)
query() {
    psql --no-psqlrc --tuples-only --no-align --set=ON_ERROR_STOP=1 --dbname="$database" \
        --command="$1"
}
# A database without the service's schema (before its first migration, or emptied before a
# restore) is still backed up; its settings are then empty.
if [ "$(query "SELECT to_regclass('public.site_settings') IS NOT NULL")" = t ]; then
    query "SELECT coalesce(json_object_agg(key, value ORDER BY key), '{}')
           FROM site_settings WHERE key LIKE 'mcp\_%'" > "$work/mcp_settings.json"
else
    echo '{}' > "$work/mcp_settings.json"
fi
cp "$deployment" "$work/deployment.json"
tar --create --gzip --file=".${config}.partial" --directory="$work" mcp_settings.json deployment.json
rm -r "$work"
mv ".${config}.partial" "$config"
sha256sum "$config" > "$config.sha256"

# Guide: keep 30 days (retention.backupDays).
find . -maxdepth 1 -type f \( -name "${database}_*" -o -name 'mcp_config_*' \) \
    -mtime +"$days" -print -delete

if [ -n "${MCP_BACKUP_BUCKET:-}" ]; then
    python3 /usr/local/lib/mcpdeploy/backup_upload.py --bucket "$MCP_BACKUP_BUCKET" \
        --prefix "${MCP_BACKUP_PREFIX:-}" "$dump" "$dump.sha256" "$config" "$config.sha256"
fi
echo "backup written: $dir/$dump ($(du -h "$dump" | cut -f1)), $dir/$config"
