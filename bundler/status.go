package bundler

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/pullship/pullship/bundler/repo"
	"github.com/pullship/pullship/schema"
)

// StatusFile is the report on a status branch; its signature is
// StatusFile + ".sig" next to it.
const StatusFile = "status.toml"

// ReportState classifies one node's newest status report.
type ReportState string

// Report states. Forged, unsigned and invalid reports are never trusted:
// their content is not shown.
const (
	ReportOK       ReportState = "ok"       // signed by the node's key, recent
	ReportStale    ReportState = "stale"    // signed by the node's key, older than the stale threshold
	ReportForged   ReportState = "forged"   // signed, but not by the node's status key
	ReportUnsigned ReportState = "unsigned" // no status.toml.sig
	ReportInvalid  ReportState = "invalid"  // unreadable, malformed, or about another node
	ReportMissing  ReportState = "missing"  // no status branch for the node
	ReportUnknown  ReportState = "unknown"  // a status branch for a node the release does not list
)

// Bad reports whether the state means someone wrote a report that must not
// be trusted (the CLI exits with the verification code).
func (s ReportState) Bad() bool {
	return s == ReportForged || s == ReportUnsigned || s == ReportInvalid
}

// NodeReport is one node's newest status report and what checking it found.
type NodeReport struct {
	Node    string         `json:"node"`
	Region  string         `json:"region"` // from the release manifest
	Wave    int            `json:"wave"`   // from the release manifest
	State   ReportState    `json:"state"`
	Problem string         `json:"problem,omitempty"` // why the state is not ok
	Commit  string         `json:"commit,omitempty"`  // head of the status branch
	Age     time.Duration  `json:"age_ns,omitempty"`  // now − report time (verified reports)
	Status  *schema.Status `json:"status,omitempty"`  // set only for ok and stale
}

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
	Version int64         `json:"release_version"`
	Commit  string        `json:"release_commit"`
	Now     time.Time     `json:"now"`
	Stale   time.Duration `json:"stale_after_ns"`
	Nodes   []NodeReport  `json:"nodes"` // release order, then unknown branches by name
	Matrix  Matrix        `json:"matrix"`
}

// Bad counts the forged, unsigned and invalid reports.
func (f *Fleet) Bad() int {
	n := 0
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
}

// DefaultStale is three default agent heartbeats.
const DefaultStale = 15 * time.Minute

// MaxStatusPack bounds one fetch of the status branches.
const MaxStatusPack = 64 << 20

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
	head, err := r.Sync(ctx)
	if err != nil {
		return nil, err
	}
	if head.Releases.IsZero() {
		return nil, errors.New("fleet status: no release yet: the node list comes from the newest release")
	}
	b, err := ReadBundle(r.Cache, head.Releases)
	if err != nil {
		return nil, fmt.Errorf("fleet status: %w", err)
	}
	v, err := Verify(b, pinned, now)
	if err != nil {
		return nil, fmt.Errorf("fleet status: %w", err)
	}
	f := &Fleet{Version: v.Release.Version, Commit: v.Commit.String(), Now: now, Stale: opts.Stale}

	// Fetch the listed nodes' branches only: the rest is attacker noise.
	listed := map[string]bool{}
	var fetch []string
	var haves []plumbing.Hash
	for _, n := range v.Release.Nodes {
		listed[n.Name] = true
		id := head.Refs[StatusPrefix+n.Name]
		if id.IsZero() {
			continue
		}
		if old, err := r.Cache.Ref(statusCacheRef(n.Name)); err == nil {
			haves = append(haves, old)
		}
		if !r.Cache.HasObject(id) {
			fetch = append(fetch, StatusPrefix+n.Name+":"+statusCacheRef(n.Name))
		}
	}
	heads := map[string]plumbing.Hash{}
	for _, n := range v.Release.Nodes {
		heads[n.Name] = head.Refs[StatusPrefix+n.Name]
	}
	if len(fetch) > 0 {
		got, err := r.Remote.Fetch(ctx, r.Cache, repo.FetchRequest{Refs: fetch, Haves: haves, MaxPackBytes: MaxStatusPack})
		if err != nil {
			return nil, fmt.Errorf("fleet status: fetch status branches: %w", err)
		}
		for ref, id := range got {
			if node, ok := strings.CutPrefix(ref, StatusPrefix); ok && listed[node] {
				heads[node] = id
			}
		}
	}

	for _, n := range v.Release.Nodes {
		nr := NodeReport{Node: n.Name, Region: n.Region, Wave: n.Wave}
		if id := heads[n.Name]; id.IsZero() {
			nr.State, nr.Problem = ReportMissing, "no branch "+StatusPrefix+n.Name
		} else {
			nr.Commit = id.String()
			checkReport(r.Cache, &nr, n, id)
			if nr.Status != nil {
				nr.Age = now.Sub(nr.Status.Time)
				if nr.Age > opts.Stale {
					nr.State = ReportStale
					nr.Problem = fmt.Sprintf("last report %s ago (stale after %s)", nr.Age.Round(time.Second), opts.Stale)
				}
			}
		}
		f.Nodes = append(f.Nodes, nr)
	}
	var unknown []string
	for ref := range head.Refs {
		if node, ok := strings.CutPrefix(ref, StatusPrefix); ok && !listed[node] {
			unknown = append(unknown, node)
		}
	}
	sort.Strings(unknown)
	for _, node := range unknown {
		f.Nodes = append(f.Nodes, NodeReport{Node: node, State: ReportUnknown, Commit: head.Refs[StatusPrefix+node].String(),
			Problem: fmt.Sprintf("release %d lists no node %q; the branch is not read", v.Release.Version, node)})
	}
	f.Matrix = buildMatrix(v.Release, f.Nodes)
	return f, nil
}

// CheckReport reads and verifies the status report at commit id of node n's
// branch (as an agent gating its wave does): the state says whether it can
// be trusted, Status is set only when it can.
func CheckReport(st *repo.Store, n schema.ReleaseNode, id plumbing.Hash) NodeReport {
	nr := NodeReport{Node: n.Name, Region: n.Region, Wave: n.Wave, Commit: id.String()}
	checkReport(st, &nr, n, id)
	return nr
}

// checkReport fills nr's state (and Status when the report verifies) from
// the status commit id of node n.
func checkReport(st *repo.Store, nr *NodeReport, n schema.ReleaseNode, id plumbing.Hash) {
	fail := func(s ReportState, format string, args ...any) {
		nr.State, nr.Problem = s, fmt.Sprintf(format, args...)
	}
	data, err := st.ReadFile(id, StatusFile, schema.MaxFileSize)
	if err != nil {
		fail(ReportInvalid, "commit %s: %v", short(id), err)
		return
	}
	sigName := schema.SigFileName(StatusFile)
	sigData, err := st.ReadFile(id, sigName, schema.MaxSignatureFileLen)
	if errors.Is(err, repo.ErrNotFound) {
		fail(ReportUnsigned, "commit %s: no %s", short(id), sigName)
		return
	}
	if err != nil {
		fail(ReportInvalid, "commit %s: %v", short(id), err)
		return
	}
	if err := VerifyStatusSignature(n, data, sigData); err != nil {
		var fe *ForgedError
		if errors.As(err, &fe) {
			fail(ReportForged, "commit %s: %v", short(id), err)
		} else {
			fail(ReportInvalid, "commit %s: %v", short(id), err)
		}
		return
	}
	s, err := schema.ParseStatus(StatusFile, data)
	if err != nil {
		fail(ReportInvalid, "commit %s: %v", short(id), err)
		return
	}
	if s.Node != n.Name {
		fail(ReportInvalid, "commit %s: report about node %q on the branch of %q", short(id), s.Node, n.Name)
		return
	}
	nr.State, nr.Status = ReportOK, s
}

// ForgedError is a status signature that is well-formed but not a valid
// signature by the node's status key.
type ForgedError struct {
	Node   string
	KeyID  string // the key the signature claims
	Reason string
}

func (e *ForgedError) Error() string {
	return fmt.Sprintf("status of node %s: signature by key %s: %s", e.Node, shortHex(e.KeyID), e.Reason)
}

// VerifyStatusSignature checks sig (status.toml.sig) over data
// (status.toml) against node n of a verified manifest: exactly one
// signature, whose key id is n.StatusKeyID and which verifies with
// n.StatusKey. A signature by any other key, or one that does not verify,
// is a *ForgedError; a malformed signature file another error.
func VerifyStatusSignature(n schema.ReleaseNode, data, sig []byte) error {
	sigs, err := schema.ParseSignatures(schema.SigFileName(StatusFile), sig)
	if err != nil {
		return fmt.Errorf("status of node %s: %w", n.Name, err)
	}
	if len(sigs.Signatures) != 1 {
		return fmt.Errorf("status of node %s: %d signatures, want exactly one", n.Name, len(sigs.Signatures))
	}
	s := sigs.Signatures[0]
	if s.KeyID != n.StatusKeyID {
		return &ForgedError{Node: n.Name, KeyID: s.KeyID, Reason: "not the node's status key " + shortHex(n.StatusKeyID)}
	}
	key, err := schema.NewRootKey([]byte(n.StatusKey))
	if err != nil {
		return fmt.Errorf("status of node %s: status_key: %w", n.Name, err)
	}
	if key.ID != n.StatusKeyID {
		return fmt.Errorf("status of node %s: status_key has id %s, manifest says %s", n.Name, shortHex(key.ID), shortHex(n.StatusKeyID))
	}
	// A one-key root with threshold 1 is exactly "this key signed": it
	// reuses the strict DER and algorithm checks of release signatures.
	one := &schema.Root{Version: 1, Expires: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), Threshold: 1, Keys: []schema.RootKey{key}}
	res, err := schema.VerifyThreshold(one, data, sigs)
	var te *schema.ThresholdError
	if errors.As(err, &te) {
		reason := schema.ReasonInvalid
		if len(res.Checks) == 1 {
			reason = res.Checks[0].Reason
		}
		return &ForgedError{Node: n.Name, KeyID: s.KeyID, Reason: reason}
	}
	if err != nil {
		return fmt.Errorf("status of node %s: %w", n.Name, err)
	}
	return nil
}

func buildMatrix(rel *schema.Release, nodes []NodeReport) Matrix {
	alias := map[string]string{} // member name → node name
	for _, n := range rel.Nodes {
		if c := n.Container.Cluster; c != nil && c.Self != "" {
			alias[c.Self] = n.Name
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
		if n.Container.Cluster != nil && n.Container.Cluster.Self != "" {
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
		if n.State == ReportUnknown {
			continue
		}
		w := byWave[n.Wave]
		if w == nil {
			w = &WaveProgress{Wave: n.Wave}
			byWave[n.Wave] = w
			order = append(order, n.Wave)
		}
		w.Nodes = append(w.Nodes, n.Node)
		if s := n.Status; s != nil && s.AppliedVersion == f.Version && s.Health.OK {
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
			case s == nil || s.AppliedVersion != f.Version || !s.Health.OK:
				blocker = fmt.Sprintf("waits for node %s (wave %d) to be healthy on release %d", n.Node, wv, f.Version)
			}
		}
		out = append(out, *w)
	}
	return out
}
