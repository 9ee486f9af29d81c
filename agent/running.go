package agent

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/pullship/pullship/agent/state"
	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/schema"
)

// maxReleaseWalk bounds how far back the release history is searched for
// the release a node runs when the state does not record its commit
// (state written by an agent that did not).
const maxReleaseWalk = 256

// runningRelease is the release a node runs and the commit it came from.
type runningRelease struct {
	node   *schema.ReleaseNode
	commit plumbing.Hash
}

// running returns the release node that node runs: the release it applied
// last and still runs. After a failed release was rolled back that is the
// release rolled back to, not the newest accepted one, and it is what the
// node's status, health checks, address upkeep and watcher must follow.
// ok is false when the node has applied nothing, or its release can no
// longer be read from the object store.
func (a *Agent) running(node string, ns *state.Node) (runningRelease, bool) {
	if ns == nil || ns.Applied == 0 {
		return runningRelease{}, false
	}
	var commit plumbing.Hash
	if plumbing.IsHash(ns.Commit) {
		commit = plumbing.NewHash(ns.Commit)
	} else {
		// State written by an agent that did not record the commit: found
		// once, then kept with the node's state (saved with it).
		if commit = a.findRelease(ns.ManifestSHA256); commit.IsZero() {
			return runningRelease{}, false
		}
		ns.Commit = commit.String()
	}
	rel, err := a.releaseAt(commit)
	if err != nil {
		a.log.Warn("release a node runs unreadable", "node", node, "commit", commit.String(), "err", err)
		return runningRelease{}, false
	}
	rn, ok := rel.Node(node)
	if !ok {
		return runningRelease{}, false
	}
	return runningRelease{node: rn, commit: commit}, true
}

// current is the release node a node runs, or when it runs none yet the
// newest accepted release's (what it is about to run): the node its status
// describes.
func (a *Agent) current(node string, ns *state.Node) (runningRelease, bool) {
	if r, ok := a.running(node, ns); ok {
		return r, true
	}
	commit, err := a.objects.Ref(acceptedRef)
	if err != nil {
		return runningRelease{}, false
	}
	rel, err := a.releaseAt(commit)
	if err != nil {
		return runningRelease{}, false
	}
	rn, ok := rel.Node(node)
	if !ok {
		return runningRelease{}, false
	}
	return runningRelease{node: rn, commit: commit}, true
}

// runningOr is the node's running release, or target (the release it is
// to run) when it runs none yet.
func (a *Agent) runningOr(ns *state.Node, target *schema.ReleaseNode, commit plumbing.Hash) runningRelease {
	if r, ok := a.running(target.Name, ns); ok {
		return r
	}
	return runningRelease{node: target, commit: commit}
}

// releaseAt reads and parses the release of commit from the object store.
// It was verified when it was accepted; the store only ever holds commits
// fetched by this agent. The last few are cached: every pass reads the
// running release of every node.
func (a *Agent) releaseAt(commit plumbing.Hash) (*schema.Release, error) {
	a.releasesMu.Lock()
	defer a.releasesMu.Unlock()
	if rel, ok := a.releases[commit]; ok {
		return rel, nil
	}
	b, err := bundle.Read(a.objects, commit)
	if err != nil {
		return nil, err
	}
	rel, err := schema.ParseRelease(bundle.ManifestPath, b.Manifest)
	if err != nil {
		return nil, err
	}
	if a.releases == nil || len(a.releases) >= 8 {
		a.releases = map[plumbing.Hash]*schema.Release{}
	}
	a.releases[commit] = rel
	return rel, nil
}

// findRelease walks the release history back from the newest accepted
// release to the commit whose release.toml has the sha256 manifest; zero
// when none within maxReleaseWalk does.
func (a *Agent) findRelease(manifest string) plumbing.Hash {
	head, err := a.objects.Ref(acceptedRef)
	if err != nil || manifest == "" {
		return plumbing.ZeroHash
	}
	log, _ := a.objects.Log(head, maxReleaseWalk)
	for _, c := range log {
		data, err := a.objects.ReadFile(c.Hash, bundle.ManifestPath, schema.MaxFileSize)
		if err != nil {
			continue
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) == manifest {
			return c.Hash
		}
	}
	return plumbing.ZeroHash
}

// runningCommits are the release commits the nodes of st run: the object
// store keeps them (and what they reach) whatever its refs say.
func runningCommits(st *state.State) []plumbing.Hash {
	var out []plumbing.Hash
	for _, ns := range st.Nodes {
		if plumbing.IsHash(ns.Commit) {
			out = append(out, plumbing.NewHash(ns.Commit))
		}
	}
	return out
}
