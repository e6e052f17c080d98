#!/bin/sh
# The guide's certificate expiration check: the certificate nginx actually serves (not a
# file that may not be loaded yet) must stay valid for DAYS more days.
# Usage: cert_check.sh SERVER_NAME DAYS [ADDRESS:PORT]
set -eu
name=$1 days=$2 target=${3:-127.0.0.1:443}
pem=$(openssl s_client -connect "$target" -servername "$name" </dev/null 2>/dev/null \
    | openssl x509) || { echo "certificate check failed: no certificate from $target"; exit 1; }
end=$(printf '%s\n' "$pem" | openssl x509 -noout -enddate | cut -d= -f2)
if printf '%s\n' "$pem" | openssl x509 -noout -checkend $((days * 86400)) >/dev/null; then
    echo "certificate for $name on $target valid until $end (more than $days days)"
else
    echo "certificate alert: $name on $target expires $end, within $days days"
    exit 1
fi
