package bundler

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/cliutil"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// Seen is one cell of the who-sees-whom matrix.
type Seen string

// Values of Seen.
const (
	SeenRunning Seen = "running" // the row's node lists the member as running
	SeenDown    Seen = "down"    // listed, not running
	SeenAbsent  Seen = ""        // not in the row's cluster view
)

// Matrix is who sees whom: one row per node with a verified report, one
// column per cluster member any of them lists. Members are named by the
// fleet node whose cluster.self they are, else by the service's own name.
// A netsplit shows as blocks: each side sees only itself.
type Matrix struct {
	Rows      []string `json:"rows"`
	Columns   []string `json:"columns"`
	Cells     [][]Seen `json:"cells"`               // [row][column]
	Truncated bool     `json:"truncated,omitempty"` // more than MaxMatrixColumns members
}

// MaxMatrixColumns bounds the matrix: a compromised node may list up to
// schema.MaxNodes bogus members of its own.
const MaxMatrixColumns = 256

// Fleet is the status of every node of the newest verified release.
type Fleet struct {
	Version int64  `json:"release_version"`
	Commit  string `json:"release_commit"`
	// Manifest is the sha256 of the release's release.toml: a report is on
	// the release only when it names this manifest (or none, from an older
	// agent), since versions repeat after a version reset.
	Manifest string              `json:"release_manifest"`
	Now      time.Time           `json:"now"`
	Stale    time.Duration       `json:"stale_after_ns"`
	Nodes    []bundle.NodeReport `json:"nodes"` // release order, then unknown branches by name
	Matrix   Matrix              `json:"matrix"`
	// Outvoted are the bad reports (forged, unsigned, invalid) of listed
	// nodes that another status repository's good report outranked: the
	// table shows the good one, and these say someone wrote the others.
	Outvoted []OutvotedReport `json:"outvoted,omitempty"`
}

// OutvotedReport is a bad report found in one status repository while the
// node's report shown came from another.
type OutvotedReport struct {
	Node       string             `json:"node"`
	Repository string             `json:"repository"` // credentials redacted
	Commit     string             `json:"commit"`
	State      bundle.ReportState `json:"state"`
	Problem    string             `json:"problem"`
}

// Bad counts the forged, unsigned and invalid reports, outvoted ones
// included.
func (f *Fleet) Bad() int {
	n := len(f.Outvoted)
	for _, r := range f.Nodes {
		if r.State.Bad() {
			n++
		}
	}
	return n
}

// FleetOptions tune FleetStatus.
type FleetOptions struct {
	// Stale is the report age beyond which a verified report is stale
	// (default DefaultStale).
	Stale time.Duration
	// Status, if set, are the repositories the status branches are read
	// from (the agents' status_remote, one per region say); none: the
	// release repository. Each is trusted no more than any: every report
	// is checked against its node's status key from the verified release,
	// and of a node found in several the newest signed report is shown.
	Status []*repo.Remote
}

// DefaultStale is three default agent heartbeats.
const DefaultStale = 15 * time.Minute

// statusCacheRef is where the cache keeps each node's fetched status head,
// so the next fetch sends only what is new.
func statusCacheRef(node string) string { return "refs/pullship/status/" + node }

// FleetStatus reads the newest verified release (against pinned, at now)
// for the node list and each node's status key, fetches those nodes'
// status branches, and checks each newest report: exactly one signature,
// by the key id the manifest lists as the node's status_keyid, valid over
// the exact bytes; a valid status.toml naming the branch's node. It fails
// only when the release cannot be read or verified, or a fetch fails; a
// bad report is a state, not an error.
func (r *Repository) FleetStatus(ctx context.Context, pinned *schema.Root, now time.Time, opts FleetOptions) (*Fleet, error) {
	if opts.Stale <= 0 {
		opts.Stale = DefaultStale
	}
	// The status branches only, not the image tags; from status
	// repositories of their own, the release and root refs only here.
	prefix := bundle.StatusPrefix
	if len(opts.Status) > 0 {
		prefix = bundle.ReleasesRef
	}
	head, err := r.Sync(ctx, prefix)
	if err != nil {
		return nil, err
	}
	type source struct {
		remote *repo.Remote
		refs   map[string]plumbing.Hash
	}
	sources := []source{{r.Remote, head.Refs}}
	if len(opts.Status) > 0 {
		sources = nil
		for _, st := range opts.Status {
			refs, err := st.Refs(ctx, bundle.StatusPrefix)
			if err != nil {
				return nil, fmt.Errorf("fleet status: status repository %s: %w", st, err)
			}
			sources = append(sources, source{st, refs})
		}
	}
	if head.Releases.IsZero() {
		return nil, errors.New("fleet status: no release yet: the node list comes from the newest release")
	}
	b, err := bundle.Read(r.Cache, head.Releases)
	if err != nil {
		return nil, fmt.Errorf("fleet status: %w", err)
	}
	trust, err := r.Trust(pinned)
	if err != nil {
		return nil, fmt.Errorf("fleet status: %w", err)
	}
	v, err := trust.Verify(b, now)
	if err != nil {
		return nil, fmt.Errorf("fleet status: %w", err)
	}
	if err := trust.Accept(v); err != nil {
		return nil, fmt.Errorf("fleet status: %w", err)
	}
	f := &Fleet{Version: v.Release.Version, Commit: v.Commit.String(), Manifest: v.ManifestSHA256, Now: now, Stale: opts.Stale}

	// Fetch the listed nodes' branches only: the rest is attacker noise.
	listed := map[string]bool{}
	for _, n := range v.Release.Nodes {
		listed[n.Name] = true
	}
	found := map[string][]plumbing.Hash{}
	foundIn := map[string][]*repo.Remote{} // beside found: where each head was read
	for i, src := range sources {
		var fetch []string
		var haves []plumbing.Hash
		at := map[string]plumbing.Hash{}
		for _, n := range v.Release.Nodes {
			id := src.refs[bundle.StatusPrefix+n.Name]
			if id.IsZero() {
				continue
			}
			at[n.Name] = id
			if old, err := r.Cache.Ref(statusCacheRefIn(i, n.Name)); err == nil {
				haves = append(haves, old)
			}
			if !r.Cache.HasObject(id) {
				fetch = append(fetch, bundle.StatusPrefix+n.Name+":"+statusCacheRefIn(i, n.Name))
			}
		}
		if len(fetch) > 0 {
			got, err := src.remote.Fetch(ctx, r.Cache, repo.FetchRequest{Refs: fetch, Haves: haves, MaxPackBytes: bundle.MaxStatusPack})
			if err != nil {
				return nil, fmt.Errorf("fleet status: fetch status branches from %s: %w", src.remote, err)
			}
			// A branch that moved since it was listed: what came.
			for ref, id := range got {
				if node, ok := strings.CutPrefix(ref, bundle.StatusPrefix); ok && listed[node] {
					at[node] = id
				}
			}
		}
		for _, n := range v.Release.Nodes {
			if id, ok := at[n.Name]; ok {
				found[n.Name] = append(found[n.Name], id)
				foundIn[n.Name] = append(foundIn[n.Name], src.remote)
			}
		}
	}
	// Of a node found in several status repositories, the newest report
	// signed by its key is shown (the mirror's rule): a report placed in
	// another region's repository counts only if the node signed it.
	heads := map[string]plumbing.Hash{}
	for _, n := range v.Release.Nodes {
		heads[n.Name] = bundle.NewestReport(r.Cache, n, found[n.Name])
		for k, id := range found[n.Name] {
			if id == heads[n.Name] {
				continue
			}
			if nr := bundle.CheckReport(r.Cache, n, id); nr.State.Bad() {
				f.Outvoted = append(f.Outvoted, OutvotedReport{Node: n.Name, Repository: foundIn[n.Name][k].String(),
					Commit: id.String(), State: nr.State, Problem: nr.Problem})
			}
		}
	}

	for _, n := range v.Release.Nodes {
		nr := bundle.NodeReport{Node: n.Name, Region: n.Region, Wave: n.Wave}
		if id := heads[n.Name]; id.IsZero() {
			nr.State, nr.Problem = bundle.ReportMissing, "no branch "+bundle.StatusPrefix+n.Name
		} else {
			nr = bundle.CheckReport(r.Cache, n, id)
			bundle.CheckSequence(r.Cache, &nr, n, id, statusSeenRef(n.Name))
			if s := nr.Status; s != nil && s.AppliedVersion == v.Release.Version && s.AppliedManifest != "" && s.AppliedManifest != v.ManifestSHA256 {
				nr.Problem = fmt.Sprintf("reports release %d applied with manifest %.12s, not this release's %.12s", s.AppliedVersion, s.AppliedManifest, v.ManifestSHA256)
			}
			if nr.Status != nil {
				nr.Age = now.Sub(nr.Status.Time)
				if nr.Age > opts.Stale {
					nr.State = bundle.ReportStale
					nr.Problem = fmt.Sprintf("last report %s ago (stale after %s)", nr.Age.Round(time.Second), opts.Stale)
				}
			}
		}
		f.Nodes = append(f.Nodes, nr)
	}
	var unknown []string
	unknownAt := map[string]plumbing.Hash{}
	for _, src := range sources {
		for ref, id := range src.refs {
			if node, ok := strings.CutPrefix(ref, bundle.StatusPrefix); ok && !listed[node] {
				if _, dup := unknownAt[node]; !dup {
					unknown = append(unknown, node)
					unknownAt[node] = id
				}
			}
		}
	}
	sort.Strings(unknown)
	for _, node := range unknown {
		nr := bundle.NodeReport{Node: node, State: bundle.ReportUnknown, Commit: unknownAt[node].String(),
			Problem: fmt.Sprintf("release %d lists no node %q; the branch is not read", v.Release.Version, node)}
		if err := schema.CheckName(node); err != nil {
			// A name no node can have (escape sequences, say) is the
			// server's doing: refused, and shown only flattened.
			nr.State, nr.Problem = bundle.ReportInvalid, "status branch with an invalid node name: refused"
		}
		f.Nodes = append(f.Nodes, nr)
	}
	for i := range f.Nodes {
		flattenReport(&f.Nodes[i])
	}
	f.Matrix = buildMatrix(v.Release, f.Nodes)
	return f, nil
}

// statusCacheRefIn is where the cache keeps node's status head as fetched
// from the i-th status repository (the release repository's, or the first
// --status-repo, being statusCacheRef).
func statusCacheRefIn(i int, node string) string {
	if i == 0 {
		return statusCacheRef(node)
	}
	return fmt.Sprintf("refs/pullship/status-via/%d/%s", i, node)
}

// statusSeenRef is where the cache keeps the newest verified report of
// each node, so a report older than it put back at the head is caught.
func statusSeenRef(node string) string { return "refs/pullship/status-seen/" + node }

func buildMatrix(rel *schema.Release, nodes []bundle.NodeReport) Matrix {
	alias := map[string]string{} // member name → node name
	for _, n := range rel.Nodes {
		if u, ok := n.Clustered(); ok && u.Container.Cluster.Self != "" {
			alias[u.Container.Cluster.Self] = n.Name
		}
	}
	name := func(member string) string {
		if a, ok := alias[member]; ok {
			return a
		}
		return member
	}
	m := Matrix{Rows: []string{}, Columns: []string{}, Cells: [][]Seen{}}
	cols := map[string]int{}
	// Fleet nodes first, in release order, so the diagonal lines up.
	for _, n := range rel.Nodes {
		if u, ok := n.Clustered(); ok && u.Container.Cluster.Self != "" {
			cols[n.Name] = len(m.Columns)
			m.Columns = append(m.Columns, n.Name)
		}
	}
	var extra []string
	for _, nr := range nodes {
		if nr.Status == nil {
			continue
		}
		for _, mem := range nr.Status.Cluster.Members {
			c := name(mem.Node)
			if _, ok := cols[c]; ok {
				continue
			}
			if len(m.Columns)+len(extra) >= MaxMatrixColumns {
				m.Truncated = true
				continue
			}
			cols[c] = -1
			extra = append(extra, c)
		}
	}
	sort.Strings(extra)
	for _, c := range extra {
		cols[c] = len(m.Columns)
		m.Columns = append(m.Columns, c)
	}
	for _, nr := range nodes {
		if nr.Status == nil {
			continue
		}
		row := make([]Seen, len(m.Columns))
		for _, mem := range nr.Status.Cluster.Members {
			i, ok := cols[name(mem.Node)]
			if !ok || i < 0 {
				continue
			}
			row[i] = SeenDown
			if mem.Running {
				row[i] = SeenRunning
			}
		}
		m.Rows = append(m.Rows, nr.Node)
		m.Cells = append(m.Cells, row)
	}
	return m
}

// WaveProgress is how far a release has rolled out in one wave.
type WaveProgress struct {
	Wave    int      `json:"wave"`
	Nodes   []string `json:"nodes"`
	Done    int      `json:"done"`              // nodes healthy on the release
	Waiting string   `json:"waiting,omitempty"` // why the wave has not started or finished
}

// Waves summarises the rollout of f's release wave by wave, from the nodes'
// verified reports: a wave starts when every node of the earlier waves is
// healthy on the release; a node that failed it halts the waves after it.
func (f *Fleet) Waves() []WaveProgress {
	byWave := map[int]*WaveProgress{}
	var order []int
	for _, n := range f.Nodes {
		// Branches for nodes the release does not list are no part of the
		// rollout: unknown names, and names no node can have (a server's
		// making: before, they showed as wave 0 nodes holding wave 1 back).
		if n.State == bundle.ReportUnknown || schema.CheckName(n.Node) != nil {
			continue
		}
		w := byWave[n.Wave]
		if w == nil {
			w = &WaveProgress{Wave: n.Wave}
			byWave[n.Wave] = w
			order = append(order, n.Wave)
		}
		w.Nodes = append(w.Nodes, n.Node)
		if s := n.Status; f.onRelease(s) && s.Health.OK {
			w.Done++
		}
	}
	sort.Ints(order)
	var out []WaveProgress
	blocker := ""
	for _, wv := range order {
		w := byWave[wv]
		switch {
		case blocker != "":
			w.Waiting = blocker
		case w.Done < len(w.Nodes):
			w.Waiting = fmt.Sprintf("%d of %d nodes healthy on release %d", w.Done, len(w.Nodes), f.Version)
		}
		for _, n := range f.Nodes {
			if n.Wave != wv || blocker != "" {
				continue
			}
			switch s := n.Status; {
			case s != nil && s.FailedVersion == f.Version:
				blocker = fmt.Sprintf("halted: node %s (wave %d) failed release %d", n.Node, wv, f.Version)
			case !f.onRelease(s) || !s.Health.OK:
				blocker = fmt.Sprintf("waits for node %s (wave %d) to be healthy on release %d", n.Node, wv, f.Version)
			}
		}
		out = append(out, *w)
	}
	return out
}

// Flatten makes s safe to print on a terminal on one line: every control
// character (C0, DEL, C1) and every bidirectional-override character is
// written as a visible escape (\x1b, \u202e), so nothing a server or a
// node wrote can move the cursor, clear a line or reorder text.
func Flatten(s string) string { return cliutil.Flatten(s) }

// flattenReport flattens every string of nr a table shows.
func flattenReport(nr *bundle.NodeReport) {
	nr.Node, nr.Region, nr.Problem = Flatten(nr.Node), Flatten(nr.Region), Flatten(nr.Problem)
	s := nr.Status
	if s == nil {
		return
	}
	s.Node, s.Region, s.Image, s.LastError = Flatten(s.Node), Flatten(s.Region), Flatten(s.Image), Flatten(s.LastError)
	s.Health.Output, s.Network.Address, s.Network.Driver = Flatten(s.Health.Output), Flatten(s.Network.Address), Flatten(s.Network.Driver)
	for i := range s.Files {
		s.Files[i].Target = Flatten(s.Files[i].Target)
	}
	for i := range s.Cluster.Members {
		s.Cluster.Members[i].Node = Flatten(s.Cluster.Members[i].Node)
	}
	for i := range s.Services {
		sv := &s.Services[i]
		sv.Name, sv.Image, sv.Container.State, sv.Health.Output = Flatten(sv.Name), Flatten(sv.Image), Flatten(sv.Container.State), Flatten(sv.Health.Output)
	}
}

// onRelease reports whether s says its node applied f's release.
func (f *Fleet) onRelease(s *schema.Status) bool {
	return s != nil && s.AppliedVersion == f.Version && (s.AppliedManifest == "" || s.AppliedManifest == f.Manifest)
}
