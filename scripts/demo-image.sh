#!/usr/bin/env bash
# demo-image.sh builds the demo images pullship/demo:1 and pullship/demo:2
# from scratch: one static binary (agent/internal/demosvc) that acts as the
# VerneMQ server, `vernemq ping|restart` and `vmq-admin cluster show|join`;
# and pullship/demo-hook:1 (a tag named demo-hook), the webhook receiver
# the broker calls (agent/internal/demohook, `demohook ping`).
# No registry and no network: FROM scratch, the binary built with
# CGO_ENABLED=0, the vernemq/vmq-admin symlinks and an empty /tmp (the
# service's control socket lives there).
#
# demo:2 has the same single layer as demo:1 and one more label, so a
# release that moves from :1 to :2 is a new image whose chunks are already
# in the repository.
#
# Idempotent: the binary builds reproducibly (-trimpath, no VCS stamp), so
# while the images exist a second run hits Docker's build cache and leaves
# the same image IDs (after make demo-clean the rebuilt IDs differ: the image
# config records its creation time).
#
# Usage: scripts/demo-image.sh [TAG...]   (default: pullship/demo:1 pullship/demo:2 pullship/demo-hook:1)
set -euo pipefail

export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.27.3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
tags=("$@")
[ ${#tags[@]} -gt 0 ] || tags=(pullship/demo:1 pullship/demo:2 pullship/demo-hook:1)

if ! docker info >/dev/null 2>&1; then
	echo "demo-image: Docker is not reachable (docker info failed); start Docker or set DOCKER_HOST" >&2
	exit 1
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/root/usr/sbin" "$ctx/root/etc/vernemq" "$ctx/root/tmp" "$ctx/hook/usr/sbin" "$ctx/hook/etc/hook" "$ctx/hook/run/hook"
chmod 1777 "$ctx/root/tmp"
(cd "$root" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags=-buildid= \
	-o "$ctx/root/usr/sbin/demosvc" ./agent/internal/demosvc)
(cd "$root" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags=-buildid= \
	-o "$ctx/hook/usr/sbin/demohook" ./agent/internal/demohook)
ln -s demosvc "$ctx/root/usr/sbin/vernemq"
ln -s demosvc "$ctx/root/usr/sbin/vmq-admin"
# Docker's build cache keys COPY on content and mode, not mtime; pin the
# times anyway so the context is byte-identical from run to run.
find "$ctx/root" "$ctx/hook" -exec touch -h -d @0 {} +

for tag in "${tags[@]}"; do
	version="${tag##*:}"
	case "$tag" in
	*demo-hook*)
		cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY hook/ /
ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.opencontainers.image.title="pullship demo webhook receiver" pullship.demo.version="$version"
ENTRYPOINT ["/usr/sbin/demohook"]
DOCKERFILE
		;;
	*)
		cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY root/ /
ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.opencontainers.image.title="pullship demo service" pullship.demo.version="$version"
ENTRYPOINT ["/usr/sbin/demosvc"]
DOCKERFILE
		;;
	esac
	# The legacy builder prints a deprecation notice on every build; show
	# the builder's output only when the build fails.
	if ! out="$(docker build -q -t "$tag" "$ctx" 2>&1)"; then
		echo "demo-image: docker build $tag failed:" >&2
		echo "$out" >&2
		exit 1
	fi
	echo "demo-image: $tag $(docker image inspect -f '{{.Id}}' "$tag") ($(docker image inspect -f '{{.Size}}' "$tag") bytes)"
done
