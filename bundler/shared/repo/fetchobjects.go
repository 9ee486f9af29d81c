package repo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// Fetching objects by id: an image tag is a chain of segment commits
// whose trees an agent can compute from the signed index, so it asks for
// one segment's tree at a time, keeps every segment that arrived whole and
// after a cut asks only for the segments still missing. Git's protocol v0
// lets a client want only advertised refs; protocol v2 (git 2.18 and
// later, what git daemon, git http-backend, GitHub, GitLab and Gitea
// speak without configuration) lets it want any object the server has.

// ErrNoObjectWants reports a remote that cannot serve objects by id: a
// server that answers in protocol v0 (an old git, or an ssh:// server
// whose sshd drops GIT_PROTOCOL: OpenSSH passes it on only with
// "AcceptEnv GIT_PROTOCOL"). Callers fetch refs instead.
var ErrNoObjectWants = errors.New("server does not serve objects by id (git protocol v2)")

// ObjectFetcher fetches objects by id from one remote ([Remote.Objects]),
// reusing its connection from one fetch to the next (git:// and ssh://
// keep one protocol v2 session; smart HTTP posts on the client's
// keep-alive connections). Use it from one goroutine at a time; Close it
// when done.
type ObjectFetcher struct {
	r      *Remote
	ctx    context.Context
	s      *session // git://, ssh://: nil until opened and after a failure
	httpV2 bool     // the HTTP server answered in protocol v2
}

// Objects returns a fetcher of objects by id from r; ctx bounds its
// connection's life.
func (r *Remote) Objects(ctx context.Context) *ObjectFetcher { return &ObjectFetcher{r: r, ctx: ctx} }

// Close closes the fetcher's connection.
func (f *ObjectFetcher) Close() error {
	if f.s == nil {
		return nil
	}
	err := f.s.Close()
	f.s = nil
	return err
}

// ObjectsRequest says what [ObjectFetcher.Fetch] brings into a Store.
type ObjectsRequest struct {
	// Wants are object ids (an image segment's tree); the pack must hold
	// them and everything below them the store lacks, and nothing else.
	Wants []plumbing.Hash
	// Haves are objects the store holds (with everything below them), so
	// the server leaves them out; those the store lacks are not named.
	Haves []plumbing.Hash
	// MaxPackBytes bounds the pack (required: from the signed index).
	MaxPackBytes int64
	// MaxInflatedBytes bounds the inflated sizes the entries declare (0:
	// 16 × MaxPackBytes); MaxObjects the entry count (0: as for Fetch).
	MaxInflatedBytes int64
	MaxObjects       int
	// Live and Precompressed are as in [FetchRequest].
	Live          *LivePack
	Precompressed map[plumbing.Hash]bool
	// StoreLock, if set, is held around every use of the store, so that
	// fetchers on several connections can fill one store at once: each
	// receives and checks its pack unlocked, into a spool file of its own,
	// and installs it under the lock. Whoever else uses the store
	// meanwhile holds the lock too.
	StoreLock sync.Locker
}

// maxCapabilities bounds a protocol v2 capability advertisement.
const maxCapabilities = 64 << 10

// Fetch brings req.Wants into local with the same checks and bounds as
// [Remote.Fetch]: one pack, indexed as it streams, installed only when
// complete and holding exactly what was wanted. A cut connection or a
// stall is ErrConnectionCut (the next Fetch connects again); a remote that
// cannot serve objects by id is ErrNoObjectWants; a wanted object the
// server lacks is ErrNotFound.
func (f *ObjectFetcher) Fetch(ctx context.Context, local *Store, req ObjectsRequest) error {
	if err := f.fetch(ctx, local, req); err != nil {
		return fmt.Errorf("fetch objects from %s: %w", f.r, err)
	}
	return nil
}

func (f *ObjectFetcher) fetch(ctx context.Context, local *Store, req ObjectsRequest) error {
	if req.MaxPackBytes <= 0 {
		return errors.New("no pack size limit")
	}
	lock := req.StoreLock
	if lock == nil {
		lock = noLock{}
	}
	lock.Lock()
	locked := true
	defer func() {
		if locked {
			lock.Unlock()
		}
	}()
	var wants, haves []plumbing.Hash
	for _, w := range req.Wants {
		if !local.HasObject(w) {
			wants = append(wants, w)
		}
	}
	for _, h := range req.Haves {
		if !h.IsZero() && local.HasObject(h) {
			haves = append(haves, h)
		}
	}
	if len(wants) == 0 {
		return nil
	}
	if err := local.checkRoom(req.MaxPackBytes); err != nil {
		return err
	}
	if f.r.dir != nil {
		f.r.dir.reload()
		for _, w := range wants {
			if !f.r.dir.HasObject(w) {
				return fmt.Errorf("object %s: %w", w, ErrNotFound)
			}
		}
		return f.r.copyFromDir(ctx, local, wants, req.MaxPackBytes, req.Precompressed)
	}
	lock.Unlock()
	locked = false
	install := func(sp *spooledPack) error {
		lock.Lock()
		defer lock.Unlock()
		return local.installSpooled(sp)
	}
	lim := fetchLimits(req.MaxPackBytes, req.MaxInflatedBytes, req.MaxObjects)
	lim.wants = wants
	w := fetchCommand(wants, haves)
	limit := req.MaxPackBytes + maxUploadPackPrelude
	var p *pktReader
	if f.r.isHTTP() {
		res, err := f.httpCommand(ctx, w, limit)
		if err != nil {
			return err
		}
		defer drainClose(res)
		p = newPktReader(bufio.NewReaderSize(res.Body, responseBuffer))
	} else {
		if f.s == nil {
			s, err := f.r.openSession(f.ctx, "git-upload-pack", true)
			if err != nil {
				return err
			}
			s.pkt.budget(maxCapabilities, "capability advertisement", nil)
			if err := readCapabilities(s.pkt); err != nil {
				s.Close()
				return s.fail(err)
			}
			f.s = s
		}
		if err := f.s.send(w); err != nil {
			f.Close()
			return cut(err)
		}
		p = f.s.pkt
	}
	p.budget(limit, "upload-pack response", ErrPackTooLarge)
	err := receiveV2Pack(p, local, lim, req.Live, install)
	if err != nil && f.s != nil {
		err = f.s.fail(err)
		f.Close()
	}
	if err == nil && f.s != nil {
		// The reply is in: the session waits for the next request, as
		// long as it takes, without counting as stalled.
		f.s.conn.rest()
	}
	return cut(err)
}

// cut marks a stream that ended early, or stalled, as ErrConnectionCut.
func cut(err error) error {
	if err != nil && !errors.Is(err, ErrConnectionCut) && (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrStalled)) {
		return fmt.Errorf("%w: %w", ErrConnectionCut, err)
	}
	return err
}

// fetchCommand is a protocol v2 fetch request: the pack at once ("done",
// no negotiation rounds), not thin, without progress messages.
func fetchCommand(wants, haves []plumbing.Hash) *pktWriter {
	return fetchRequestV2(&hello{}, wants, haves)
}

// httpCommand posts a protocol v2 request to git-upload-pack (asking
// info/refs first, once, whether the server speaks v2) and returns the
// response, its body bounded by limit.
func (f *ObjectFetcher) httpCommand(ctx context.Context, w *pktWriter, limit int64) (*http.Response, error) {
	r := f.r
	if caps := r.httpV2.Load(); caps != nil {
		// A poll learned the server's capabilities already.
		_, fetch := (*caps)["fetch"]
		f.httpV2 = f.httpV2 || fetch
	}
	if !f.httpV2 {
		res, err := r.httpGetInfoRefs(ctx, transport.UploadPackServiceName, true)
		if err != nil {
			return nil, cut(err)
		}
		p := newPktReader(res.Body)
		p.budget(maxCapabilities, "capability advertisement", nil)
		err = readCapabilities(p)
		drainClose(res)
		if err != nil {
			return nil, cut(err)
		}
	}
	f.httpV2 = true
	res, err := r.httpPost(withBodyLimit(ctx, limit), transport.UploadPackServiceName, w.b, true)
	var re *httpReplyError
	if err != nil && !errors.As(err, &re) {
		return nil, fmt.Errorf("%w: %w", ErrConnectionCut, err)
	}
	return res, err
}

// readCapabilities reads a protocol v2 capability advertisement (after
// HTTP's "# service=" header, if any) and checks the server offers fetch.
// A protocol v0 ref advertisement is ErrNoObjectWants.
func readCapabilities(p *pktReader) error {
	kind, data, err := p.next()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return err
	}
	if kind == pktData && strings.HasPrefix(string(data), "# service=") {
		if kind, _, err = p.next(); err != nil || kind != pktFlush {
			return fmt.Errorf("%w: no flush after the service line (%v)", errProtocol, err)
		}
		if kind, data, err = p.next(); err != nil {
			return err
		}
	}
	if kind != pktData || strings.TrimSuffix(string(data), "\n") != "version 2" {
		return ErrNoObjectWants
	}
	fetch := false
	for {
		kind, data, err := p.next()
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return err
		}
		if kind == pktFlush {
			break
		}
		if kind != pktData {
			return fmt.Errorf("%w: unexpected %s packet in the capability advertisement", errProtocol, kindName(kind))
		}
		c := strings.TrimSuffix(string(data), "\n")
		if c == "fetch" || strings.HasPrefix(c, "fetch=") {
			fetch = true
		}
		if f, ok := strings.CutPrefix(c, "object-format="); ok && f != "sha1" {
			return fmt.Errorf("repository uses object format %s: only sha1 repositories are supported", serverText([]byte(f)))
		}
	}
	if !fetch {
		return ErrNoObjectWants
	}
	return nil
}

// receiveV2Pack reads a protocol v2 fetch response (sections up to
// "packfile", then the pack in sideband channel 1 up to a flush) into a
// spool of local and installs it.
func receiveV2Pack(p *pktReader, local *Store, lim packLimits, live *LivePack, install func(*spooledPack) error) error {
	d, err := packAfterSectionsV2(p)
	var rerr *RemoteError
	if errors.As(err, &rerr) && strings.Contains(rerr.Message, "not our ref") {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if err != nil {
		return err
	}
	sp, err := local.spoolPack(d, lim, live)
	if err != nil {
		return err
	}
	// The pack is whole: what follows must be the flush that ends it.
	var rest [1]byte
	if n, err := io.ReadFull(d, rest[:]); n > 0 || err != io.EOF {
		sp.abort()
		if n > 0 {
			return fmt.Errorf("%w: data after the pack", ErrBadPack)
		}
		return err
	}
	return install(sp)
}

type noLock struct{}

func (noLock) Lock()   {}
func (noLock) Unlock() {}

// copyFromDir writes the objects below wants that local lacks, read from
// the directory remote, into local as one pack of at most limit bytes of
// objects.
func (r *Remote) copyFromDir(ctx context.Context, local *Store, wants []plumbing.Hash, limit int64, precompressed map[plumbing.Hash]bool) error {
	st := NewObjectStream(r.dir.openObject)
	st.serial = true
	var total int64
	err := r.dir.walk(wants, local.HasObject, func(o Object) { st.Add(o); total += o.Size })
	st.MarkPrecompressed(precompressed)
	if err == nil && total > limit {
		// The pack writer holds every object to its declared size.
		err = fmt.Errorf("%w: %d bytes of objects, limit %d", ErrPackTooLarge, total, limit)
	}
	if err == nil {
		// Their size as objects: what the pack takes, or more.
		err = local.checkFits(total + indexBytes(st.Len()))
	}
	if err == nil {
		err = local.Write(ctx, st)
	}
	return err
}

// IsDir reports whether r is a repository in a directory (no network).
func (r *Remote) IsDir() bool { return r.dir != nil }
