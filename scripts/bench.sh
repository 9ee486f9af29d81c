#!/usr/bin/env bash
# make bench: grows with the bundler; see README.md.
set -euo pipefail
echo "bench: not built yet" >&2
exit 1
