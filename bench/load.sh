#!/usr/bin/env bash
# Load test: Caddy serving `respond` plain, behind api_token_auth, behind
# Caddy's own basic_auth and behind bench_pass (a handler that does nothing
# but call the next one), as sites of one Caddy server told apart by the
# Host header, measured side by side in one process and one run.
#
# Every comparison is one wrk run in which the two targets take turns
# every 50 ms (bench/interleave.lua), so both see the same moments of a
# machine whose speed drifts from second to second. Every authenticated
# target is compared with plain Caddy sent the very same request (the same
# Authorization header, to a site that ignores it), since a header costs
# Caddy something whether or not anything checks it:
#
#   api_token/plain_token            valid tokens            bar: >= 0.97
#   scoped/plain_token               valid tokens on a route that requires a scope they hold  bar: >= 0.97
#   garbage/plain_garbage            tokens with a bad checksum, refused 401  bar: >= 0.95
#   basic_auth/plain_basic           the peer: basic_auth, right password
#   basic_auth_401/plain_basic_wrong the peer: basic_auth refusing a wrong password
#   pass/plain_token                 the floor: what any handler costs a request in a Caddy route
#   api_token/pass                   what api_token_auth adds to that floor
#   plain_token/plain                what the token header alone costs plain Caddy
#   plain/plain                      the method's own noise: the same target in both turns
#
# and "ahead of basic_auth" means api_token/plain_token above
# basic_auth/plain_basic, and garbage/plain_garbage above
# basic_auth_401/plain_basic_wrong.
#
# usage: bench/load.sh            # 20,000 and 1,000,000 stored tokens
#        TOKENS="20000" DURATION=5s ROUNDS=12 bench/load.sh  # defaults: both sizes, 4s runs, 16 rounds
#        PIN=1 bench/load.sh      # Caddy on CPU 0, one wrk thread on CPU 1: Caddy's own CPU per request
#        PROFILE=1 bench/load.sh  # also CPU profiles of Caddy under the valid and the garbage load
#                                 # (PROFILE_SECONDS=10 each, into PROFILE_DIR=/tmp/api-tokens-profiles;
#                                 # PROFILE_TARGETS="api_token garbage plain_token plain_garbage" adds references)
#        TOKENS=2000 DURATION=1s ROUNDS=1 bench/load.sh  # a smoke test of the script: its figures mean nothing
#        BACKEND=postgres bench/load.sh  # the tokens in PostgreSQL (a fleet's storage) instead of Badger:
#                                        # a new database on $API_TOKENS_BENCH_DATABASE_URL (a URL whose user may
#                                        # create databases), else on the server at 127.0.0.1:5432 as postgres
#
# Caddy tries the sites in the Caddyfile's order, and each site passed
# costs a request something, so the rounds alternate two opposite orders
# (plain, floor, basic_auth, api_token_auth and the reverse; a config
# reload between them) and no target gains or loses by its place.
#
# Also prints the size and time of one /metrics scrape (none of the seeded
# tokens is near expiry) and the rate of token creation over the admin API.
#
# Installs wrk from Debian if it is missing. Prints, per pair, the median
# ratio, its spread (min-max) and every round's ratio. The figures mean
# something only on an otherwise idle machine.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
TOKENS=${TOKENS:-"20000 1000000"}
DURATION=${DURATION:-4s}
ROUNDS=${ROUNDS:-16}
PHASE_MS=${PHASE_MS:-50}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
PIN=${PIN:-0}
PROFILE=${PROFILE:-0}
PROFILE_DIR=${PROFILE_DIR:-/tmp/api-tokens-profiles}
PROFILE_SECONDS=${PROFILE_SECONDS:-10}
PROFILE_TARGETS=${PROFILE_TARGETS:-"api_token garbage"}
BACKEND=${BACKEND:-badger}
ADMIN_URL=${API_TOKENS_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
case $BACKEND in badger | postgres) ;; *) echo "BACKEND must be badger or postgres, got '$BACKEND'" >&2; exit 2 ;; esac
if ! [ "$PHASE_MS" -gt 4 ] 2>/dev/null; then
	echo "PHASE_MS must be a whole number of milliseconds above the 4 ms guard, got '$PHASE_MS'" >&2
	exit 2
fi
if ! [ "$ROUNDS" -ge 1 ] 2>/dev/null; then
	echo "ROUNDS must be a whole number of at least 1, got '$ROUNDS'" >&2
	exit 2
fi
caddy_cpu=() wrk_cpu=()
if [ "$PIN" = 1 ]; then
	# With wrk off Caddy's core, the rate is bounded by Caddy's CPU per
	# request alone, whatever the client costs.
	caddy_cpu=(taskset -c 0) wrk_cpu=(taskset -c 1) THREADS=1
fi

# wrk comes from Debian, pinned; installed here if missing.
WRK_VERSION=4.1.0-3+b2
if ! command -v wrk >/dev/null; then
	sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update -qq && $sudo apt-get install -y -qq "wrk=$WRK_VERSION" >/dev/null
fi

work=$(mktemp -d /tmp/api-tokens-load.XXXXXX)
caddy_pid=""
databases=()
cleanup() {
	status=$?
	if [ -n "$caddy_pid" ]; then
		kill "$caddy_pid" 2>/dev/null && wait "$caddy_pid" 2>/dev/null
	fi
	for db in "${databases[@]}"; do
		psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
	done
	if [ "$status" -ne 0 ]; then
		echo "load.sh failed; Caddy's log:" >&2
		tail -20 "$work"/caddy-*.log >&2 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

echo "# building Caddy with the plugin and the seeder"
(cd "$root" && go build -o "$work/caddy" ./bench/caddy && go build -o "$work/seed" ./bench/seed)

basic_hash=$("$work/caddy" hash-password --plaintext bench-password)
basic_header="Basic $(printf 'bench:bench-password' | base64)"
basic_wrong="Basic $(printf 'bench:wrong-password' | base64)"

# host TARGET / auth TARGET -> the Host and the Authorization header (empty
# for none) of TARGET's request. The plain_* targets send plain Caddy the
# request of the target they are named after.
host() {
	case $1 in
	plain*) echo plain.localhost ;;
	pass) echo floor.localhost ;;
	api_token | garbage) echo token.localhost ;;
	scoped) echo scoped.localhost ;;
	basic_auth*) echo basic.localhost ;;
	*) echo "unknown target $1" >&2; exit 1 ;;
	esac
}
auth() {
	case $1 in
	plain) echo "" ;;
	plain_token | api_token | scoped | pass) echo "Bearer $token" ;;
	plain_garbage | garbage) echo "Bearer $garbage" ;;
	plain_basic | basic_auth) echo "$basic_header" ;;
	plain_basic_wrong | basic_auth_401) echo "$basic_wrong" ;;
	*) echo "unknown target $1" >&2; exit 1 ;;
	esac
}

# measure TARGET -> wrk's output of a run against TARGET alone
measure() {
	local header=(-H "Host: $(host "$1")")
	[ -n "$(auth "$1")" ] && header+=(-H "Authorization: $(auth "$1")")
	"${wrk_cpu[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "${header[@]}" http://localhost:18081/
}

# interleaved A B ROUND -> "A_rps B_rps": one wrk run in which A and B take
# turns every PHASE_MS (bench/interleave.lua), each one's requests per
# second while it had the turn. A has the even turns in odd rounds and the
# odd turns in even rounds, so no target is favoured by the turns' parity.
interleaved() {
	local a=$1 b=$2 out
	(($3 % 2)) || { a=$2 b=$1; }
	out=$(HOST_A=$(host "$a") AUTH_A=$(auth "$a") HOST_B=$(host "$b") AUTH_B=$(auth "$b") PHASE_MS=$PHASE_MS \
		"${wrk_cpu[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$root/bench/interleave.lua" http://localhost:18081/)
	echo "$out" >>"$work/wrk.log"
	if ! echo "$out" | awk '$1 == "interleave" && $2 + 0 > 0 && $3 + 0 > 0 {ok = 1} END {exit !ok}'; then
		echo "no rate for $1 or $2 from one interleaved run (does DURATION hold at least four turns of ${PHASE_MS} ms?):" >&2
		echo "$out" >&2
		exit 1
	fi
	if (($3 % 2)); then
		echo "$out" | awk '/^interleave/ {print $2, $3}'
	else
		echo "$out" | awk '/^interleave/ {print $3, $2}'
	fi
}

# start_caddy N: runs Caddy on the config for N tokens until it answers;
# sets caddy_pid, startup (seconds) and rss_kb.
start_caddy() {
	local start
	start=$(date +%s.%N)
	"${caddy_cpu[@]}" "$work/caddy" run --config "$work/Caddyfile" --adapter caddyfile >>"$work/caddy-$1.log" 2>&1 &
	caddy_pid=$!
	until curl -fs -o /dev/null -H "Host: plain.localhost" http://localhost:18081/; do
		kill -0 "$caddy_pid" 2>/dev/null || { cat "$work/caddy-$1.log"; exit 1; }
		sleep 0.05
	done
	startup=$(echo "$(date +%s.%N) - $start" | bc)
	rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$caddy_pid/status")
}

stop_caddy() {
	kill "$caddy_pid"
	wait "$caddy_pid" 2>/dev/null || true
	caddy_pid=""
}

# write_caddyfile FILE SITE... writes the config with the measured sites
# (plain, floor, basic, token) in the given order. Caddy tries a server's
# sites in order, so a site placed later pays for every Host it is not
# (about a quarter of a percent of Caddy's CPU per site passed on the
# 2-vCPU VMs here); the rounds alternate between two opposite orders so
# that neither side of any pair is favoured.
write_caddyfile() {
	local file=$1 site
	shift
	cat >"$file" <<CADDY
{
	admin localhost:18089
	auto_https off
	log {
		level ERROR
	}
	api_tokens {
		$storage
		alert_interval 1h
		bootstrap_admin bench-admin bench-admin-password
		scope deploy "Trigger deployments"
		scope reports:read "Read reports"
	}
}
CADDY
	for site in "$@"; do
		case $site in
		plain) printf 'http://plain.localhost:18081 {\n\trespond "hello"\n}\n' ;;
		floor) printf 'http://floor.localhost:18081 {\n\tbench_pass\n\trespond "hello"\n}\n' ;;
		basic) printf 'http://basic.localhost:18081 {\n\tbasic_auth {\n\t\tbench %s\n\t}\n\trespond "hello"\n}\n' "$basic_hash" ;;
		token) printf 'http://token.localhost:18081 {\n\tapi_token_auth\n\trespond "hello"\n}\n' ;;
		scoped) printf 'http://scoped.localhost:18081 {\n\tapi_token_auth {\n\t\trequire_scope deploy\n\t}\n\trespond "hello"\n}\n' ;;
		esac
	done >>"$file"
	cat >>"$file" <<CADDY
http://localhost:18084 {
	handle_path /api-tokens/* {
		api_token_admin
	}
}
http://localhost:18085 {
	metrics
}
CADDY
}

# use_order ROUND: loads the site order of ROUND into the running Caddy
# (a config reload; the token store stays open): rounds 1-2 as written,
# 3-4 reversed, and so on, so each order meets each turn parity equally.
use_order() {
	local file=$work/Caddyfile
	(((($1 - 1) / 2) % 2)) && file=$work/Caddyfile.reversed
	[ "$file" = "${loaded:-}" ] && return
	"$work/caddy" reload --config "$file" --adapter caddyfile --address localhost:18089 >>"$work/reload.log" 2>&1
	loaded=$file
	# Unmeasured: basic_auth's new instance has an empty hash cache (a
	# bcrypt of cost 14 per password until it is warm), and the new routes
	# should be in the CPU caches.
	local target
	for target in basic_auth basic_auth_401; do
		curl -s -o /dev/null -H "Host: $(host $target)" -H "Authorization: $(auth $target)" http://localhost:18081/
	done
	DURATION=1s measure api_token >/dev/null
}

# The comparisons, target/reference: each target against plain Caddy sent
# the same request, then the floor of any handler, then what the token
# header alone costs plain Caddy, then the method's noise.
pairs=(api_token/plain_token scoped/plain_token garbage/plain_garbage basic_auth/plain_basic basic_auth_401/plain_basic_wrong
	pass/plain_token api_token/pass plain_token/plain plain/plain)

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Each line of $work/rps-$n is one round of one pair:
#   round pair target_rps reference_rps
# pair_median PAIR -> the median throughput ratio of PAIR's rounds
pair_median() { awk -v p="$1" '$2==p {printf "%.3f\n", $3/$4}' "$work/rps-$n" | median; }

# pair_table prints, for every pair of $work/rps-$n, the median req/s of
# target and reference, the median ratio, its spread (min-max) and every
# round's ratio.
pair_table() {
	local pair ratios
	printf "%-34s %9s %9s %7s %15s   %s\n" "target / reference" req/s req/s ratio spread "ratio in each round, sorted"
	for pair in "${pairs[@]}"; do
		awk -v p="$pair" '$2==p' "$work/rps-$n" >"$work/pair"
		ratios=$(awk '{printf "%.3f\n", $3/$4}' "$work/pair" | sort -n)
		printf "%-34s %9.0f %9.0f %7.3f %15s   %s\n" "$pair" "$(awk '{print $3}' "$work/pair" | median)" \
			"$(awk '{print $4}' "$work/pair" | median)" "$(echo "$ratios" | median)" \
			"$(echo "$ratios" | head -1)-$(echo "$ratios" | tail -1)" "$(echo $ratios)"
	done
}

# profile TARGET -> the path of a CPU profile of Caddy taken from its admin
# endpoint (on only with PROFILE=1) for PROFILE_SECONDS in the middle of a
# wrk run against TARGET.
profile() {
	local out="$PROFILE_DIR/cpu-$1-$n.pprof" wrk_pid
	DURATION=$((PROFILE_SECONDS + 2))s measure "$1" >/dev/null &
	wrk_pid=$!
	sleep 1
	curl -fsS -o "$out" "http://localhost:18089/debug/pprof/profile?seconds=$PROFILE_SECONDS"
	wait "$wrk_pid"
	echo "$out"
}

printf "\nmachine: %s cores, %s; tokens in %s; wrk -t%s -c%s -d%s per run, turns of %s ms, %s rounds, medians%s\n" \
	"$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$BACKEND" "$THREADS" "$CONNS" "$DURATION" "$PHASE_MS" "$ROUNDS" \
	"$([ "$PIN" = 1 ] && echo "; Caddy pinned to CPU 0, wrk to CPU 1")"

for n in $TOKENS; do
	data="$work/data-$n"
	echo
	echo "# seeding $n permanent tokens"
	seed_start=$(date +%s.%N)
	if [ "$BACKEND" = postgres ]; then
		db="load_bench_$$_$n"
		psql "$ADMIN_URL" -qc "CREATE DATABASE $db" >/dev/null
		databases+=("$db")
		export BENCH_DSN
		BENCH_DSN=$(python3 -c 'import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print(u.urlunparse(p._replace(path="/" + sys.argv[2])))' "$ADMIN_URL" "$db")
		API_TOKENS_DATABASE_URL=$BENCH_DSN "$work/seed" -postgres -tokens "$n" -out "$work/token-$n"
		storage="storage postgres {
			dsn {env.BENCH_DSN}
		}"
	else
		"$work/seed" -dir "$data" -tokens "$n" -out "$work/token-$n"
		storage="storage_path $data"
	fi
	seed_end=$(date +%s.%N)
	token=$(cat "$work/token-$n")

	write_caddyfile "$work/Caddyfile" plain floor basic token scoped
	write_caddyfile "$work/Caddyfile.reversed" scoped token basic floor plain
	# The first start after seeding is slower than a restart: Badger
	# compacts the freshly written tables while the index loads.
	start_caddy "$n"
	first_start=$startup first_rss_kb=$rss_kb

	# Sanity: every target answers as it should, so no ratio compares a
	# 200 with an error. The garbage token has the right shape and a wrong
	# checksum.
	garbage="${token%??????}000000"
	for check in "plain 200" "plain_token 200" "plain_garbage 200" "plain_basic 200" "plain_basic_wrong 200" \
		"pass 200" "api_token 200" "scoped 200" "garbage 401" "basic_auth 200" "basic_auth_401 401"; do
		target=${check% *} want=${check#* }
		header=(-H "Host: $(host "$target")")
		[ -n "$(auth "$target")" ] && header+=(-H "Authorization: $(auth "$target")")
		got=$(curl -s -o /dev/null -w '%{http_code}' "${header[@]}" http://localhost:18081/)
		if [ "$got" != "$want" ]; then
			echo "sanity check: $target answered $got, want $want" >&2
			exit 1
		fi
	done

	# Warm up every target unmeasured: basic_auth pays bcrypt (cost 14) until
	# its hash cache is warm (for right and wrong passwords alike), and every
	# path should be in the CPU caches.
	for target in plain plain_token pass api_token scoped garbage basic_auth basic_auth_401; do
		DURATION=3s measure "$target" >/dev/null
	done

	# Each comparison is one interleaved wrk run per round (see
	# interleaved), the pairs in the same order every round and the turns'
	# parity swapped from round to round.
	: >"$work/rps-$n"
	loaded=$work/Caddyfile
	for round in $(seq "$ROUNDS"); do
		use_order "$round"
		for pair in "${pairs[@]}"; do
			rates=$(interleaved "${pair%/*}" "${pair#*/}" "$round")
			echo "$round $pair $rates" >>"$work/rps-$n"
		done
	done
	rss_after_kb=$(awk '/VmRSS/ {print $2}' "/proc/$caddy_pid/status")

	# One Prometheus scrape of the whole /metrics (Caddy's and ours), none
	# of the seeded tokens near expiry: its size, and its time, median of 5.
	scrape_s=$(for _ in 1 2 3 4 5; do
		curl -fs -o "$work/metrics" -w '%{time_total}\n' http://localhost:18085/metrics
	done | median)
	scrape_bytes=$(wc -c <"$work/metrics")
	scrape_series=$(grep -c '^api_tokens_' "$work/metrics" || true)
	profiles=()
	if [ "$PROFILE" = 1 ]; then
		mkdir -p "$PROFILE_DIR"
		for target in $PROFILE_TARGETS; do
			profiles+=("$(profile "$target")")
		done
	fi

	# Token creation over the admin API: each is one durable (fsynced) write.
	admin_token=$(curl -fs -X POST -H 'Content-Type: application/json' \
		-d '{"username":"bench-admin","password":"bench-admin-password"}' \
		http://localhost:18084/api-tokens/login | sed 's/.*"token":"\([^"]*\)".*/\1/')
	create_out=$(wrk -t"$THREADS" -c8 -d10s -s "$root/bench/create-token.lua" \
		-H "Authorization: Bearer $admin_token" http://localhost:18084/)
	echo "$create_out" >>"$work/wrk.log"
	create_rps=$(echo "$create_out" | awk '/Requests\/sec/ {print $2}')
	create_failed=$(echo "$create_out" | awk '/Non-2xx/ {print $NF}')
	stop_caddy
	start_caddy "$n"
	stop_caddy

	printf "\n## %s tokens stored\n" "$n"
	printf "seed time %.1fs; Caddy start-up %.2fs after seeding, %.2fs on restart\n" \
		"$(echo "$seed_end - $seed_start" | bc)" "$first_start" "$startup"
	printf "RSS %d MiB at first start, %d MiB after the load runs, %d MiB after a restart\n" \
		$((first_rss_kb / 1024)) $((rss_after_kb / 1024)) $((rss_kb / 1024))
	printf "token creation over the admin API: %.0f tokens/s (non-2xx: %s)\n" "$create_rps" "${create_failed:-0}"
	printf "one /metrics scrape: %.1f KiB, %.1f ms (median of 5), %d api_tokens_ series\n" \
		"$(echo "$scrape_bytes / 1024" | bc -l)" "$(echo "$scrape_s * 1000" | bc -l)" "$scrape_series"
	pair_table
	valid=$(pair_median api_token/plain_token) basic=$(pair_median basic_auth/plain_basic)
	scoped=$(pair_median scoped/plain_token)
	bad=$(pair_median garbage/plain_garbage) basic_bad=$(pair_median basic_auth_401/plain_basic_wrong)
	# at_least A B / above A B -> "yes" or "NO"
	at_least() { awk -v a="$1" -v b="$2" 'BEGIN {print ((a >= b) ? "yes" : "NO")}'; }
	above() { awk -v a="$1" -v b="$2" 'BEGIN {print ((a > b) ? "yes" : "NO")}'; }
	printf "valid tokens:   %.3f of plain Caddy sent the same request (bar 0.97: %s); basic_auth %.3f (ahead of it: %s)\n" \
		"$valid" "$(at_least "$valid" 0.97)" "$basic" "$(above "$valid" "$basic")"
	printf "scoped route:   %.3f of plain Caddy sent the same request (bar 0.97: %s)\n" "$scoped" "$(at_least "$scoped" 0.97)"
	printf "garbage tokens: %.3f of plain Caddy sent the same request (bar 0.95: %s); basic_auth's 401 %.3f (ahead of it: %s)\n" \
		"$bad" "$(at_least "$bad" 0.95)" "$basic_bad" "$(above "$bad" "$basic_bad")"
	for p in "${profiles[@]}"; do
		printf "CPU profile: %s (go tool pprof -top %s)\n" "$p" "$p"
	done
done
