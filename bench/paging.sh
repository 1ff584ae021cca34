#!/usr/bin/env bash
# Paged lists with a million tokens: how long the first page of
# GET /tokens?expiring_within=30d takes through the built Caddy, and the
# Caddy process's peak memory while a client pages through every token,
# with the default page (100) and the largest (1000).
#
# usage: bench/paging.sh                   # seeds 1,000,000 tokens into a temp dir (a minute or two)
#        DATA=/tmp/pdata bench/paging.sh   # seeds DATA once if missing, reuses it after
#        TOKENS=20000 ROUNDS=3 bench/paging.sh   # a smoke test of the script
#        CADDY=/path/to/caddy bench/paging.sh    # another build (e.g. an older one, for comparison)
#
# The tokens belong to one user and expire evenly over the coming year
# (seed -spread), so about one in twelve expires within 30 days. Peak
# memory is the kernel's VmHWM of the Caddy process, reset (clear_refs)
# before each walk, so a walk's figure is its own and not the start-up's.
# Needs curl, jq and python3 (the walker: one keep-alive connection).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
TOKENS=${TOKENS:-1000000}
ROUNDS=${ROUNDS:-5}
PORT=${PORT:-9480}
base="http://127.0.0.1:$PORT/api-tokens"

work=$(mktemp -d /tmp/api-tokens-paging.XXXXXX)
caddy_pid=""
cleanup() {
	status=$?
	if [ -n "$caddy_pid" ]; then
		kill "$caddy_pid" 2>/dev/null && wait "$caddy_pid" 2>/dev/null
	fi
	if [ "$status" -ne 0 ]; then
		echo "paging.sh failed; Caddy's log:" >&2
		tail -20 "$work/caddy.log" >&2 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

echo "# load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -z "${CADDY:-}" ]; then
	echo "# building Caddy with the plugin"
	(cd "$root" && go build -o "$work/caddy" ./caddymodule/cmd/caddy)
	CADDY="$work/caddy"
fi
data=${DATA:-$work/data}
if [ ! -d "$data" ]; then
	echo "# seeding $TOKENS tokens into $data"
	(cd "$root" && go run ./bench/seed -dir "$data" -tokens "$TOKENS" -out "$work/token" -spread 2>&1 | grep -v '^badger\|^ \|^\[\|^Min\|^Max\|^Count\|^[0-9]*p:' || true)
fi

cat >"$work/Caddyfile" <<EOF
{
	admin off
	persist_config off
	api_tokens {
		storage_path $data
		bootstrap_admin bench-admin bench-admin-password
	}
}
http://127.0.0.1:$PORT {
	handle_path /api-tokens/* {
		api_token_admin
	}
}
EOF
XDG_DATA_HOME="$work/xdg" XDG_CONFIG_HOME="$work/xdg" "$CADDY" run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
caddy_pid=$!
start=$(date +%s.%N)
until curl -s -o /dev/null "$base/openapi.json"; do
	kill -0 "$caddy_pid" 2>/dev/null || { echo "Caddy exited" >&2; exit 1; }
	sleep 0.2
done
printf '# Caddy (pid %s) answering after %.1f s; peak RSS so far (start-up) %s\n' "$caddy_pid" \
	"$(echo "$(date +%s.%N) - $start" | bc)" "$(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$caddy_pid/status")"
token=$(curl -sf "$base/login" -H 'Content-Type: application/json' \
	-d '{"username":"bench-admin","password":"bench-admin-password"}' | jq -r .token)
auth="Authorization: Bearer $token"

# first_page PATH: ROUNDS times, the time of a whole answer, its size and
# item count; the first is cold (the page's keys not yet in Badger's cache).
first_page() {
	local times=() out
	for _ in $(seq "$ROUNDS"); do
		out=$(curl -sf -o "$work/page.json" -w '%{time_total} %{size_download}' -H "$auth" "$base$1")
		times+=("$(echo "$out" | cut -d' ' -f1)")
	done
	printf '%-52s %6d items %8d bytes  first %6.1f ms  median %6.1f ms\n' "GET $1" "$(jq length "$work/page.json")" \
		"$(echo "$out" | cut -d' ' -f2)" "$(echo "${times[0]} * 1000" | bc)" \
		"$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] * 1000}')"
}

echo "# first pages ($ROUNDS rounds each)"
first_page "/tokens?expiring_within=30d"
first_page "/tokens?expiring_within=30d&limit=1000"
first_page "/tokens"
first_page "/users/bench/tokens"
first_page "/audit"

# walk LIMIT [QUERY]: follows the Link headers through every page of
# GET /tokens on one keep-alive connection, and reports the count, the
# time and the Caddy process's peak memory during the walk.
walk() {
	echo 5 >"/proc/$caddy_pid/clear_refs" # VmHWM := the current RSS
	local before before_anon
	before=$(awk '/VmRSS/ {print $2}' "/proc/$caddy_pid/status")
	before_anon=$(awk '/RssAnon/ {print $2}' "/proc/$caddy_pid/status")
	python3 - "$PORT" "/api-tokens/tokens?limit=$1${2:+&$2}" "$token" "$caddy_pid" "$before_anon" <<'PY'
import http.client, json, re, sys, time
port, path, token, pid, before_anon = sys.argv[1:6]
conn = http.client.HTTPConnection("127.0.0.1", int(port))
items = pages = 0
slowest = 0.0
anon = 0  # the largest anonymous RSS (Go's heap and stacks) seen after a page, in kB

def rss_anon():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0

start = time.time()
while path:
    t = time.time()
    conn.request("GET", path, headers={"Authorization": "Bearer " + token})
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit(f"GET {path}: {r.status} {body[:200]!r}")
    slowest = max(slowest, time.time() - t)
    items += len(json.loads(body))
    pages += 1
    m = re.match(r'<([^<>]*)>; rel="next"', r.getheader("Link") or "")
    path = m.group(1) if m else None
    anon = max(anon, rss_anon())
took = time.time() - start
print(f"{items} tokens in {pages} pages, {took:.1f} s ({took / pages * 1000:.1f} ms a page, slowest {slowest * 1000:.0f} ms)")
print(f"    Caddy's anonymous memory (heap, stacks): {int(before_anon) / 1024:.0f} MiB before, at most {anon / 1024:.0f} MiB after a page", end="")
PY
	awk -v before="$before" '/VmHWM/ {printf "; RSS before the walk %.0f MiB, peak during it %.0f MiB\n", before/1024, $2/1024}' "/proc/$caddy_pid/status"
}

echo "# walking every token"
for limit in 100 1000; do
	printf 'limit=%-5s ' "$limit"
	walk "$limit"
done
printf 'limit=1000, expiring_within=30d: '
walk 1000 "expiring_within=30d"
echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
