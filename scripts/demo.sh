#!/usr/bin/env bash
# `make demo`: the quickstart (the design document's section 3.1), then the SaaS example (section 7.2)
# under uvicorn, loaded by the load test (section 5.2) over 200 tenants, then the server's per-tier pool
# statistics from its admin endpoint. Uses $MONGODB_URI if set, else one throwaway local mongod for the
# whole demo. DEMO_USERS and DEMO_REQUESTS change the load (default 200 tenants x 5 requests).
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
USERS=${DEMO_USERS:-200}
REQUESTS=${DEMO_REQUESTS:-5}

if [ -z "${MONGODB_URI:-}" ]; then
    # Run this script again under a throwaway mongod, which is stopped when the script ends.
    exec "$PY" -m tenantpool.testing.mongod --run env TENANTPOOL_DEMO_THROWAWAY_DB=1 bash "$0" "$@"
fi

echo "== examples/quickstart.py"
"$PY" examples/quickstart.py

echo
echo "== examples/saas_fastapi.py under uvicorn: $USERS companies x $REQUESTS requests (examples/load_test.py)"
workdir=$(mktemp -d)
server_pid=
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        wait "$server_pid" || true  # uvicorn re-raises SIGTERM after a graceful shutdown
    fi
    server_pid=
}
trap 'stop_server; rm -rf "$workdir"' EXIT

# A fresh admin token per run, passed through the environment rather than on a command line.
TENANTPOOL_ADMIN_TOKEN=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')
export TENANTPOOL_ADMIN_TOKEN
# The demo app trusts the X-Company-ID header (see the warning in examples/saas_fastapi.py).
# Port 0: uvicorn binds a free loopback port and logs it once the app's startup is complete.
"$PY" -m uvicorn examples.saas_fastapi:app --host 127.0.0.1 --port 0 --loop uvloop --no-access-log \
    >"$workdir/uvicorn.log" 2>&1 &
server_pid=$!

url=
deadline=$((SECONDS + 30))
while [ -z "$url" ]; do
    if ! kill -0 "$server_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
        echo "uvicorn did not start:" >&2
        cat "$workdir/uvicorn.log" >&2
        exit 1
    fi
    url=$(grep -o 'Uvicorn running on http://127\.0\.0\.1:[0-9]*' "$workdir/uvicorn.log" | grep -o 'http.*' || true)
    [ -n "$url" ] || sleep 0.1
done
echo "server: $url (pid $server_pid)"
# The admin page (tenantpool's, enabled by the token above): a browser asks for a user name and password;
# any name will do, the password is the token. DEMO_HOLD=<seconds> keeps the server up after the load.
echo "admin page, while the demo runs: $url/admin/dashboard?refresh=2"
echo "  browser login: any user name, password $TENANTPOOL_ADMIN_TOKEN"
echo "  or: curl -H 'Authorization: Bearer $TENANTPOOL_ADMIN_TOKEN' '$url/admin/dashboard'"

# On someone else's server, offboard the demo companies afterwards (their databases are dropped).
cleanup=()
[ -n "${TENANTPOOL_DEMO_THROWAWAY_DB:-}" ] || cleanup=(--cleanup)
status=0
"$PY" examples/load_test.py "$url" --scenario saas --users "$USERS" --requests "$REQUESTS" \
    --wait-ready 30 --deadline 90 --admin-stats "${cleanup[@]}" || status=$?

# The page answers with the figures of the load just run (checked here, so a broken page fails the demo).
if [ "$status" -eq 0 ]; then
    "$PY" - "$url/admin/dashboard" <<'EOF' || status=$?
import base64, os, re, sys, urllib.request

token = os.environ["TENANTPOOL_ADMIN_TOKEN"]
basic = base64.b64encode(f"demo:{token}".encode()).decode()
request = urllib.request.Request(sys.argv[1], headers={"Authorization": f"Basic {basic}"})
with urllib.request.urlopen(request, timeout=10) as response:
    page = response.read().decode()
rows = len(re.findall(r"<tr data-tenant=", page))
tiers = len(re.findall(r'<tr data-tier="[^"]', page))
print(f"admin page: HTTP {response.status}, {len(page):,} bytes, {rows} busiest tenants, {tiers} tiers")
sys.exit(0 if 'id="tp-main"' in page else 1)
EOF
fi
if [ -n "${DEMO_HOLD:-}" ] && [ "$status" -eq 0 ]; then
    echo "server kept up for ${DEMO_HOLD}s (DEMO_HOLD): $url/admin/dashboard"
    sleep "$DEMO_HOLD"
fi

stop_server
if [ "$status" -ne 0 ] || grep -q Traceback "$workdir/uvicorn.log"; then
    echo "== uvicorn log" >&2
    cat "$workdir/uvicorn.log" >&2
    exit $((status ? status : 1))
fi
