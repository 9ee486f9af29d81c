package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// A server that speaks only protocol v0 lets a client want nothing but ref
// tips, so a ref's history comes in one pack, and a cut loses all of it.
// Its shallow protocol (gitprotocol-pack(5), "deepen", which every
// upload-pack serves unless told otherwise) splits the history instead,
// as "git fetch --depth" and "--deepen" do: the client names its shallow
// commits and asks for the history to a depth, and the pack brings only
// the commits above that depth it lacks. Asked one depth after the other,
// each request's pack is a step of the history of its own.

// ErrNoDeepen reports a remote that cannot send a ref's history to a
// depth: a directory remote, or a server that does not advertise
// "shallow" (or answers in protocol v2 though asked for v0).
var ErrNoDeepen = errors.New("server does not fetch histories to a depth (shallow)")

// ErrRefMoved reports a ref the remote has at another commit than the one
// asked for.
var ErrRefMoved = errors.New("ref is not at the commit asked for")

// maxShallowLines bounds the "shallow" and "unshallow" lines a server
// sends before a pack fetched to a depth.
const maxShallowLines = 4096

// DeepenRequest asks for a ref's history to a depth.
type DeepenRequest struct {
	// Ref is the remote's ref, Tip the commit it must be at (otherwise
	// ErrRefMoved, and nothing is fetched).
	Ref string
	Tip plumbing.Hash
	// Depth counts the commits of the history asked for from Tip (1: Tip
	// alone), whatever the client holds.
	Depth int
	// Shallow are the client's shallow commits: those of the history it
	// holds whose parents it lacks. The server sends their parents' side
	// of the history, down to Depth.
	Shallow []plumbing.Hash
	// Top and Bottom are what the pack must hold: the history from Top
	// down to Bottom (the parents of its deepest commits), Bottom left out,
	// and nothing else, every object in it or in the store. A pack that is
	// not is refused and removed.
	Top    plumbing.Hash
	Bottom []plumbing.Hash
	// Haves are objects the client holds (commits, trees, blobs): the
	// server leaves them and what is below them out. Those local lacks are
	// skipped.
	Haves []plumbing.Hash
	// The bounds of the pack, as FetchRequest's.
	MaxPackBytes, MaxInflatedBytes int64
	MaxObjects                     int
	// Live, if set, is told of each object as it arrives (see LivePack).
	Live *LivePack
}

// FetchDeepen fetches a step of Ref's history into local, one request in
// protocol v0: Ref at Tip wanted, to Depth, from the Shallow commits
// local holds. The pack is indexed as it streams and installed only when
// complete and what Top and Bottom say. A cut connection or a stall is
// ErrConnectionCut; a remote that cannot fetch to a depth is ErrNoDeepen;
// Ref missing on the remote is ErrNotFound, at another commit ErrRefMoved.
func (r *Remote) FetchDeepen(ctx context.Context, local *Store, req DeepenRequest) error {
	if r.dir != nil {
		return ErrNoDeepen
	}
	if err := checkRefName(req.Ref); err != nil {
		return fmt.Errorf("fetch from %s: %w", r, err)
	}
	if req.Depth <= 0 || req.Top.IsZero() {
		return fmt.Errorf("fetch %s from %s: no depth or no commit asked for", req.Ref, r)
	}
	lim := fetchLimits(req.MaxPackBytes, req.MaxInflatedBytes, req.MaxObjects)
	lim.wants, lim.bottom = []plumbing.Hash{req.Top}, req.Bottom
	limit := lim.pack
	if err := local.checkRoom(limit); err != nil {
		return fmt.Errorf("fetch from %s: %w", r, err)
	}
	// Protocol v0 asked for: a v2 server answers in v2 only when asked.
	ctx = withBodyLimit(ctx, limit+maxUploadPackPrelude)
	c, err := r.conv(ctx, transport.UploadPackServiceName, false)
	if err != nil {
		return fmt.Errorf("fetch from %s: %w", r, err)
	}
	defer c.Close()
	err = r.deepen(c, local, req, limit, lim)
	if cerr := ctx.Err(); err != nil && cerr != nil {
		err = cerr
	} else if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrStalled) {
		err = fmt.Errorf("%w: %w", ErrConnectionCut, err)
	}
	if err != nil {
		return fmt.Errorf("fetch %s from %s: %w", req.Ref, r, err)
	}
	return nil
}

func (r *Remote) deepen(c conv, local *Store, req DeepenRequest, limit int64, lim packLimits) error {
	h, err := c.hello()
	if err != nil {
		return err
	}
	if h.v2 != nil || !h.caps().Supports(capability.Shallow) {
		return ErrNoDeepen
	}
	tip, ok := h.refs()[req.Ref]
	switch {
	case !ok:
		return ErrNotFound
	case tip != req.Tip:
		return fmt.Errorf("%w: the remote has %s, not %s", ErrRefMoved, short(tip), short(req.Tip))
	}
	var haves []plumbing.Hash
	for _, id := range req.Haves {
		if !id.IsZero() && local.HasObject(id) {
			haves = append(haves, id)
		}
	}
	w, sideband := uploadRequestV0(h.caps(), []plumbing.Hash{tip}, haves, req.Shallow, req.Depth)
	p, err := c.request(w)
	if err != nil {
		return err
	}
	if err := readShallowUpdate(p, req.Shallow); err != nil {
		return err
	}
	return receiveV0Pack(c, p, sideband, local, limit, lim, req.Live)
}

// readShallowUpdate reads the "shallow" and "unshallow" lines a server
// answers a request to a depth with, up to their flush. They say where the
// history sent stops, which the pack's check (DeepenRequest.Bottom) holds
// the pack to; a server may unshallow only what the client named as
// shallow.
func readShallowUpdate(p *pktReader, shallow []plumbing.Hash) error {
	for range maxShallowLines {
		kind, data, err := p.next()
		if err != nil {
			return err
		}
		if kind == pktFlush {
			return nil
		}
		line := strings.TrimSuffix(string(data), "\n")
		verb, hex, _ := strings.Cut(line, " ")
		id, ok := parseHash(hex)
		switch {
		case kind != pktData || !ok:
			return fmt.Errorf("%w: unexpected %q in the shallow update", errProtocol, serverText(data))
		case verb == "unshallow" && !slices.Contains(shallow, id):
			return fmt.Errorf("%w: the server unshallows %s, which was not shallow", errProtocol, short(id))
		case verb != "shallow" && verb != "unshallow":
			return fmt.Errorf("%w: unexpected %q in the shallow update", errProtocol, serverText(data))
		}
	}
	return fmt.Errorf("%w: too many shallow lines", errProtocol)
}
