#!/usr/bin/env bash
# Build Caddy with the API tokens plugin, and run the example gateway.
#
#   ./xcaddy.sh build   build ./caddy (Caddy v2.11.9 + this plugin) with xcaddy
#   ./xcaddy.sh run     build, then run Caddyfile.example
#
# xcaddy v0.4.5 is installed into $(go env GOPATH)/bin when it is missing.
set -euo pipefail

readonly XCADDY_VERSION=v0.4.5
readonly CADDY_VERSION=v2.11.9
readonly MODULE=github.com/apitokens/caddy-api-tokens

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
	echo "usage: $0 build|run" >&2
	echo "  build  build ./caddy with xcaddy ${XCADDY_VERSION} (Caddy ${CADDY_VERSION} + this plugin)" >&2
	echo "  run    build, then ./caddy run --config Caddyfile.example --adapter caddyfile" >&2
	exit 2
}

xcaddy_path() {
	local bin
	bin="$(go env GOPATH)/bin/xcaddy"
	if [ ! -x "$bin" ]; then
		echo "installing xcaddy ${XCADDY_VERSION} into $(dirname "$bin")" >&2
		GOBIN="$(dirname "$bin")" go install "github.com/caddyserver/xcaddy/cmd/xcaddy@${XCADDY_VERSION}"
	fi
	echo "$bin"
}

build() {
	local xcaddy
	xcaddy=$(xcaddy_path)
	cd "$root"
	# The explicit v0.0.0 pins the local replacement, so go never asks the
	# module proxy for a "latest" version of this unpublished module.
	"$xcaddy" build "$CADDY_VERSION" --output ./caddy --with "${MODULE}@v0.0.0=."
}

[ $# -eq 1 ] || usage
case "$1" in
build)
	build
	;;
run)
	build
	cd "$root"
	exec ./caddy run --config Caddyfile.example --adapter caddyfile
	;;
*)
	usage
	;;
esac
