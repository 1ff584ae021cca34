#!/usr/bin/env bash
# Fleet benchmark: three Caddy nodes on one PostgreSQL database, on
# loopback. It measures
#   - from the 2xx of a DELETE on one node to the first 401 on each other
#     node, over DELETIONS deletions (p50, p99, max): round robin over the
#     nodes, steady and with every connection of the fleet terminated every
#     200ms; then every deletion on node A, timed on B and C apart, with B
#     and C idle and with B and C each serving a valid token at saturation
#     (wrk -t1 -c32), as a busy fleet does;
#   - the start-up of a node with TOKENS tokens stored in PostgreSQL;
#   - token creation over the admin API of one node.
#
# usage: bench/fleet.sh                      # 1000 deletions, 1,000,000 tokens
#        DELETIONS=200 TOKENS=20000 bench/fleet.sh
#
# PostgreSQL: $API_TOKENS_BENCH_DATABASE_URL (a URL whose user may create
# databases), else the server on 127.0.0.1:5432 as postgres. The databases
# it creates are dropped at the end. Installs wrk from Debian if missing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
DELETIONS=${DELETIONS:-1000}
TOKENS=${TOKENS:-1000000}
ADMIN_URL=${API_TOKENS_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}

WRK_VERSION=4.1.0-3+b2
if ! command -v wrk >/dev/null; then
	sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update -qq && $sudo apt-get install -y -qq "wrk=$WRK_VERSION" >/dev/null
fi

work=$(mktemp -d /tmp/api-tokens-fleet.XXXXXX)
databases=()
caddy_pid=""
cleanup() {
	[ -n "$caddy_pid" ] && kill "$caddy_pid" 2>/dev/null && wait "$caddy_pid" 2>/dev/null
	for db in "${databases[@]}"; do
		psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

# new_database: sets dsn to the URL of a new, empty database (not in a
# subshell, so the cleanup knows it)
new_database() {
	local name="fleet_bench_$$_${#databases[@]}"
	psql "$ADMIN_URL" -qc "CREATE DATABASE $name" >/dev/null
	databases+=("$name")
	dsn=$(python3 -c 'import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print(u.urlunparse(p._replace(path="/" + sys.argv[2])))' "$ADMIN_URL" "$name")
}

echo "# building Caddy with the plugin, the fleet bench and the seeder"
(cd "$root" && go build -o "$work/caddy" ./caddymodule/cmd/caddy && go build -o "$work/fleet" ./bench/fleet && go build -o "$work/seed" ./bench/seed)
printf "machine: %s cores, %s; PostgreSQL %s\n\n" "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
	"$(psql "$ADMIN_URL" -Atc 'SHOW server_version')"

echo "# revocations across the fleet: $DELETIONS deletions, round robin over 3 nodes"
new_database
"$work/fleet" -caddy "$work/caddy" -dsn "$dsn" -deletions "$DELETIONS"
new_database
"$work/fleet" -caddy "$work/caddy" -dsn "$dsn" -deletions "$DELETIONS" -kill -admin-dsn "$ADMIN_URL"
echo
echo "# revocations made on node A, timed on B and C: idle, then B and C busy"
new_database
"$work/fleet" -caddy "$work/caddy" -dsn "$dsn" -deletions "$DELETIONS" -from-a
new_database
"$work/fleet" -caddy "$work/caddy" -dsn "$dsn" -deletions "$DELETIONS" -from-a -load

echo
echo "# one node with $TOKENS tokens in PostgreSQL"
new_database
seed_start=$(date +%s.%N)
API_TOKENS_DATABASE_URL=$dsn "$work/seed" -postgres -tokens "$TOKENS" -out "$work/token"
seeded=$(echo "$(date +%s.%N) - $seed_start" | bc)
cat >"$work/Caddyfile" <<CADDY
{
	admin off
	auto_https off
	log {
		level ERROR
	}
	api_tokens {
		storage postgres {
			dsn {env.BENCH_DSN}
		}
		bootstrap_admin bench-admin bench-admin-password
	}
}
http://localhost:18091 {
	handle_path /api-tokens/* {
		api_token_admin
	}
	handle {
		api_token_auth
		respond "hello"
	}
}
CADDY
token=$(cat "$work/token")
start_node() {
	local start
	start=$(date +%s.%N)
	BENCH_DSN=$dsn HOME=$work "$work/caddy" run --config "$work/Caddyfile" --adapter caddyfile >>"$work/caddy.log" 2>&1 &
	caddy_pid=$!
	until [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" http://localhost:18091/)" = 200 ]; do
		kill -0 "$caddy_pid" 2>/dev/null || { cat "$work/caddy.log"; exit 1; }
		sleep 0.05
	done
	startup=$(echo "$(date +%s.%N) - $start" | bc)
	rss_mib=$(( $(awk '/VmRSS/ {print $2}' "/proc/$caddy_pid/status") / 1024 ))
}
start_node
printf "seeded %s tokens in %.0fs; start-up until the seeded token passes: %.2fs, RSS %s MiB\n" "$TOKENS" "$seeded" "$startup" "$rss_mib"
kill "$caddy_pid"; wait "$caddy_pid" 2>/dev/null || true
start_node
printf "restart: %.2fs, RSS %s MiB\n" "$startup" "$rss_mib"

admin=$(curl -fs -X POST http://localhost:18091/api-tokens/login -H 'Content-Type: application/json' \
	-d '{"username":"bench-admin","password":"bench-admin-password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
out=$(wrk -t2 -c8 -d10s -s "$root/bench/create-token.lua" -H "Authorization: Bearer $admin" http://localhost:18091)
echo "$out" >"$work/wrk-create.log"
rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
errors=$(echo "$out" | awk '/Non-2xx/ {print $5}')
printf "token creation over the admin API (wrk -t2 -c8 -d10s): %s tokens/s%s\n" "$rate" "${errors:+, $errors non-2xx}"
