#!/usr/bin/env bash
# demo.sh is `make demo`: the seed's four-region fleet (cn, sg, us, eu) on
# this machine. It builds the binaries and the demo image, creates a release
# key, a trust root and a release repository under .demo/, releases version 1,
# runs one pullship-agent per node, waits until all four report healthy and
# clustered, rolls out a config change wave by wave (cn, then sg, then us and
# eu), a change of the webhook receiver's config that restarts only the
# receiver, a new broker image, and restarts one container to show its
# address is still attached. Every node runs two services: the broker and
# the webhook receiver its webhooks call, by container name, on a Docker
# network of the node's own (pullship-demo-<node>, made by the agent).
#
# `scripts/demo.sh clean` (make demo-clean) removes every container, image,
# network and file the demo made.
#
# Every "ok" line is printed only after the script checked it; a step that
# fails stops the demo with the reason and where to look (.demo/logs/).
# Needs Go and Docker only (no registry, no jq, no python).
set -euo pipefail

export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.27.3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEMO="$ROOT/.demo"
BIN="$ROOT/bin"
NODES=(cn sg us eu)
NODES_ALL=("${NODES[@]}")
NETWORK=pullship-demo
SUBNET=10.0.0.0/24
GATEWAY=10.0.0.254 # Docker would take .1, which is cn's address
IMAGES=(pullship/demo:1 pullship/demo:2 pullship/demo-hook:1)
TIMEOUT="${DEMO_TIMEOUT:-180}" # seconds allowed for each wait

REPO="$DEMO/releases.git"
TRUST="$DEMO/keys/root-1.toml"
CACHE="$DEMO/cache"

say() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
info() { printf '   %s\n' "$*"; }
die() {
	printf '\ndemo: FAILED: %s\n' "$*" >&2
	if [ -d "$DEMO/logs" ]; then
		printf 'demo: agent logs are in %s; the last lines:\n' "$DEMO/logs" >&2
		for n in "${NODES[@]}"; do
			[ -f "$DEMO/logs/$n.log" ] && sed "s/^/  [$n] /" <(tail -n 5 "$DEMO/logs/$n.log") >&2
		done
	fi
	exit 1
}

check_docker() {
	if ! command -v docker >/dev/null 2>&1; then
		echo "demo: the docker command is not installed; the demo needs Docker (https://docs.docker.com/engine/install/)" >&2
		exit 1
	fi
	if ! docker info >/dev/null 2>&1; then
		echo "demo: Docker is not reachable (docker info failed); start the Docker daemon or set DOCKER_HOST" >&2
		exit 1
	fi
}

# stop_agents stops the agents a previous run started (their pids are in
# .demo/pids) and waits until each has exited.
stop_agents() {
	local f pid i
	for f in "$DEMO"/pids/*.pid; do
		[ -f "$f" ] || continue
		pid="$(cat "$f")"
		if kill -0 "$pid" 2>/dev/null && grep -q pullship-agent "/proc/$pid/cmdline" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			for i in $(seq 100); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
			kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
		fi
		rm -f "$f"
	done
}

# node_networks are the networks the agents make, one per node, for its
# two services.
node_networks() {
	local n
	for n in "${NODES_ALL[@]}"; do echo "pullship-demo-$n"; done
}

remove_networks() {
	local net
	for net in "$NETWORK" $(node_networks); do
		docker network rm "$net" >/dev/null 2>&1 || true
	done
}

remove_containers() {
	local n
	for n in "${NODES[@]}"; do
		docker rm -f "pullship-demo-$n" "pullship-demo-$n.pullship-prev" \
			"pullship-demo-hook-$n" "pullship-demo-hook-$n.pullship-prev" >/dev/null 2>&1 || true
	done
}

# remove_images removes the demo images and the alias tags the agent gives
# the images it loads (pullship.local/image:sha256-<id>), nothing else.
remove_images() {
	local ids id
	ids="$(docker image inspect -f '{{.Id}}' "${IMAGES[@]}" 2>/dev/null || true)"
	[ -f "$DEMO/image-ids" ] && ids="$ids $(cat "$DEMO/image-ids")"
	for id in $ids; do
		docker rmi "pullship.local/image:sha256-${id#sha256:}" >/dev/null 2>&1 || true
	done
	docker rmi "${IMAGES[@]}" >/dev/null 2>&1 || true
}

clean() {
	check_docker
	stop_agents
	remove_containers
	remove_networks
	remove_images
	rm -rf "$DEMO"
	# Check, rather than assume, that nothing is left.
	local left=""
	for n in "${NODES[@]}"; do
		docker container inspect "pullship-demo-$n" >/dev/null 2>&1 && left="$left container pullship-demo-$n"
		docker container inspect "pullship-demo-hook-$n" >/dev/null 2>&1 && left="$left container pullship-demo-hook-$n"
	done
	for net in "$NETWORK" $(node_networks); do
		docker network inspect "$net" >/dev/null 2>&1 && left="$left network $net"
	done
	for i in "${IMAGES[@]}"; do
		docker image inspect "$i" >/dev/null 2>&1 && left="$left image $i"
	done
	[ -e "$DEMO" ] && left="$left $DEMO"
	if [ -n "$left" ]; then
		echo "demo-clean: could not remove:$left" >&2
		exit 1
	fi
	echo "demo-clean: removed the demo's agents, containers, networks $NETWORK and $(node_networks | tr '\n' ' ')images ${IMAGES[*]} and .demo/"
}

# pullship_status prints the fleet table; it exists once `pullship status` does.
have_status() { "$BIN/pullship" status --help >/dev/null 2>&1; }
fleet_status() { "$BIN/pullship" status --repo "$REPO" --root "$TRUST" --cache "$CACHE" "$@"; }

# node_rows reads `pullship status --json` (indented, one key per line) and
# prints one line per node: name, report state (ok, stale, forged, ...),
# applied version, container state, address attached, health ok, cluster
# joined, members seen running, container start time, report time. The
# node's own keys are told by their indentation from its services' keys.
node_rows() {
	fleet_status --json 2>/dev/null | awk '
		function val(s) { sub(/^[^:]*: */, "", s); gsub(/[",]/, "", s); return s }
		function flush() { if (n != "") print n, st, ap, cs, at, ok, jn, run + 0, sa, tm; n = st = ap = cs = at = ok = jn = sa = tm = "-"; run = 0; n = "" }
		/^      "node": / { flush(); n = val($0); next }
		/"state": /          { st = val($0) }
		/"AppliedVersion": / { ap = val($0) }
		/^          "State": /     { cs = val($0) }
		/^          "StartedAt": / { sa = val($0) }
		/^          "Attached": /  { at = val($0) }
		/^          "OK": /        { ok = val($0) }
		/^          "Joined": /    { jn = val($0) }
		/"Running": true/    { run++ }
		/^        "Time": /  { tm = val($0) }
		END { flush() }'
}

# node_done NODE VERSION [AFTER]: the node's own signed report says it runs
# VERSION in a running container, address attached, healthy, joined, seeing
# all four members running (and, with AFTER, that the container it reports
# started at AFTER, an RFC 3339 time in seconds). Without `pullship status`
# it asks the container directly.
node_done() {
	local node="$1" version="$2" after="${3:-}" row
	if have_status; then
		row="$(node_rows | awk -v n="$node" '$1 == n')"
		[ -n "$row" ] || return 1
		set -- $row
		[ "$2" = ok ] && [ "$3" = "$version" ] && [ "$4" = running ] && [ "$5" = true ] &&
			[ "$6" = true ] && [ "$7" = true ] && [ "$8" = "${#NODES_ALL[@]}" ] &&
			{ [ -z "$after" ] || [ "$9" = "$after" ]; }
	else
		[ "$(docker exec "pullship-demo-$node" vernemq ping 2>/dev/null)" = pong ] || return 1
		[ "$(docker exec "pullship-demo-$node" vmq-admin cluster show 2>/dev/null | grep -c 'true')" = "${#NODES_ALL[@]}" ]
	fi
}

# wait_all VERSION waits until every node is done on VERSION, printing each
# node as it gets there, in the order it does.
wait_all() {
	local version="$1" after="${2:-}" deadline=$((SECONDS + TIMEOUT)) n pending
	declare -A seen=()
	while :; do
		pending=0
		for n in "${NODES[@]}"; do
			[ -n "${seen[$n]:-}" ] && continue
			if node_done "$n" "$version" "$after"; then
				seen[$n]=$SECONDS
				ok "$n runs release $version, healthy, sees all ${#NODES_ALL[@]} members running ($((SECONDS - START))s)"
				ORDER+=("$n")
			else
				pending=1
			fi
		done
		[ "$pending" = 0 ] && return 0
		[ "$SECONDS" -lt "$deadline" ] || die "after ${TIMEOUT}s not every node reports release $version healthy and clustered; fleet status:
$(fleet_status 2>&1 || docker ps -a --filter name=pullship-demo-)"
		sleep 1
	done
}

# The fleet in .demo/fleet lies inside pullship's own work tree, so release
# would name (and check) pullship's commit; --allow-dirty says this fleet is
# not under version control of its own. A real fleet lives in its own repo.
# check_waves checks, rather than assumes, the order of the last wait_all:
# no node may get there before a node of an earlier wave.
wave_of() { case "$1" in cn) echo 1 ;; sg) echo 2 ;; *) echo 3 ;; esac; }
check_waves() {
	local prev=0 n w
	for n in "${ORDER[@]}"; do
		w="$(wave_of "$n")"
		[ "$w" -ge "$prev" ] || die "node $n (wave $w) got there before a node of wave $prev: order ${ORDER[*]}"
		prev="$w"
	done
	ok "order seen: ${ORDER[*]} (waves respected)"
}

# release IMAGE releases the fleet with IMAGE as the broker's image; the
# webhook receiver's is the one the fleet names (pullship/demo-hook:1).
release() {
	local image="$1"
	"$BIN/pullship" release -q --allow-dirty --repo "$REPO" --fleet "$DEMO/fleet/fleet.toml" --image "broker=docker://$image" \
		--key "$DEMO/keys/release.key" --cache "$CACHE" | sed 's/^/   /'
}

started_at() { docker inspect -f '{{.State.StartedAt}}' "$1"; }

[ "${1:-}" = clean ] && { clean; exit 0; }
[ $# -eq 0 ] || { echo "usage: scripts/demo.sh [clean]" >&2; exit 2; }

say "Checking that Docker is reachable"
check_docker
ok "Docker $(docker version -f '{{.Server.Version}}') answers"
command -v go >/dev/null 2>&1 || { echo "demo: the go command is not installed; the demo builds pullship with Go (https://go.dev/dl/)" >&2; exit 1; }

say "Building pullship and pullship-agent (make build)"
make -s -C "$ROOT" build
ok "$BIN/pullship, $BIN/pullship-agent"

say "Building the demo images (a static stand-in for VerneMQ, FROM scratch)"
"$ROOT/scripts/demo-image.sh" "${IMAGES[@]}" | sed 's/^/   /'

say "Removing what a previous demo left (agents, containers, networks, .demo/)"
stop_agents
remove_containers
remove_networks
rm -rf "$DEMO"
mkdir -p "$DEMO"/{keys,logs,pids,state,etc,hook}
docker image inspect -f '{{.Id}}' "${IMAGES[@]}" >"$DEMO/image-ids"
ok "clean slate in $DEMO"

say "Creating a release key, a trust root (1 of 1 keys) and the release repository"
"$BIN/pullship" keygen --no-password --out "$DEMO/keys/release" 2>/dev/null | sed 's/^/   release key id: /'
"$BIN/pullship" root init --key "$DEMO/keys/release.pub" --threshold 1 --sign "$DEMO/keys/release.key" \
	--out "$TRUST" | sed 's/^/   /'
"$BIN/pullship" init --repo "$REPO" --root "$TRUST" --cache "$CACHE" | sed 's/^/   /'

say "Creating the overlay network $NETWORK ($SUBNET) the nodes' addresses live on"
if ! out="$(docker network create --subnet "$SUBNET" --gateway "$GATEWAY" --label pullship.demo=1 "$NETWORK" 2>&1)"; then
	die "docker network create $NETWORK --subnet $SUBNET: $out
(another Docker network may already use $SUBNET: see docker network ls)"
fi
ok "network $NETWORK, subnet $SUBNET, gateway $GATEWAY"

say "Writing the fleet and one agent.toml per node; creating each node's status key"
cp -r "$ROOT/examples/demo" "$DEMO/fleet"
sed -i "s|@DEMO_DIR@|$DEMO|g" "$DEMO/fleet/fleet.toml"
mkdir -p "$DEMO/fleet/keys"
for n in "${NODES[@]}"; do
	mkdir -p "$DEMO/etc/$n" "$DEMO/hook/$n"
	cat >"$DEMO/agent-$n.toml" <<EOF
# pullship-agent for node $n (docs/agent.md). On a real host: /etc/pullship/agent.toml.
remotes = ["$REPO"]
root = "$TRUST"
state_dir = "$DEMO/state/$n"
allowed_dirs = ["$DEMO/etc/$n", "$DEMO/hook/$n"]
poll_interval = "1s"
heartbeat = "10s"

[[node]]
name = "$n"
key = "$DEMO/fleet/keys/$n.key"
EOF
	"$BIN/pullship-agent" init --config "$DEMO/agent-$n.toml" | sed -n "1,2s/^/   /p"
done

say "Releasing version 1: images pullship/demo:1 and pullship/demo-hook:1, every node's vernemq.conf and hook.conf, signed"
"$BIN/pullship" render --fleet "$DEMO/fleet/fleet.toml" | sed -n '1,5s/^/   /p'
info "(each node runs both services; pullship render shows them without releasing)"
release pullship/demo:1
"$BIN/pullship" verify --repo "$REPO" --root "$TRUST" --cache "$CACHE" | sed 's/^/   /'

say "Starting one pullship-agent per node (logs in .demo/logs/)"
for n in "${NODES[@]}"; do
	nohup "$BIN/pullship-agent" run --config "$DEMO/agent-$n.toml" >"$DEMO/logs/$n.log" 2>&1 &
	echo $! >"$DEMO/pids/$n.pid"
	ok "agent $n: pid $!"
done
sleep 1
for n in "${NODES[@]}"; do
	kill -0 "$(cat "$DEMO/pids/$n.pid")" 2>/dev/null || die "agent $n exited right away: $(tail -n 3 "$DEMO/logs/$n.log")"
done

if have_status; then
	info "progress is read from the nodes' signed status reports (pullship status)"
else
	info "pullship status is not built yet: checking each container with vernemq ping and vmq-admin cluster show"
fi

say "Waiting until all four nodes run release 1, healthy and clustered"
START=$SECONDS
ORDER=()
wait_all 1
if have_status; then
	say "Fleet status (pullship status)"
	fleet_status | sed 's/^/   /'
fi
info "the cluster as cn sees it (docker exec pullship-demo-cn vmq-admin cluster show):"
docker exec pullship-demo-cn vmq-admin cluster show | sed 's/^/   /'
# The broker's webhooks call the receiver every heartbeat, by its container
# name on the node's own network.
net_of() { docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$1" 2>/dev/null; }
for i in "${!NODES[@]}"; do
	n="${NODES[$i]}"
	for c in "pullship-demo-$n" "pullship-demo-hook-$n"; do
		net_of "$c" | grep -qw "pullship-demo-$n" || die "container $c is not on network pullship-demo-$n (it is on: $(net_of "$c"))"
	done
	deadline=$((SECONDS + TIMEOUT))
	# The last call names the caller: this node's broker (10.0.0.<i+1>).
	until docker exec "pullship-demo-hook-$n" demohook ping 2>/dev/null | grep -q "calls=[1-9].*\"VerneMQ@10.0.0.$((i + 1))\""; do
		[ "$SECONDS" -lt "$deadline" ] || die "$n's webhook receiver was never called: $(docker exec "pullship-demo-hook-$n" demohook ping 2>&1)"
		sleep 0.5
	done
done
info "cn's broker: $(grep '^vmq_webhooks.mywebhook1.endpoint' "$DEMO/etc/cn/vernemq.conf"); its networks: $(net_of pullship-demo-cn)"
ok "every broker calls its own node's webhook receiver over network pullship-demo-<node>: $(docker exec pullship-demo-hook-cn demohook ping | cut -c1-100)"

say "Releasing version 2: a config change (listener.max_connections 10000 -> 20000)"
sed -i 's/^max_connections = 10000$/max_connections = 20000/' "$DEMO/fleet/fleet.toml"
grep -q '^max_connections = 20000$' "$DEMO/fleet/fleet.toml" || die "could not edit max_connections in $DEMO/fleet/fleet.toml"
release pullship/demo:1
"$BIN/pullship" diff --repo "$REPO" --cache "$CACHE" 1 2 | sed 's/^/   /'

say "Rolling out version 2 wave by wave: cn (wave 1), then sg (wave 2), then us and eu (wave 3)"
START=$SECONDS
ORDER=()
wait_all 2
check_waves
for n in "${NODES[@]}"; do
	grep -q '^listener.max_connections = 20000$' "$DEMO/etc/$n/vernemq.conf" ||
		die "node $n's vernemq.conf does not have the new value"
done
ok "every node's vernemq.conf on the host has listener.max_connections = 20000"
if have_status; then
	fleet_status | sed -n '/^rollout/,$p' | sed 's/^/   /'
fi

say "Releasing version 3: a change of the webhook receiver's config only (greeting hello -> hi)"
declare -A broker_started=() hook_started=()
for n in "${NODES[@]}"; do
	broker_started[$n]="$(started_at "pullship-demo-$n")"
	hook_started[$n]="$(started_at "pullship-demo-hook-$n")"
done
sed -i 's/^hook_greeting = "hello"$/hook_greeting = "hi"/' "$DEMO/fleet/fleet.toml"
grep -q '^hook_greeting = "hi"$' "$DEMO/fleet/fleet.toml" || die "could not edit hook_greeting in $DEMO/fleet/fleet.toml"
release pullship/demo:1

say "Rolling out version 3: each node restarts its webhook receiver, and only it"
START=$SECONDS
ORDER=()
wait_all 3
check_waves
for n in "${NODES[@]}"; do
	docker exec "pullship-demo-hook-$n" demohook ping | grep -q "greeting=hi from $n" ||
		die "node $n's webhook receiver does not run the new config: $(docker exec "pullship-demo-hook-$n" demohook ping 2>&1)"
	[ "$(started_at "pullship-demo-hook-$n")" != "${hook_started[$n]}" ] || die "node $n's webhook receiver was not restarted"
	[ "$(started_at "pullship-demo-$n")" = "${broker_started[$n]}" ] || die "node $n's broker was restarted by a change of the receiver's config"
done
ok "every receiver restarted with the new greeting; no broker was touched (same container start times)"
if have_status; then
	fleet_status | sed -n '/^services/,/^$/p' | sed 's/^/   /'
fi

say "Releasing version 4: a new broker image, pullship/demo:2 (same layer, new label)"
release pullship/demo:2
info "demo:2 shares its layer with demo:1, so only its few new chunks (image config, manifest) were pushed"

say "Rolling out version 4 wave by wave: every broker is recreated from the new image"
START=$SECONDS
ORDER=()
wait_all 4
check_waves
want="$(docker image inspect -f '{{.Id}}' pullship/demo:2)"
for n in "${NODES[@]}"; do
	got="$(docker inspect -f '{{.Image}}' "pullship-demo-$n")"
	[ "$got" = "$want" ] || die "container pullship-demo-$n runs image $got, want pullship/demo:2 ($want)"
done
ok "all four brokers run pullship/demo:2 (${want:7:12}), clustered again"

say "Restarting container pullship-demo-sg: its overlay address must come back"
ip_of() { docker inspect -f "{{(index .NetworkSettings.Networks \"$NETWORK\").IPAddress}}" "pullship-demo-$1" 2>/dev/null; }
before="$(ip_of sg)"
info "before: docker inspect pullship-demo-sg -> $NETWORK address ${before:-none}"
docker restart pullship-demo-sg >/dev/null
after="$(ip_of sg)"
info "after:  docker inspect pullship-demo-sg -> $NETWORK address ${after:-none}"
[ -n "$after" ] && [ "$after" = "$before" ] || die "sg's address changed across the restart: '${before}' -> '${after}'"
ok "sg kept $after (driver docker: the address is part of the container's config)"
deadline=$((SECONDS + TIMEOUT))
until [ "$(docker exec pullship-demo-sg vernemq ping 2>/dev/null)" = pong ]; do
	[ "$SECONDS" -lt "$deadline" ] || die "sg does not answer vernemq ping after its restart"
	sleep 0.5
done
ok "sg answers vernemq ping again"
# Reports written after the restart: the agent's heartbeat or event watcher
# must see sg running, healthy and clustered again.
started="$(docker inspect -f '{{.State.StartedAt}}' pullship-demo-sg)"
started="${started%%.*}"
started="${started%Z}Z"
info "waiting for sg's agent to report the restarted container (started $started)"
START=$SECONDS
ORDER=()
NODES=(sg)
wait_all 4 "$started"
NODES=("${NODES_ALL[@]}")
if have_status; then
	fleet_status | sed 's/^/   /'
fi

say "Done"
cat <<EOF
   The release repository is $REPO; try:
     bin/pullship log    --repo $REPO --root $TRUST
     bin/pullship status --repo $REPO --root $TRUST --watch
     docker exec pullship-demo-cn vmq-admin cluster show
     docker exec pullship-demo-hook-cn demohook ping
   The four agents keep running (logs in .demo/logs/). make demo-clean removes everything.
EOF
