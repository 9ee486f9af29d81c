package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/sideband"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

// Options configure a Remote. The zero value is usable.
type Options struct {
	// Auth authenticates to the server (githttp.BasicAuth/TokenAuth for
	// HTTP, an ssh auth method for ssh://); nil for none or URL userinfo.
	Auth transport.AuthMethod
	// HTTPClient is used for every HTTP request; nil means a package-wide
	// client with keep-alive, so repeated polls reuse one connection.
	HTTPClient *http.Client
	// ConnectTimeout bounds a TCP connect to a git:// or ssh:// server
	// (0: [DefaultConnectTimeout]; HTTP: the client's dialer).
	ConnectTimeout time.Duration
	// StallTimeout abandons an operation when the server sends nothing
	// (or takes nothing) for this long, with an [ErrStalled] error
	// (0: [DefaultStallTimeout]). It covers HTTP too.
	StallTimeout time.Duration
}

// DefaultHTTPClient is the shared client of remotes opened without one
// (the system's CAs).
var DefaultHTTPClient = &http.Client{Transport: certErrors{baseTransport()}}

// maxAdvertisement bounds a ref advertisement read over HTTP (and the
// other small responses): room for 40,000 refs, ten times a fleet of 1,000
// nodes' status branches and image tags.
const maxAdvertisement = 4 << 20

// Remote is a release repository: a git server or a bare repository in a
// directory. A network remote may be used from several goroutines; a
// directory remote, like a Store, from one at a time (other processes are
// kept out by git's ref locks).
type Remote struct {
	url  string
	dir  *Store   // directory remotes
	u    *url.URL // network remotes
	http *http.Client
	auth transport.AuthMethod

	connectTimeout, stallTimeout time.Duration
	counters                     counters
	// httpV2 are the capabilities of an HTTP server that answered in
	// protocol v2: later requests go straight to the command (one POST).
	httpV2 atomic.Pointer[map[string]string]
}

// Open addresses the repository at rawURL: http(s)://, git://, ssh://,
// file:// or a plain directory path (a bare repository; see [Init]). Network
// remotes are not contacted until used.
func Open(ctx context.Context, rawURL string, opts Options) (*Remote, error) {
	r := &Remote{url: rawURL, auth: opts.Auth, http: opts.HTTPClient,
		connectTimeout: opts.ConnectTimeout, stallTimeout: opts.StallTimeout}
	if r.connectTimeout <= 0 {
		r.connectTimeout = DefaultConnectTimeout
	}
	if r.stallTimeout <= 0 {
		r.stallTimeout = DefaultStallTimeout
	}
	if r.http == nil {
		r.http = DefaultHTTPClient
	}
	r.http = boundedClient(r.http, r.stallTimeout, &r.counters)
	if !strings.Contains(rawURL, "://") {
		s, err := OpenStore(rawURL)
		if err != nil {
			return nil, err
		}
		r.dir = s
		return r, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("open remote %s: %w", redact(rawURL), URLParseError(err))
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("open remote %s: file URL with a host", redact(rawURL))
		}
		s, err := OpenStore(u.Path)
		if err != nil {
			return nil, err
		}
		r.dir = s
		return r, nil
	case "http", "https", "git", "ssh":
	default:
		return nil, fmt.Errorf("open remote %s: unsupported scheme %q (use http, https, git, ssh, file or a directory)", redact(rawURL), u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("open remote %s: no host", redact(rawURL))
	}
	r.u = u
	return r, nil
}

func redact(raw string) string { return RedactURL(raw) }

// URLParseError is a url.Parse error without the URL, which its message
// would echo with any credentials in it.
func URLParseError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// RedactURL is rawURL without its user information (a user name may be a
// token as much as a password is), for logs, errors and metrics. A URL
// that does not parse loses everything between "://" and the last "@"
// before its path, so no credential is echoed whatever the input.
func RedactURL(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		if u.User == nil {
			return rawURL
		}
		u.User = nil
		return u.String()
	}
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return rawURL
	}
	authority, path := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, path = rest[:i], rest[i:]
	}
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		authority = "REDACTED@" + authority[i+1:]
	}
	return scheme + "://" + authority + path
}

// ErrConnectionCut marks a fetch whose pack stopped before its end: the
// connection closed or the server stopped sending. It is a network
// failure, never a refusal; what arrived before the cut is kept.
var ErrConnectionCut = errors.New("connection cut before the end of the pack")

// String is the remote's URL without password.
func (r *Remote) String() string { return redact(r.url) }

// Counters are what the remote moved over the network and how many
// operations it abandoned, since it was opened.
func (r *Remote) Counters() Counters { return r.counters.snapshot() }

// Refs returns the remote's refs: the cheap "did anything move" poll. With
// prefixes, only the refs whose names start with one of them (and "HEAD"
// only when a prefix asks for it); without, all of them. An empty
// repository yields an empty map.
func (r *Remote) Refs(ctx context.Context, prefixes ...string) (map[string]plumbing.Hash, error) {
	if r.dir != nil {
		// Other processes (a release, another agent's status push) add
		// packs to the directory: look at it afresh.
		r.dir.reload()
		refs, err := r.dir.Refs()
		if err != nil {
			return nil, err
		}
		return filterRefs(refs, prefixes), nil
	}
	refs, err := r.listRefs(ctx, prefixes)
	if err != nil {
		return nil, fmt.Errorf("list refs of %s: %w", r, err)
	}
	return filterRefs(refs, prefixes), nil
}

// listRefs asks upload-pack for the refs under prefixes: with ls-refs
// where the server speaks v2, else from its v0 advertisement (all refs).
func (r *Remote) listRefs(ctx context.Context, prefixes []string) (map[string]plumbing.Hash, error) {
	var refs map[string]plumbing.Hash
	err := r.uploadPack(ctx, func(c conv, h *hello) error {
		if h.v2 == nil {
			refs = h.refs()
			return nil
		}
		var err error
		refs, err = lsRefsV2(c, h, prefixes)
		return err
	})
	return refs, err
}

// uploadPack runs f in a conversation with upload-pack, asking for v2. An
// HTTP server whose v2 capabilities are known is asked the command
// straight away; if it no longer answers in v2, f runs again after a fresh
// first request.
func (r *Remote) uploadPack(ctx context.Context, f func(c conv, h *hello) error) error {
	for attempt := 0; ; attempt++ {
		c, err := r.conv(ctx, transport.UploadPackServiceName, true)
		if err != nil {
			return err
		}
		if hc, ok := c.(*httpConv); ok && attempt > 0 {
			hc.noCache = true
		}
		h, err := c.hello()
		if err == nil {
			err = f(c, h)
		}
		c.Close()
		var re *httpReplyError
		if err != nil && attempt == 0 && h != nil && h.cached && ctx.Err() == nil &&
			(errors.As(err, &re) || errors.Is(err, errProtocol)) {
			r.httpV2.Store(nil)
			continue
		}
		return err
	}
}

// filterRefs keeps the refs under prefixes (all without any).
func filterRefs(refs map[string]plumbing.Hash, prefixes []string) map[string]plumbing.Hash {
	if len(prefixes) == 0 {
		return refs
	}
	for name := range refs {
		if !slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			delete(refs, name)
		}
	}
	return refs
}

func advRefsMap(ar *packp.AdvRefs) map[string]plumbing.Hash {
	refs := make(map[string]plumbing.Hash, len(ar.References)+1)
	for name, h := range ar.References {
		refs[name] = h
	}
	if ar.Head != nil {
		refs["HEAD"] = *ar.Head
	}
	return refs
}

func (r *Remote) isHTTP() bool {
	return r.u != nil && (r.u.Scheme == "http" || r.u.Scheme == "https")
}

// baseURL is the HTTP repository URL without userinfo and trailing slash.
func (r *Remote) baseURL() string {
	u, _ := url.Parse(r.url)
	u.User = nil
	return strings.TrimSuffix(u.String(), "/")
}

func (r *Remote) authorize(req *http.Request) {
	if a, ok := r.auth.(githttp.AuthMethod); ok {
		a.SetAuth(req)
		return
	}
	if u, _ := url.Parse(r.url); u != nil && u.User != nil {
		pw, _ := u.User.Password()
		req.SetBasicAuth(u.User.Username(), pw)
	}
}

// RefUpdate is one ref a push moves: from Old (zero: the ref must not exist)
// to New (zero: delete). Old is checked by the server atomically.
type RefUpdate struct {
	Name string
	Old  plumbing.Hash
	New  plumbing.Hash
}

// RefConflictError reports a ref whose value was not the expected one: a
// concurrent release (or status writer) won the race. Actual is zero when
// the ref does not exist (or could not be read back).
type RefConflictError struct {
	Ref      string
	Expected plumbing.Hash
	Actual   plumbing.Hash
}

func (e *RefConflictError) Error() string {
	return fmt.Sprintf("ref %s is at %s, expected %s: a concurrent release won the race (fetch and retry)", e.Ref, short(e.Actual), short(e.Expected))
}

func short(h plumbing.Hash) string {
	if h.IsZero() {
		return "nothing"
	}
	return h.String()[:12]
}

// PushRejectedError reports a ref update the server refused for another
// reason than a stale old value (hooks, permissions, unpack failure).
type PushRejectedError struct {
	Ref    string // empty for an unpack failure
	Status string // the server's words
}

func (e *PushRejectedError) Error() string {
	if e.Ref == "" {
		return "server could not unpack the pushed objects: " + e.Status
	}
	return fmt.Sprintf("server rejected %s: %s", e.Ref, e.Status)
}

var errPushDone = errors.New("push finished")

// PushResult says what a push did.
type PushResult struct {
	// Status is the server's per-ref status ("ok" or its reason).
	Status map[string]string
	// PackBytes is the size of the pack sent over the network (0 when
	// none was needed, and for directory remotes).
	PackBytes int64
}

// Push sends the objects of st and moves exactly the refs in updates, each
// compare-and-swap on its Old value. st must hold every object the new
// values need that the remote lacks (and may hold more). The pack is
// streamed into the server as it is written; if the advertisement already
// shows a different value for a ref, nothing is sent and a
// *RefConflictError is returned.
func (r *Remote) Push(ctx context.Context, updates []RefUpdate, st *ObjectStream) (*PushResult, error) {
	if len(updates) == 0 {
		return &PushResult{Status: map[string]string{}}, nil
	}
	for _, u := range updates {
		if err := checkRefName(u.Name); err != nil {
			return nil, fmt.Errorf("push to %s: %w", r, err)
		}
	}
	if st == nil {
		st = NewObjectStream(nil)
	}
	if r.dir != nil {
		return r.pushDir(ctx, updates, st)
	}

	c, err := r.conv(ctx, transport.ReceivePackServiceName, false)
	if err != nil {
		return nil, fmt.Errorf("push to %s: %w", r, err)
	}
	defer c.Close()
	h, err := c.hello()
	if err != nil {
		return nil, fmt.Errorf("push to %s: %w", r, err)
	}
	current := h.refs()
	caps := h.caps()
	for _, u := range updates {
		if current[u.Name] != u.Old {
			return nil, fmt.Errorf("push to %s: %w", r, &RefConflictError{Ref: u.Name, Expected: u.Old, Actual: current[u.Name]})
		}
	}

	req := packp.NewReferenceUpdateRequestFromCapabilities(caps)
	if !caps.Supports(capability.ReportStatus) {
		return nil, fmt.Errorf("push to %s: server does not support report-status", r)
	}
	if caps.Supports(capability.Sideband64k) {
		req.Capabilities.Set(capability.Sideband64k)
	}
	if caps.Supports(capability.Atomic) && len(updates) > 1 {
		req.Capabilities.Set(capability.Atomic)
	}
	needPack := false
	for _, u := range updates {
		req.Commands = append(req.Commands, &packp.Command{Name: plumbing.ReferenceName(u.Name), Old: u.Old, New: u.New})
		if !u.New.IsZero() {
			needPack = true
		}
	}

	res := &PushResult{Status: map[string]string{}}
	var packErr chan error
	var counter *countingReader
	var pr *io.PipeReader
	if needPack {
		var pw *io.PipeWriter
		pr, pw = io.Pipe()
		counter = &countingReader{r: pr}
		packErr = make(chan error, 1)
		go func() {
			_, _, err := WritePack(ctx, pw, st)
			pw.CloseWithError(err)
			packErr <- err
		}()
		defer pr.Close()
		req.Packfile = io.NopCloser(counter)
	}

	var report *packp.ReportStatus
	if r.isHTTP() {
		report, err = r.httpReceivePack(ctx, req)
	} else {
		report, err = c.(sessionConv).s.receivePack(req)
	}
	if packErr != nil {
		// Unblock a writer the server stopped reading; a real pack error
		// (content not matching its declaration) explains the rest.
		pr.CloseWithError(errPushDone)
		if perr := <-packErr; perr != nil && !errors.Is(perr, errPushDone) {
			return nil, fmt.Errorf("push to %s: %w", r, perr)
		}
		res.PackBytes = counter.n
	}
	if report == nil {
		if err == nil {
			err = errors.New("no report from server")
		}
		return nil, fmt.Errorf("push to %s: %w", r, err)
	}
	if report.UnpackStatus != "ok" {
		return res, fmt.Errorf("push to %s: %w", r, &PushRejectedError{Status: report.UnpackStatus})
	}
	for _, cs := range report.CommandStatuses {
		res.Status[cs.ReferenceName.String()] = cs.Status
	}
	return res, r.rejected(ctx, updates, res.Status)
}

// rejected turns refused updates into errors: a stale old value (the ref
// moved since the advertisement) is a *RefConflictError.
func (r *Remote) rejected(ctx context.Context, updates []RefUpdate, status map[string]string) error {
	var errs []error
	var after map[string]plumbing.Hash
	for _, u := range updates {
		st, ok := status[u.Name]
		if ok && st == "ok" {
			continue
		}
		if !ok {
			st = "no status reported"
		}
		if after == nil {
			after, _ = r.Refs(ctx)
		}
		if after != nil && after[u.Name] != u.Old && after[u.Name] != u.New {
			errs = append(errs, &RefConflictError{Ref: u.Name, Expected: u.Old, Actual: after[u.Name]})
			continue
		}
		errs = append(errs, &PushRejectedError{Ref: u.Name, Status: st})
	}
	if len(errs) > 0 {
		return fmt.Errorf("push to %s: %w", r, errors.Join(errs...))
	}
	return nil
}

// httpReceivePack POSTs the request with the pack streamed as a chunked
// body: go-git's HTTP transport would buffer all of it in memory first.
func (r *Remote) httpReceivePack(ctx context.Context, upd *packp.ReferenceUpdateRequest) (*packp.ReportStatus, error) {
	body, w := io.Pipe()
	go func() { w.CloseWithError(upd.Encode(w)) }()
	defer body.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.baseURL()+"/git-receive-pack", body)
	if err != nil {
		return nil, err
	}
	r.authorize(req)
	req.Header.Set("Content-Type", "application/x-git-receive-pack-request")
	req.Header.Set("Accept", "application/x-git-receive-pack-result")
	res, err := r.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST git-receive-pack: %s", res.Status)
	}
	var rd io.Reader = &limitedReader{r: res.Body, left: maxAdvertisement, what: "push report"}
	if upd.Capabilities.Supports(capability.Sideband64k) {
		rd = sideband.NewDemuxer(sideband.Sideband64k, rd)
	}
	report := packp.NewReportStatus()
	if err := report.Decode(rd); err != nil {
		return nil, fmt.Errorf("decode push report: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	return report, nil
}

// receivePack sends a push request with its pack streamed, and reads the
// server's report within a bound.
func (s *session) receivePack(upd *packp.ReferenceUpdateRequest) (*packp.ReportStatus, error) {
	if err := upd.Encode(s.w); err != nil {
		return nil, s.fail(err)
	}
	s.pkt.budget(maxAdvertisement, "push report", nil)
	var rd io.Reader = pktRaw{s.pkt}
	if upd.Capabilities.Supports(capability.Sideband64k) {
		rd = &sidebandReader{p: s.pkt}
	}
	report := packp.NewReportStatus()
	if err := report.Decode(rd); err != nil {
		return nil, s.fail(fmt.Errorf("decode push report: %w", err))
	}
	// The sideband stream's own end (a flush), within the budget.
	io.Copy(io.Discard, rd)
	return report, nil
}

// pushDir writes the pack into the directory repository, then moves each
// ref with git's lock protocol.
func (r *Remote) pushDir(ctx context.Context, updates []RefUpdate, st *ObjectStream) (*PushResult, error) {
	for _, u := range updates {
		cur, err := r.dir.readRef(u.Name)
		if err != nil {
			return nil, fmt.Errorf("push to %s: %w", r, err)
		}
		if cur != u.Old {
			return nil, fmt.Errorf("push to %s: %w", r, &RefConflictError{Ref: u.Name, Expected: u.Old, Actual: cur})
		}
	}
	n, err := r.dir.write(ctx, st)
	if err != nil {
		return nil, fmt.Errorf("push to %s: %w", r, err)
	}
	res := &PushResult{Status: map[string]string{}, PackBytes: n}
	var errs []error
	for _, u := range updates {
		if err := r.dir.SetRef(u.Name, u.Old, u.New); err != nil {
			res.Status[u.Name] = err.Error()
			errs = append(errs, err)
			continue
		}
		res.Status[u.Name] = "ok"
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("push to %s: %w", r, errors.Join(errs...))
	}
	return res, nil
}

// FetchRequest says what Fetch brings into a Store.
type FetchRequest struct {
	// Refs are "src" or "src:dst" ref names (no patterns), e.g.
	// "refs/heads/releases:refs/remotes/origin/releases" or
	// "refs/tags/pullship/images/<hex>". A missing src is an error. A dst
	// is set (unconditionally) in the store after the objects are in.
	Refs []string
	// Haves are commits the store already has (e.g. older image tags), so
	// the server sends only what is new.
	Haves []plumbing.Hash
	// MaxPackBytes bounds the pack the server may send (0: 4 GiB).
	MaxPackBytes int64
	// MaxInflatedBytes bounds the sum of the inflated sizes its entries
	// declare (0: 16 × MaxPackBytes), so a zlib bomb costs bounded CPU.
	MaxInflatedBytes int64
	// MaxObjects bounds the objects the pack may hold (0: one per 256
	// bytes of MaxPackBytes, at least 4096): each costs 40 bytes of memory
	// while the pack is indexed.
	MaxObjects int
	// Live, if set, makes each object of the pack readable as it arrives
	// (the caller calls Live.Finish once Fetch returns).
	Live *LivePack
	// Precompressed names objects whose content is compressed already
	// (zstd chunk blobs): copied from a directory remote, they are stored
	// as they are, not deflated again. A git server's pack is stored as
	// it comes.
	Precompressed map[plumbing.Hash]bool
}

// ErrPackTooLarge reports a fetch response beyond FetchRequest.MaxPackBytes.
var ErrPackTooLarge = errors.New("pack exceeds the size limit")

// Fetch brings the objects of the requested refs into local (no shallow, no
// other tags) and returns the fetched refs' values. Objects already in local
// are not requested.
//
// Bounded: the pack size (MaxPackBytes; for a directory remote, the total
// object size, which the pack writer enforces), the inflated sizes its
// entries declare (MaxInflatedBytes; each entry must inflate to exactly its
// declared size), the object count (MaxObjects), the HTTP ref
// advertisement. Entries are streamed, never held whole; deltas (from a
// server that repacked) are resolved afterwards from the spooled pack with
// the bounds of resolveDeltas. Callers check sizes against the signed
// manifest before reading through OpenBlob.
func (r *Remote) Fetch(ctx context.Context, local *Store, fr FetchRequest) (map[string]plumbing.Hash, error) {
	type spec struct{ src, dst string }
	var specs []spec
	for _, s := range fr.Refs {
		src, dst, _ := strings.Cut(s, ":")
		if err := checkRefName(src); err != nil {
			return nil, fmt.Errorf("fetch from %s: %w", r, err)
		}
		if dst != "" {
			if err := checkRefName(dst); err != nil {
				return nil, fmt.Errorf("fetch from %s: %w", r, err)
			}
		}
		specs = append(specs, spec{src, dst})
	}
	lim := fetchLimits(fr.MaxPackBytes, fr.MaxInflatedBytes, fr.MaxObjects)
	limit := lim.pack
	if err := local.checkRoom(limit); err != nil {
		return nil, fmt.Errorf("fetch from %s: %w", r, err)
	}
	var srcs []string
	for _, s := range specs {
		srcs = append(srcs, s.src)
	}

	// wanted resolves the specs against the remote's refs.
	got := make(map[string]plumbing.Hash)
	wanted := func(remoteRefs map[string]plumbing.Hash) ([]plumbing.Hash, error) {
		var wants []plumbing.Hash
		seen := map[plumbing.Hash]bool{}
		for _, s := range specs {
			h, ok := remoteRefs[s.src]
			if !ok {
				return nil, fmt.Errorf("fetch %s from %s: %w", s.src, r, ErrNotFound)
			}
			got[s.src] = h
			if !seen[h] && !local.HasObject(h) {
				seen[h] = true
				wants = append(wants, h)
			}
		}
		return wants, nil
	}

	if r.dir != nil {
		r.dir.reload()
		remoteRefs, err := r.dir.Refs()
		if err != nil {
			return nil, fmt.Errorf("fetch from %s: %w", r, err)
		}
		wants, err := wanted(remoteRefs)
		if err != nil {
			return nil, err
		}
		if len(wants) > 0 {
			if err := r.copyFromDir(ctx, local, wants, limit, fr.Precompressed); err != nil {
				return nil, fmt.Errorf("fetch from %s: %w", r, err)
			}
		}
	} else {
		var notFound error
		// The HTTP response of the pack is bounded by the pack's limit.
		err := r.uploadPack(withBodyLimit(ctx, limit+maxUploadPackPrelude), func(c conv, h *hello) error {
			remoteRefs := h.refs()
			if h.v2 != nil {
				var err error
				if remoteRefs, err = lsRefsV2(c, h, srcs); err != nil {
					return err
				}
			}
			wants, err := wanted(remoteRefs)
			if err != nil {
				notFound = err
				return nil
			}
			if len(wants) == 0 {
				return nil
			}
			err = r.fetchPack(c, h, local, wants, fr.Haves, limit, lim, fr.Live)
			if cerr := ctx.Err(); err != nil && cerr != nil {
				err = cerr
			} else if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrStalled) {
				err = fmt.Errorf("%w: %w", ErrConnectionCut, err)
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("fetch from %s: %w", r, err)
		}
		if notFound != nil {
			return nil, notFound
		}
	}
	for _, s := range specs {
		if s.dst == "" {
			continue
		}
		if err := local.setRef(s.dst, nil, got[s.src]); err != nil {
			return nil, fmt.Errorf("fetch from %s: %w", r, err)
		}
	}
	return got, nil
}

func (r *Remote) fetchPack(c conv, h *hello, local *Store, wants, haves []plumbing.Hash, limit int64, lim packLimits, live *LivePack) error {
	var have []plumbing.Hash
	for _, h := range haves {
		if h.IsZero() || !local.HasObject(h) {
			continue
		}
		have = append(have, h)
		// The commit's root tree too: git leaves out the objects under a
		// tree named as "have", while a commit's own objects are left out
		// only when it is a parent of what is wanted. Image tags share no
		// history, so without their trees a server sends an update's
		// every chunk again.
		if tree, err := local.commitTree(h); err == nil {
			have = append(have, tree)
		}
	}
	lim.wants = wants
	if h.v2 != nil {
		p, err := c.request(fetchRequestV2(h, wants, have))
		if err != nil {
			return err
		}
		p.budget(limit+maxUploadPackPrelude, "upload-pack response", ErrPackTooLarge)
		return receiveV2Pack(p, local, lim, live, local.installSpooled)
	}
	req, sideband := uploadRequestV0(h.caps(), wants, have, nil, 0)
	p, err := c.request(req)
	if err != nil {
		return err
	}
	return receiveV0Pack(c, p, sideband, local, limit, lim, live)
}

// receiveV0Pack reads the acknowledgements of a v0 request from p, then
// receives the pack that follows into local.
func receiveV0Pack(c conv, p *pktReader, sideband bool, local *Store, limit int64, lim packLimits, live *LivePack) error {
	pack, err := packAfterAcksV0(c, p, sideband, limit)
	if err != nil {
		return err
	}
	if err := local.receivePack(pack, lim, live); err != nil {
		return err
	}
	if sideband {
		// The stream's end (a flush) follows the pack, and nothing else.
		var rest [1]byte
		if n, err := io.ReadFull(pack, rest[:]); n > 0 {
			return fmt.Errorf("%w: data after the pack", ErrBadPack)
		} else if err != io.EOF {
			return err
		}
	}
	return nil
}

// responseBuffer is the size of the reads from an upload-pack response.
const responseBuffer = 256 << 10

// limitedReader fails (rather than silently truncating) past left bytes.
type limitedReader struct {
	r    io.Reader
	left int64
	what string
	err  error
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		var one [1]byte
		n, err := io.ReadFull(l.r, one[:])
		if n > 0 {
			if l.err != nil {
				return 0, l.err
			}
			return 0, fmt.Errorf("%s exceeds the size limit", l.what)
		}
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		return 0, err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
