#!/usr/bin/env bash
# make bench, agent side: pullship-agent fetching, verifying and loading the
# release bench's ~300 MiB image against plain `docker load` of the same tar,
# its peak RSS, the bytes it fetches for a config-only release and an idle
# poll, the same image from a directory remote, a generated image of 11
# small layers against docker load of it, and image updates (one file
# changed in a 100 MiB layer, the layer rebuilt with every mtime new, a new
# 20 MiB layer) against the chunks the release stored as new and docker load,
# all measured in the same run (agent/internal/agentbench).
#
#   scripts/bench-agent.sh [flags of agent/internal/agentbench, e.g. -keep -cpuprofile agent.cpu, -only-updates]
#
# Reuses the image the release bench generated in .bench/ (scripts/bench.sh
# runs that first). Needs Docker, git and GNU time (/usr/bin/time); without a
# reachable Docker engine it skips, unless CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=go1.27.3

echo "== agent (pullship-agent vs docker load, same run, same image)"
if ! docker info >/dev/null 2>&1; then
	if [ "${CI:-}" = true ]; then
		echo "bench-agent: Docker is not reachable (docker info failed)" >&2
		exit 1
	fi
	echo "bench-agent: skipped: Docker is not reachable (docker info failed)"
	exit 0
fi
[ -x /usr/bin/time ] || { echo "bench-agent: GNU time is required (apt-get install -y time)" >&2; exit 1; }
command -v git >/dev/null || { echo "bench-agent: git is required" >&2; exit 1; }
[ -x bin/pullship ] || go build -o bin/pullship ./bundler/cmd/pullship
[ -x bin/pullship-agent ] || go build -o bin/pullship-agent ./agent/cmd/pullship-agent
go run ./agent/internal/agentbench -pullship bin/pullship -agent bin/pullship-agent "$@"
