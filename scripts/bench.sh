#!/usr/bin/env bash
# make bench: pullship's release path against baselines measured in the same
# run (the git CLI, the layer size), the agent (scripts/bench-agent.sh), the
# peers a user would pick instead (scripts/bench-peers.sh: a registry,
# docker save | zstd), image fetches over emulated links (BenchmarkLinks in
# bundler/shared/bundle), then the Go micro-benchmarks.
#
#   scripts/bench.sh [flags of bundler/internal/bench, e.g. -git-update=false]
#
# The generated images are cached in .bench/ (it ignores itself in git);
# delete it to regenerate them. Needs git and GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=go1.27.3

if [ ! -x /usr/bin/time ]; then
	echo "bench: installing GNU time (/usr/bin/time)" >&2
	if [ "$(id -u)" -eq 0 ]; then
		apt-get install -y time >&2
	else
		sudo apt-get install -y time >&2
	fi
fi
command -v git >/dev/null || { echo "bench: git is required" >&2; exit 1; }
[ -x bin/pullship ] || go build -o bin/pullship ./bundler/cmd/pullship

echo "== releases (pullship vs baselines, same run, same data)"
go run ./bundler/internal/bench -pullship bin/pullship -cache .bench "$@"

echo
echo "== agent (fetch + verify + load vs docker load, same image)"
bash scripts/bench-agent.sh

echo
echo "== peers (pullship vs a registry and docker save | zstd, same images)"
bash scripts/bench-peers.sh

echo
echo "== links (image fetch through an emulated link: cuts, long haul, loopback; same image as the release bench)"
img=$(go run ./bundler/internal/bench -cache .bench -images-only "$@")
PULLSHIP_BENCH_IMAGE="$img" go test -run '^$' -bench '^BenchmarkLinks$' -benchtime 1x ./bundler/shared/bundle/ |
	grep -vE '^(goos|goarch|pkg|cpu|PASS|ok|BenchmarkLinks)'

echo
echo "== Go benchmarks"
go test -run '^$' -bench 'Scan|WritePack|ReleaseConfigOnly|Repack' -benchtime 3x -benchmem \
	./bundler/ ./bundler/image/ ./bundler/shared/repo/ | grep -E '^(Benchmark|pkg:|ok|FAIL)'
