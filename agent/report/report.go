// Package report writes a node's status reports as signed git commits on
// its own branch, refs/heads/status/<node>, and pushes that branch (and
// nothing else) to the release repository.
//
// The local object store is the queue: [Reporter.Commit] appends a commit
// to the branch in the local store whether or not any remote is reachable,
// and [Reporter.Flush] pushes the branch head, which carries every report
// queued since the last successful push, in order. Heartbeats that change
// nothing are coalesced so that history grows with changes, not with time;
// docs/status.md states the policy.
package report

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// Paths and refs of a status branch (docs/format.md).
const (
	StatusFile = "status.toml"
	RefPrefix  = "refs/heads/status/"
)

// Ref is the status branch of node.
func Ref(node string) string { return RefPrefix + node }

// Pusher is what the reporter needs from a remote; *repo.Remote is one.
type Pusher interface {
	Push(ctx context.Context, updates []repo.RefUpdate, st *repo.ObjectStream) (*repo.PushResult, error)
	Refs(ctx context.Context, prefixes ...string) (map[string]plumbing.Hash, error)
}

// Reporter commits and pushes the status reports of one node. Its methods
// may be called from several goroutines; they are serialised. The store may
// be shared with the agent's release fetches (refs and packs are written
// with git's lock-and-rename protocol).
type Reporter struct {
	node   string
	ref    string
	signer signature.Signer
	store  *repo.Store

	mu sync.Mutex
}

// New returns the reporter of node, signing with signer (the node's status
// key, as schema.LoadPrivateKey returns it) and queueing in store.
func New(node string, signer signature.Signer, store *repo.Store) (*Reporter, error) {
	if err := schema.CheckName(node); err != nil {
		return nil, fmt.Errorf("status reporter: node %q: %w", node, err)
	}
	if signer == nil || store == nil {
		return nil, fmt.Errorf("status reporter for node %s: needs a signer and a store", node)
	}
	if _, err := signer.PublicKey(); err != nil {
		return nil, fmt.Errorf("status reporter for node %s: %w", node, err)
	}
	return &Reporter{node: node, ref: Ref(node), signer: signer, store: store}, nil
}

// Ref is the branch this reporter writes and pushes.
func (r *Reporter) Ref() string { return r.ref }

// Head is the local head of the status branch: the newest queued or pushed
// report; zero when none was committed yet.
func (r *Reporter) Head() (plumbing.Hash, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.head()
}

func (r *Reporter) head() (plumbing.Hash, error) {
	h, err := r.store.Ref(r.ref)
	if errors.Is(err, repo.ErrNotFound) {
		return plumbing.ZeroHash, nil
	}
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("status of node %s: %w", r.node, err)
	}
	return h, nil
}

// Commit signs st and commits it (status.toml and status.toml.sig) to the
// local status branch. It sets st.Sequence to one more than the previous
// report's; st.Node must be the reporter's node, and st must otherwise be
// valid (schema.Status.Validate).
//
// Coalescing: when st is a heartbeat (equal to the head's report but for
// sequence, time and health.checked_at, see [IsHeartbeat]) and the head is
// itself a heartbeat of its parent, the new commit replaces the head (its
// parent is the head's parent). A run of unchanged heartbeats therefore
// leaves one commit, and history holds at most two commits per change.
// Replacing a pushed head makes the next push a non-fast-forward update of
// this node's own branch.
func (r *Reporter) Commit(st *schema.Status) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st.Node != r.node {
		return fmt.Errorf("status of node %s: report names node %q", r.node, st.Node)
	}
	head, err := r.head()
	if err != nil {
		return err
	}
	var parents []plumbing.Hash
	seq := int64(1)
	kind := "report"
	if !head.IsZero() {
		prev, parent, err := r.readReport(head)
		if err != nil {
			return err
		}
		seq = prev.Sequence + 1
		parents = []plumbing.Hash{head}
		if IsHeartbeat(prev, st) {
			kind = "heartbeat"
			if !parent.IsZero() {
				grand, _, err := r.readReport(parent)
				if err != nil {
					return err
				}
				if IsHeartbeat(grand, prev) {
					// The head only refreshed the time: replace it.
					parents = []plumbing.Hash{parent}
				}
			}
		}
	}
	st.Sequence = seq
	data, err := st.Encode()
	if err != nil {
		return fmt.Errorf("status of node %s: %w", r.node, err)
	}
	sig, err := schema.SignWith(r.signer, data)
	if err != nil {
		return fmt.Errorf("status of node %s: %w", r.node, err)
	}
	var sf schema.SignatureFile
	sf.Add(sig)

	objs := repo.NewObjectStream(nil)
	tb := repo.NewTreeBuilder()
	if err := tb.Add(StatusFile, filemode.Regular, objs.AddBytes(plumbing.BlobObject, data)); err != nil {
		return err
	}
	if err := tb.Add(schema.SigFileName(StatusFile), filemode.Regular, objs.AddBytes(plumbing.BlobObject, sf.Encode())); err != nil {
		return err
	}
	tree, err := tb.Build(objs)
	if err != nil {
		return err
	}
	who := repo.Signature{Name: "pullship-agent " + r.node, Email: r.node + "@pullship.invalid", When: st.Time}
	cdata, cid, err := repo.EncodeCommit(repo.Commit{Tree: tree, Parents: parents, Author: who, Committer: who,
		Message: commitMessage(kind, st)})
	if err != nil {
		return fmt.Errorf("status of node %s: %w", r.node, err)
	}
	objs.AddBytes(plumbing.CommitObject, cdata)
	if err := r.store.Write(context.Background(), objs); err != nil {
		return fmt.Errorf("status of node %s: %w", r.node, err)
	}
	if err := r.store.SetRef(r.ref, head, cid); err != nil {
		return fmt.Errorf("status of node %s: %w", r.node, err)
	}
	return nil
}

func commitMessage(kind string, st *schema.Status) string {
	health := "unhealthy"
	if st.Health.OK {
		health = "healthy"
	}
	msg := fmt.Sprintf("%s %s #%d: applied %d, target %d, %s, container %s\n",
		kind, st.Node, st.Sequence, st.AppliedVersion, st.TargetVersion, health, st.Container.State)
	if st.LastError != "" {
		e := st.LastError
		if len(e) > 200 {
			e = e[:200] + "…"
		}
		msg += "\nlast error: " + strings.ReplaceAll(e, "\n", " ") + "\n"
	}
	return msg
}

// readReport returns the report in commit (as the reporter wrote it) and
// the commit's first parent.
func (r *Reporter) readReport(commit plumbing.Hash) (*schema.Status, plumbing.Hash, error) {
	data, err := r.store.ReadFile(commit, StatusFile, schema.MaxStatusFileLen)
	if err != nil {
		return nil, plumbing.ZeroHash, fmt.Errorf("status of node %s: commit %s: %w", r.node, commit, err)
	}
	st, err := schema.ParseStatus(StatusFile, data)
	if err != nil {
		return nil, plumbing.ZeroHash, fmt.Errorf("status of node %s: commit %s: %w", r.node, commit, err)
	}
	log, err := r.store.Log(commit, 1)
	if err != nil {
		return nil, plumbing.ZeroHash, fmt.Errorf("status of node %s: %w", r.node, err)
	}
	if len(log) != 1 {
		return nil, plumbing.ZeroHash, fmt.Errorf("status of node %s: commit %s: not found", r.node, commit)
	}
	var parent plumbing.Hash
	if len(log[0].ParentHashes) > 0 {
		parent = log[0].ParentHashes[0]
	}
	return st, parent, nil
}

// IsHeartbeat reports whether next says nothing prev did not: the two are
// equal but for sequence, time and health.checked_at (the node's and its
// services').
func IsHeartbeat(prev, next *schema.Status) bool {
	a, b := *prev, *next
	// Compare canonical encodings: times decoded from TOML and times made
	// in memory differ in representation, not in value.
	for _, s := range []*schema.Status{&a, &b} {
		s.Sequence = 1
		s.Time = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
		s.Health.CheckedAt = nil
		s.Services = slices.Clone(s.Services)
		for i := range s.Services {
			s.Services[i].Health.CheckedAt = nil
		}
	}
	ea, erra := a.Encode()
	eb, errb := b.Encode()
	return erra == nil && errb == nil && bytes.Equal(ea, eb)
}

// Flush pushes the local status branch to the first of pushers that
// accepts it, and returns nil as soon as one does (or already has the
// head). Every queued report goes out with the head, in order. The update
// is compare-and-swap on the value the remote advertised; it is a
// non-fast-forward when the head replaced a heartbeat the remote holds.
// Only the reporter's own branch is ever pushed. With no pusher reachable
// the reports stay queued and the error lists each remote's failure.
func (r *Reporter) Flush(ctx context.Context, pushers ...Pusher) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	head, err := r.head()
	if err != nil {
		return err
	}
	if head.IsZero() {
		return nil
	}
	if len(pushers) == 0 {
		return fmt.Errorf("push status of node %s: no remote", r.node)
	}
	var errs []error
	for _, p := range pushers {
		err := r.pushTo(ctx, p, head)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("push status of node %s: %w", r.node, ctx.Err())
		}
		errs = append(errs, err) // each names its remote
	}
	return fmt.Errorf("push status of node %s: reports stay queued: %w", r.node, errors.Join(errs...))
}

// pushAttempts bounds the retries when the remote's branch moves between
// the advertisement and the push (another agent instance for this node).
const pushAttempts = 3

func (r *Reporter) pushTo(ctx context.Context, p Pusher, head plumbing.Hash) error {
	var err error
	for range pushAttempts {
		var refs map[string]plumbing.Hash
		if refs, err = p.Refs(ctx, r.ref); err != nil {
			return err
		}
		remote := refs[r.ref]
		if remote == head {
			return nil
		}
		var haves []plumbing.Hash
		if !remote.IsZero() && r.store.HasObject(remote) {
			haves = append(haves, remote)
		}
		var objs *repo.ObjectStream
		if objs, err = r.store.Missing([]plumbing.Hash{head}, haves); err != nil {
			return err
		}
		_, err = p.Push(ctx, []repo.RefUpdate{{Name: r.ref, Old: remote, New: head}}, objs)
		var conflict *repo.RefConflictError
		if !errors.As(err, &conflict) {
			return err
		}
	}
	return err
}

// Last returns the newest committed report (nil when none was committed).
func (r *Reporter) Last() (*schema.Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	head, err := r.head()
	if err != nil || head.IsZero() {
		return nil, err
	}
	st, _, err := r.readReport(head)
	return st, err
}
