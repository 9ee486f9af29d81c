#!/usr/bin/env bash
# Runs every Go fuzz target in the module for a while each: scripts/fuzz.sh [DURATION]
# (default 10s). Crashers land in the package's testdata/fuzz/ and become
# regression cases that plain `go test` replays. Targets are found by name; those that
# read what a remote sent assert memory budgets: FuzzIndexPack (pack indexer and delta
# resolver), FuzzSidebandPack (upload-pack response), FuzzAdvertisement, FuzzReply (the wire
# client's reply parser: advertisement, ACKs, sideband), FuzzDecodeObjects, FuzzLivePack (a
# pack read while it arrives) in bundler/shared/repo; FuzzVerifyRelease and FuzzCheckReport
# in bundler/shared/bundle; FuzzRebuild (an image from hostile chunk blobs) in
# bundler/shared/chunks; FuzzMirrorStatusMerge (the mirror's status merge) in bundler.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=go1.27.3
time="${1:-10s}"
n=0
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "fuzz: $pkg $target for $time"
    # Minimizing each new interesting input may take a minute by default,
    # with no execs counted meanwhile: short runs would do little else.
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$time" -fuzzminimizetime 5s "$pkg"
    n=$((n+1))
  done
done
echo "fuzz: $n targets ran for $time each without a crash"
