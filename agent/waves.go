package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"
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
	heads, unreachable, err := a.peerHeads(ctx, t, earlier, prefixes)
	if err != nil {
		return "", err
	}
	// A node whose report is in no repository that answered is not known
	// to be healthy: its wave waits, and the reason names what failed.
	also := ""
	if len(unreachable) > 0 {
		also = " (" + strings.Join(unreachable, "; ") + ")"
	}
	soak := rel.Rollout.Soak.D()
	for _, n := range earlier {
		id := heads[n.Name]
		if id.IsZero() {
			return fmt.Sprintf("wave %d waits: node %s (wave %d) has not reported yet%s", rn.Wave, n.Name, n.Wave, also), nil
		}
		nr := bundle.CheckReport(a.objects, n, id)
		bundle.CheckSequence(a.objects, &nr, n, id, peerSeenRef(n.Name))
		s := nr.Status
		switch {
		case s == nil:
			return fmt.Sprintf("wave %d waits: node %s's report is %s: %s%s", rn.Wave, n.Name, nr.State, nr.Problem, also), nil
		case s.FailedVersion == rel.Version:
			return fmt.Sprintf("wave %d halted: node %s (wave %d) failed release %d", rn.Wave, n.Name, n.Wave, rel.Version), nil
		case s.AppliedVersion != rel.Version || !s.Health.OK || s.AppliedManifest != "" && s.AppliedManifest != t.v.ManifestSHA256:
			return fmt.Sprintf("wave %d waits: node %s (wave %d) is not yet healthy on release %d%s", rn.Wave, n.Name, n.Wave, rel.Version, also), nil
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

// peerHeads reads the status heads of the earlier nodes (prefixes: their
// branches) where they are pushed, the status remote or else the remote
// that served the release, and from each of the status peers (other
// regions' status repositories), asking each with ls-refs for those
// branches only, and fetches the heads not yet in the object store. Of a
// node found in several repositories, the head is the newest report signed
// by its status key (bundle.NewestReport, the mirror's rule): every
// repository is as untrusted as any remote, and a report found in another
// region's repository counts only if the node's own key signed it. The
// agent's own repository failing is an error, as ever; a peer failing is
// only noted in unreachable: the nodes found nowhere else are then not
// known to be healthy, and their waves wait.
func (a *Agent) peerHeads(ctx context.Context, t *target, earlier []schema.ReleaseNode, prefixes []string) (map[string]plumbing.Hash, []string, error) {
	own := t.remote
	if a.cfg.StatusRemote != nil {
		r, err := a.remote(ctx, a.cfg.StatusRemote.URL)
		if err != nil {
			return nil, nil, fmt.Errorf("status remote: %w", err)
		}
		own = r
	}
	found := map[string][]plumbing.Hash{}
	var unreachable []string
	read := func(src *repo.Remote, local func(node string) string) error {
		refs, err := src.Refs(ctx, prefixes...)
		if err != nil {
			return err
		}
		var fetch []string
		for _, n := range earlier {
			id := refs[bundle.StatusPrefix+n.Name]
			if !id.IsZero() && !a.objects.HasObject(id) {
				fetch = append(fetch, bundle.StatusPrefix+n.Name+":"+local(n.Name))
			}
		}
		if len(fetch) > 0 {
			got, err := src.Fetch(ctx, a.objects, repo.FetchRequest{Refs: fetch, MaxPackBytes: bundle.MaxStatusPack})
			if err != nil {
				return err
			}
			// A branch that moved since it was listed: what came.
			for _, n := range earlier {
				if id, ok := got[bundle.StatusPrefix+n.Name]; ok {
					refs[bundle.StatusPrefix+n.Name] = id
				}
			}
		}
		for _, n := range earlier {
			if id := refs[bundle.StatusPrefix+n.Name]; !id.IsZero() {
				found[n.Name] = append(found[n.Name], id)
			}
		}
		return nil
	}
	if err := read(own, peerRef); err != nil {
		return nil, nil, err
	}
	for i, p := range a.cfg.StatusPeers {
		src, err := a.remote(ctx, p.URL)
		if err == nil {
			err = read(src, func(node string) string { return peerViaRef(i, node) })
		}
		if err != nil {
			unreachable = append(unreachable, fmt.Sprintf("status peer %s: %v", repo.RedactURL(p.URL), err))
			a.log.Warn("status peer unreachable: the nodes whose reports only it holds are not known healthy", "peer", repo.RedactURL(p.URL), "err", err)
		}
	}
	heads := map[string]plumbing.Hash{}
	for _, n := range earlier {
		heads[n.Name] = bundle.NewestReport(a.objects, n, found[n.Name])
	}
	return heads, unreachable, nil
}

// peerViaRef is where the object store keeps another node's status head as
// fetched from the i-th status peer, beside peerRef's from the agent's own
// status repository.
func peerViaRef(i int, node string) string {
	return fmt.Sprintf("refs/pullship/peers-via/%d/%s", i, node)
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
