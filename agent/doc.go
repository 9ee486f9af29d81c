// Package agent is pullship-agent's core: it makes the nodes of one host
// converge on the newest signed release.
//
// One pass ([Agent.Once]) polls the configured remotes in order, fetches
// the release branch when it moved, verifies the newest release against the
// pinned trust root (signatures, version above the highest ever accepted,
// expiry, this host's nodes present), and for each node that is not on it:
// loads the image from verified chunks, writes the node's files by rename,
// recreates or reloads the container, keeps its network address attached,
// checks health, and rolls everything back when health fails. A journal in
// the state directory records each step before it is taken, so a crash at
// any instant is undone at the next start and the pass is simply repeated.
//
// The agent drives the outside world through small interfaces: the
// container engine (agent/engine), the network attachment (agent/attach),
// the clustered service (agent/cluster) and its own memory (agent/state).
package agent
