#!/usr/bin/env bash
# The compose smoke test without a container engine: deploy/nginx.conf (its
# addresses swapped for loopback ports), two `chain429 serve` processes on
# deploy/smoke.yaml, the fake provider, and this machine's Redis (127.0.0.1:6379)
# and PostgreSQL (127.0.0.1:5432, user postgres, trust auth), then
# deploy/smoke_test.py through nginx. Needs nginx, psql and redis-cli.
#
#   deploy/rehearse.sh [BIN_DIR]     # BIN_DIR holds chain429 and python (default: .venv/bin)
#
# It creates a database and a Redis namespace of its own and removes both after.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$REPO/.venv/bin}
WORK=$(mktemp -d)
TAG=rehearse$$
DB=chain429_$TAG
export CHAIN429_API_KEY=$TAG-api CHAIN429_ADMIN_KEY=$TAG-admin CHAIN429_HOME=$WORK/home
mkdir -p "$WORK/home" "$WORK/logs"
psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $DB" || exit 2
sed -e 's#chain429-a:3429#127.0.0.1:3431#' -e 's#chain429-b:3429#127.0.0.1:3432#' \
    -e 's#listen 8080;#listen 127.0.0.1:3439;#' "$REPO/deploy/nginx.conf" > "$WORK/nginx.conf"
sed -e 's#http://fake:8429/v1#http://127.0.0.1:8439/v1#' \
    -e "s#databaseUrl: .*#databaseUrl: postgresql://postgres@127.0.0.1:5432/$DB#" \
    -e 's#redis://redis:6379/0#redis://127.0.0.1:6379/0#' \
    -e "s#stateNamespace: .*#stateNamespace: chain429-$TAG#" "$REPO/deploy/smoke.yaml" > "$WORK/smoke.yaml"
cd "$WORK"
"$BIN/chain429" fake --port 8439 --name fake > logs/fake.log 2>&1 & FAKE=$!
"$BIN/chain429" serve --config "$WORK/smoke.yaml" --port 3431 > logs/a.log 2>&1 & A=$!
"$BIN/chain429" serve --config "$WORK/smoke.yaml" --port 3432 > logs/b.log 2>&1 & B=$!
nginx -p "$WORK" -c "$WORK/nginx.conf" -g "pid $WORK/nginx.pid; daemon off; error_log $WORK/logs/nginx.err;" \
    > logs/nginx.log 2>&1 & NGINX=$!
# Both instances up first, as compose's --wait does with the image's health check.
"$BIN/python" - <<'PY'
import time, urllib.request
for port in (3431, 3432):
    for _ in range(60):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
PY
"$BIN/python" "$REPO/deploy/smoke_test.py" http://127.0.0.1:3439; RC=$?
kill $NGINX $A $B $FAKE; wait $NGINX $A $B $FAKE 2>/dev/null
[ $RC = 0 ] || tail -n 20 logs/*.log logs/nginx.err
psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
redis-cli -h 127.0.0.1 --scan --pattern "chain429-$TAG*" | xargs -r redis-cli -h 127.0.0.1 DEL > /dev/null
rm -rf "$WORK"
exit $RC
