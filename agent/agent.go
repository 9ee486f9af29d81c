package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pullship/pullship/bundler/shared/bundle"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/pullship/pullship/agent/cluster"
	"github.com/pullship/pullship/agent/config"
	"github.com/pullship/pullship/agent/engine"
	"github.com/pullship/pullship/agent/report"
	"github.com/pullship/pullship/agent/state"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// Outcome is what one pass did.
type Outcome int

// Outcomes of [Agent.Once].
const (
	Nothing   Outcome = iota // every node already on the newest release
	Converged                // at least one node applied the newest release
	Failed                   // a node's apply failed and was rolled back
)

func (o Outcome) String() string {
	return [...]string{"nothing to do", "converged", "failed"}[o]
}

// Errors callers branch on.
var (
	// ErrVerify wraps every refusal of a release by verification; it is a
	// refusal (schema.ErrRefused), as what it wraps often is already.
	ErrVerify = schema.Refused(errors.New("release refused"))
	// ErrNoRemote means no remote could be reached or read.
	ErrNoRemote = errors.New("no remote reachable")
)

// Agent makes the nodes of one host converge on the newest signed release.
type Agent struct {
	cfg     *config.Config
	eng     engine.Engine
	st      *state.Store
	objects *repo.Store
	pinned  *schema.Root
	trust   *bundle.Trust // pinned and every root accepted since (state dir roots/)
	log     *slog.Logger
	metrics *Metrics
	now     func() time.Time
	remotes map[string]*repo.Remote
	managed managed
	// joinBackoff paces cluster join attempts.
	joinBackoff cluster.Backoff
	reporters   map[string]*report.Reporter
	lastReport  map[string]reported
	// cutImages holds, per image digest, the cut that ended the last fetch
	// of the image: the next fetch (from the next remote, or at the next
	// pass) resumes it.
	cutImages map[string]error
	// releases caches parsed releases by commit (see releaseAt); Watch
	// reads them beside the pass.
	releasesMu sync.Mutex
	releases   map[plumbing.Hash]*schema.Release
}

// Options are the agent's collaborators; zero fields get defaults.
type Options struct {
	Engine  engine.Engine
	Logger  *slog.Logger
	Metrics *Metrics
	Clock   func() time.Time
}

// New opens the agent's state directory (locking it) and reads the pinned
// root. Close releases the state directory.
func New(cfg *config.Config, o Options) (*Agent, error) {
	data, err := os.ReadFile(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("read pinned root: %w", err)
	}
	pinned, err := schema.ParseRoot(cfg.Root, data)
	if err != nil {
		return nil, fmt.Errorf("pinned root: %w", err)
	}
	// Credentials are read now: a bad key or a missing known_hosts is a
	// configuration error, said at start rather than at every poll.
	tables := cfg.RemoteTable
	if cfg.StatusRemote != nil {
		tables = append(slices.Clip(tables), *cfg.StatusRemote)
	}
	tables = append(slices.Clip(tables), cfg.StatusPeers...)
	for _, rc := range tables {
		if _, err := rc.Credentials().Options(rc.URL); err != nil {
			return nil, err
		}
	}
	st, err := state.Open(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	objects, err := repo.Init(filepath.Join(cfg.StateDir, "objects"))
	if err != nil {
		st.Close()
		return nil, err
	}
	objects.SetBudget(cfg.StoreBudget())
	// What a crash left mid-write (a pack without its index, temporary
	// files) counts against the budget until it goes.
	if _, err := objects.RemoveGarbage(); err != nil {
		st.Close()
		return nil, err
	}
	trust, err := bundle.OpenTrust(st.Path(TrustedRootsDir), pinned)
	if err != nil {
		st.Close()
		return nil, err
	}
	a := &Agent{cfg: cfg, eng: o.Engine, st: st, objects: objects, pinned: pinned, trust: trust, log: o.Logger,
		metrics: o.Metrics, now: o.Clock, remotes: map[string]*repo.Remote{}, cutImages: map[string]error{}}
	if a.log == nil {
		a.log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if a.metrics == nil {
		a.metrics = NewMetrics(nil)
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.metrics.StoreBudget.Set(float64(cfg.StoreBudget()))
	// One round of joins per pass: the poll loop is the backoff, and the
	// first node of a new cluster has nobody to join yet.
	a.joinBackoff = cluster.Backoff{Rounds: 1}
	if err := a.openReporters(); err != nil {
		st.Close()
		return nil, err
	}
	return a, nil
}

// Close releases the state directory.
func (a *Agent) Close() error { return a.st.Close() }

// target is a verified release and where it came from.
type target struct {
	remote *repo.Remote
	v      *bundle.Verified
}

// poll asks each remote in order for its newest release and returns the
// first that verifies and is not older than what this host accepted. A
// remote that is down, serves garbage, or serves an older release is
// skipped with a log line and a metric. st is the persisted state.
func (a *Agent) poll(ctx context.Context, st *state.State) (*target, error) {
	var errs []error
	verifyFailed := false
	for _, url := range a.cfg.Remotes {
		t, err := a.pollOne(ctx, url, st)
		if err == nil {
			a.metrics.LastPoll.SetToCurrentTime()
			if verifyFailed {
				// A remote before this one served a release that was
				// refused: what it brought goes, what this one brought
				// stays (no ref names it yet).
				a.collect(t.v.Commit)
			}
			return t, nil
		}
		if errors.Is(err, ErrVerify) {
			verifyFailed = true
			a.metrics.VerifyFailed.WithLabelValues(redact(url)).Inc()
		} else {
			a.metrics.RemoteErrors.WithLabelValues(redact(url)).Inc()
		}
		a.log.Warn("remote skipped", "remote", redact(url), "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", redact(url), err))
	}
	err := errors.Join(errs...)
	if verifyFailed {
		a.collect()
		return nil, fmt.Errorf("%w: %w", ErrVerify, err)
	}
	return nil, fmt.Errorf("%w: %w", ErrNoRemote, err)
}

// collect keeps the object store to what a ref of it, a release a node
// runs, or extra reaches: the packs of refused releases go (a server
// serving a new unsigned release at every poll would otherwise fill the
// disk), and so do the images of releases no longer run; when what is
// left holds many bytes nothing needs (an old image's pack kept for the
// chunks an update shares), the needed objects are repacked into one
// pack. It costs a walk of the objects below the store's refs (blobs by
// their headers only), and for a repack a read and a write of the bytes
// they need (see repo.Store.Collect).
func (a *Agent) collect(extra ...plumbing.Hash) {
	refs, err := a.objects.Refs()
	if err != nil {
		a.log.Warn("object store not collected", "err", err)
		return
	}
	st, err := a.st.Load()
	if err != nil {
		a.log.Warn("object store not collected", "err", err)
		return
	}
	keep := make([]plumbing.Hash, 0, len(refs)+len(extra))
	for _, h := range refs {
		keep = append(keep, h)
	}
	keep = append(keep, extra...)
	keep = append(keep, runningCommits(st)...)
	cs, err := a.objects.Collect(context.Background(), keep)
	if err != nil {
		a.log.Warn("object store not collected", "err", err)
		return
	}
	if cs.Freed > 0 {
		a.log.Info("object store collected", "freed_bytes", cs.Freed, "live_bytes", cs.LiveBytes, "repacked", cs.Repacked)
	}
}

// dropOldImages removes the image tags of the object store that neither
// the newest release nor one a node still runs (rolled back to) names, then
// the packs only they reached: the store keeps the images of the releases
// it runs (the engine keeps the previous container's image for a rollback).
func (a *Agent) dropOldImages(rel *schema.Release, st *state.State) {
	refs, err := a.objects.Refs()
	if err != nil {
		return
	}
	named := map[string]bool{}
	for _, img := range rel.Images {
		named[bundle.ImageTag(img.Digest)] = true
	}
	for _, n := range a.cfg.Nodes {
		r, ok := a.running(n.Name, st.Nodes[n.Name])
		if !ok {
			continue
		}
		if ran, err := a.releaseAt(r.commit); err == nil {
			for _, img := range ran.Images {
				named[bundle.ImageTag(img.Digest)] = true
			}
		}
	}
	dropped := false
	for name, id := range refs {
		if !strings.HasPrefix(name, bundle.ImageTagPrefix) || named[name] {
			continue
		}
		if err := a.objects.SetRef(name, id, plumbing.ZeroHash); err != nil {
			a.log.Warn("old image tag not removed", "tag", name, "err", err)
			continue
		}
		dropped = true
	}
	if dropped {
		a.collect()
	}
}

func (a *Agent) pollOne(ctx context.Context, url string, st *state.State) (*target, error) {
	r, err := a.remote(ctx, url)
	if err != nil {
		return nil, err
	}
	// Only the release branch: one small request whatever the number of
	// status branches (protocol v2 ls-refs; see repo.Remote.Refs).
	refs, err := r.Refs(ctx, bundle.ReleasesRef)
	if err != nil {
		return nil, err
	}
	head := refs[bundle.ReleasesRef]
	if head.IsZero() {
		return nil, fmt.Errorf("no releases yet")
	}
	if !a.objects.HasObject(head) {
		a.makeRoom(bundle.MaxHistoryPack)
		var haves []plumbing.Hash
		if h, err := a.objects.Ref(acceptedRef); err == nil {
			haves = append(haves, h)
		}
		if _, err := r.Fetch(ctx, a.objects, repo.FetchRequest{Refs: []string{bundle.ReleasesRef}, Haves: haves,
			MaxPackBytes: bundle.MaxHistoryPack}); err != nil {
			return nil, err
		}
	}
	b, err := bundle.Read(a.objects, head)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerify, err)
	}
	v, err := a.trust.Verify(b, a.now())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerify, err)
	}
	if err := checkVersion(v, st); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerify, err)
	}
	if v.Root.Version < st.RootVersion {
		return nil, fmt.Errorf("%w: release %d is signed for root %d, this host already follows root %d", ErrVerify, v.Release.Version, v.Root.Version, st.RootVersion)
	}
	for _, n := range a.cfg.Nodes {
		rn, ok := v.Release.Node(n.Name)
		if !ok {
			return nil, fmt.Errorf("%w: release %d has no node %q (a release for another fleet?)", ErrVerify, v.Release.Version, n.Name)
		}
		for _, f := range rn.Files {
			if !a.cfg.Allowed(f.Target) {
				return nil, fmt.Errorf("%w: release %d: node %s: file target %s is outside allowed_dirs %v", ErrVerify, v.Release.Version, n.Name, f.Target, a.cfg.AllowedDirs)
			}
		}
	}
	return &target{remote: r, v: v}, nil
}

// TrustedRootsDir is the directory of the state dir that holds every root
// accepted beyond the pinned one (root-N.toml, exact bytes): each poll's
// chain walk starts from the newest of them.
const TrustedRootsDir = "roots"

// acceptedRef is where the object store remembers the newest accepted
// release commit (the "have" of the next fetch).
const acceptedRef = "refs/pullship/accepted"

// checkVersion refuses rollback and replay: a release must be newer than
// the highest ever accepted, or be that very release.
func checkVersion(v *bundle.Verified, st *state.State) error {
	rel := v.Release
	if st.RootVersion != 0 && v.Root.Version > st.RootVersion {
		// A newer root resets the floor: it is how a fleet recovers from a
		// release signed with a runaway version (those who can rotate the
		// root could sign anything anyway). Older roots stay refused.
		return nil
	}
	switch {
	case rel.Version < st.Version:
		return fmt.Errorf("release %d is older than release %d, already accepted here: rollback refused", rel.Version, st.Version)
	case rel.Version == st.Version && v.ManifestSHA256 != st.ManifestSHA256:
		return fmt.Errorf("release %d differs from the release %d accepted here (manifest sha256 %.12s, accepted %.12s): replay refused", rel.Version, st.Version, v.ManifestSHA256, st.ManifestSHA256)
	}
	return checkPrevious(v, st)
}

// checkPrevious refuses a release that claims to follow the release
// accepted here but names another manifest as its previous one: a fork of
// the release history, signed or not.
func checkPrevious(v *bundle.Verified, st *state.State) error {
	rel := v.Release
	if st.ManifestSHA256 == "" || rel.Version != st.Version+1 || rel.Previous == st.ManifestSHA256 {
		return nil
	}
	return fmt.Errorf("release %d names manifest %.12s as its previous one, but release %d accepted here is %.12s: history forked, refused",
		rel.Version, rel.Previous, st.Version, st.ManifestSHA256)
}

// accept persists the release as the highest accepted, before anything is
// applied, so a crash cannot reopen the door to an older one.
func (a *Agent) accept(t *target, st *state.State) error {
	v := t.v
	// The roots first: a crash between the two leaves them trusted (they
	// verified) with the floor unmoved, which the next pass repeats.
	if err := a.trust.Accept(v); err != nil {
		return err
	}
	if st.Version == v.Release.Version && st.ManifestSHA256 == v.ManifestSHA256 && st.RootVersion == v.Root.Version {
		return nil
	}
	st.Version, st.ManifestSHA256, st.RootVersion = v.Release.Version, v.ManifestSHA256, v.Root.Version
	if err := a.st.Save(st); err != nil {
		return err
	}
	old, _ := a.objects.Ref(acceptedRef)
	return a.objects.SetRef(acceptedRef, old, v.Commit)
}

func (a *Agent) remote(ctx context.Context, url string) (*repo.Remote, error) {
	if r, ok := a.remotes[url]; ok {
		return r, nil
	}
	rc, _ := a.cfg.Remote(url)
	opts, err := rc.Credentials().Options(url)
	if err != nil {
		return nil, err
	}
	opts.StallTimeout = a.cfg.StallTimeout.Duration
	r, err := repo.Open(ctx, url, opts)
	if err != nil {
		return nil, err
	}
	a.remotes[url] = r
	a.metrics.Wire.Watch(r.String(), r.Counters)
	a.metrics.Resumes.WithLabelValues(r.String()) // exported from 0
	return r, nil
}

// Once runs one pass: recover from an interrupted apply, poll, verify, and
// apply the newest release to every node that needs it.
func (a *Agent) Once(ctx context.Context) (Outcome, error) {
	defer a.measureStore()
	if err := a.recover(ctx); err != nil {
		return Failed, err
	}
	st, err := a.st.Load()
	if err != nil {
		return Failed, err
	}
	t, err := a.poll(ctx, st)
	if err != nil {
		// Still say what runs: the report queues until a remote is back.
		for _, n := range a.cfg.Nodes {
			if r, ok := a.current(n.Name, st.Nodes[n.Name]); ok {
				a.report(ctx, r, st.Version, st.Nodes[n.Name], err)
			}
		}
		return Nothing, err
	}
	if err := a.accept(t, st); err != nil {
		return Failed, err
	}
	out := Nothing
	var errs []error
	for _, n := range a.cfg.Nodes {
		rn, _ := t.v.Release.Node(n.Name)
		o, err := a.converge(ctx, t, st, rn)
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
		}
		if o > out {
			out = o
		}
		// What the node runs now: this release, or (rolled back, or held
		// by its wave) the one it ran before.
		a.report(ctx, a.runningOr(st.Nodes[n.Name], rn, t.v.Commit), t.v.Release.Version, st.Nodes[n.Name], err)
	}
	if len(errs) == 0 {
		a.dropOldImages(t.v.Release, st)
	}
	return out, errors.Join(errs...)
}

// measureStore sets the object store's size on disk in the metrics.
func (a *Agent) measureStore() {
	if n, err := a.objects.Usage(); err == nil {
		a.metrics.StoreBytes.Set(float64(n))
	}
}

func redact(url string) string { return repo.RedactURL(url) }
