#!/usr/bin/env bash
# make bench, peers: pullship against what users would pick instead to ship
# an image to Docker hosts, same images, same run: a private registry
# (docker push, then docker pull on the host) and docker save | zstd -3 |
# docker load. Three versions: the release bench's image (200 MiB base
# layer, 100 MiB app layer), one file changed in the app layer, a new 20 MiB
# layer on top (agent/internal/agentbench -peers).
#
#   scripts/bench-peers.sh [flags of agent/internal/agentbench, e.g. -keep]
#
# Image sizes (smaller for a quick try; the README's figures use the
# defaults): PEERS_BASE_MIB=200 PEERS_APP_MIB=100 PEERS_NEW_MIB=20.
#
# The reference registry, distribution's cmd/registry $REGISTRY_VERSION, is
# built once with go install (about two minutes) and kept in
# ${XDG_CACHE_HOME:-~/.cache}/pullship-bench/; it runs on 127.0.0.1 with its
# storage in the bench's temporary directory, removed at the end. Needs
# Docker, zstd (apt-get install -y zstd), bash, git and GNU time
# (/usr/bin/time); without a reachable Docker engine it skips, unless CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=go1.27.3

REGISTRY_VERSION=v3.1.2
base=${PEERS_BASE_MIB:-200} app=${PEERS_APP_MIB:-100} new=${PEERS_NEW_MIB:-20}

echo "== peers (pullship vs a registry and docker save | zstd, same run, same images)"
if ! docker info >/dev/null 2>&1; then
	if [ "${CI:-}" = true ]; then
		echo "bench-peers: Docker is not reachable (docker info failed)" >&2
		exit 1
	fi
	echo "bench-peers: skipped: Docker is not reachable (docker info failed)"
	exit 0
fi
for c in zstd git; do
	command -v "$c" >/dev/null || { echo "bench-peers: $c is required (apt-get install -y $c)" >&2; exit 1; }
done
[ -x /usr/bin/time ] || { echo "bench-peers: GNU time is required (apt-get install -y time)" >&2; exit 1; }
[ -x bin/pullship ] || go build -o bin/pullship ./bundler/cmd/pullship
[ -x bin/pullship-agent ] || go build -o bin/pullship-agent ./agent/cmd/pullship-agent

cache="${XDG_CACHE_HOME:-$HOME/.cache}/pullship-bench"
registry="$cache/registry-$REGISTRY_VERSION"
if [ ! -x "$registry" ]; then
	echo "bench-peers: building the reference registry $REGISTRY_VERSION into $cache (once, about two minutes)"
	mkdir -p "$cache"
	gobin=$(mktemp -d "$cache/build-XXXXXX")
	trap 'rm -rf "$gobin"' EXIT
	GOBIN="$gobin" go install "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION"
	mv "$gobin/registry" "$registry"
fi

# The release bench's images (generated into .bench/ when absent).
image=$(go run ./bundler/internal/bench -cache .bench -base-mib "$base" -app-mib "$app" -images-only | tail -n 1)
go run ./agent/internal/agentbench -peers -image "$image" -registry "$registry" -new-layer-mib "$new" \
	-pullship bin/pullship -agent bin/pullship-agent "$@"
