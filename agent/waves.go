package agent

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/pullship/pullship/bundler/shared/bundle"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// peerRef is where the object store keeps another node's fetched status
// head (never under refs/heads/status/, which holds this host's own queue).
func peerRef(node string) string { return "refs/pullship/peers/" + node }

// MaxSoakWalk bounds how far back a peer's status history is read to find
// since when it has been healthy on a release.
const MaxSoakWalk = 200

// gate says why node rn may not apply the target release yet ("" when it
// may): every node of an earlier wave must report, in a report signed by
// its own status key, that it runs this release and is healthy, for at
// least the release's soak time. A node of an earlier wave that failed the
// release halts the waves after it. Nodes in rollout.now skip the gate.
func (a *Agent) gate(ctx context.Context, t *target, rn *schema.ReleaseNode) (string, error) {
	rel := t.v.Release
	if slices.Contains(rel.Rollout.Now, rn.Name) {
		return "", nil
	}
	var earlier []schema.ReleaseNode
	for _, n := range rel.Nodes {
		if n.Wave < rn.Wave {
			earlier = append(earlier, n)
		}
	}
	if len(earlier) == 0 {
		return "", nil
	}
	var prefixes []string
	for _, n := range earlier {
		prefixes = append(prefixes, bundle.StatusPrefix+n.Name)
	}
	// The reports are read where they are pushed: the status remote, or
	// the remote that served the release. Either is as untrusted as any:
	// only reports signed by each node's key count.
	src := t.remote
	if a.cfg.StatusRemote != nil {
		r, err := a.remote(ctx, a.cfg.StatusRemote.URL)
		if err != nil {
			return "", fmt.Errorf("status remote: %w", err)
		}
		src = r
	}
	refs, err := src.Refs(ctx, prefixes...)
	if err != nil {
		return "", err
	}
	var fetch []string
	for _, n := range earlier {
		id := refs[bundle.StatusPrefix+n.Name]
		if id.IsZero() {
			return fmt.Sprintf("wave %d waits: node %s (wave %d) has not reported yet", rn.Wave, n.Name, n.Wave), nil
		}
		if !a.objects.HasObject(id) {
			fetch = append(fetch, bundle.StatusPrefix+n.Name+":"+peerRef(n.Name))
		}
	}
	if len(fetch) > 0 {
		if _, err := src.Fetch(ctx, a.objects, repo.FetchRequest{Refs: fetch, MaxPackBytes: bundle.MaxStatusPack}); err != nil {
			return "", err
		}
	}
	soak := rel.Rollout.Soak.D()
	for _, n := range earlier {
		id := refs[bundle.StatusPrefix+n.Name]
		nr := bundle.CheckReport(a.objects, n, id)
		bundle.CheckSequence(a.objects, &nr, n, id, peerSeenRef(n.Name))
		s := nr.Status
		switch {
		case s == nil:
			return fmt.Sprintf("wave %d waits: node %s's report is %s: %s", rn.Wave, n.Name, nr.State, nr.Problem), nil
		case s.FailedVersion == rel.Version:
			return fmt.Sprintf("wave %d halted: node %s (wave %d) failed release %d", rn.Wave, n.Name, n.Wave, rel.Version), nil
		case s.AppliedVersion != rel.Version || !s.Health.OK || s.AppliedManifest != "" && s.AppliedManifest != t.v.ManifestSHA256:
			return fmt.Sprintf("wave %d waits: node %s (wave %d) is not yet healthy on release %d", rn.Wave, n.Name, n.Wave, rel.Version), nil
		}
		if soak > 0 {
			since := a.healthySince(n, id, rel.Version)
			if left := soak - a.now().Sub(since); left > 0 {
				return fmt.Sprintf("wave %d waits: node %s soaks on release %d for %s more", rn.Wave, n.Name, rel.Version, left.Round(time.Second)), nil
			}
		}
	}
	return "", nil
}

// healthySince walks node n's status history back from id while its
// reports say healthy on version, and returns the oldest such report's
// time. Only reports signed by the node's key count.
func (a *Agent) healthySince(n schema.ReleaseNode, id plumbing.Hash, version int64) time.Time {
	commits, err := a.objects.Log(id, MaxSoakWalk)
	since := a.now()
	if err != nil {
		return since
	}
	for _, c := range commits {
		nr := bundle.CheckReport(a.objects, n, c.Hash)
		s := nr.Status
		if s == nil || s.AppliedVersion != version || !s.Health.OK {
			break
		}
		since = s.Time
	}
	return since
}

// peerSeenRef is where the object store keeps the newest verified report of
// a peer, so an older one put back at the head of its branch is refused.
func peerSeenRef(node string) string { return "refs/pullship/peer-seen/" + node }
