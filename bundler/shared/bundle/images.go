package bundle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/pullship/pullship/bundler/shared/chunks"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// ImagePackLimit bounds the pack that brings an image tag: the chunk blobs
// the signed index declares (their stored sizes), plus git's overhead (the
// tree, the commit, entry headers).
func ImagePackLimit(idx *schema.ImageIndex) int64 {
	return idx.StoredSize() + int64(len(idx.Entries))*1024 + 1<<20
}

// EncodedChunks returns the ids of idx's zstd chunk blobs: content that is
// compressed already, which packs store as it is.
func EncodedChunks(idx *schema.ImageIndex) map[plumbing.Hash]bool {
	ids := map[plumbing.Hash]bool{}
	for _, c := range NewChunkSet(idx).List() {
		if c.Encoded() {
			ids[plumbing.NewHash(c.Blob)] = true
		}
	}
	return ids
}

// FetchImage brings the chunks of idx into st from r, unless st has them
// all already. Every read is bounded by what the signed index declares.
// With live set, each chunk is readable through it as soon as it arrives
// (see [LiveChunks]); the caller calls live.Finish with FetchImage's
// result.
//
// The image's chunks are fetched a segment ([Segments]) at a time, each
// segment's missing chunk blobs asked for by id (protocol v2) in a request
// of their own, over several connections at once: a segment that arrived
// is kept whatever happens next. After a cut the segment is asked for
// again, as long as the cuts do not come one after another without a
// segment arriving; a later call (the next poll, the next remote) starts
// from what is missing too. The tag's trees and commits follow from the
// index and are written locally, so what the tag says on the server does
// not matter while the server holds the chunks. A remote that cannot serve
// objects by id (protocol v0 only) gets the tag's history asked for a
// segment at a time instead (see fetchDeepening), a cut costing a segment
// there too. One that cannot do that either (an old-format tag, no
// shallow support) or lacks a chunk gets the tag asked for in one request,
// as before segments existed, the chunks already held named as haves.
func FetchImage(ctx context.Context, r *repo.Remote, st *repo.Store, idx *schema.ImageIndex, live *repo.LivePack) error {
	return FetchImageWith(ctx, r, st, idx, live, FetchOptions{})
}

// DefaultConnections is how many connections an image fetch uses at once
// unless told otherwise (FetchOptions.Connections), chosen by measurement:
// see docs/operations.md, "Image fetches over long links".
const DefaultConnections = 8

// FetchOptions tune [FetchImageWith].
type FetchOptions struct {
	// Connections is how many segments are fetched at once, each over a
	// connection of its own (0: DefaultConnections). A directory remote
	// uses one.
	Connections int
	// OnResume, if set, is told of each resume: a request that continues
	// the fetch after a cut, asking again only for what is missing. It is
	// called from the fetch's goroutines, one call at a time.
	OnResume func(Resume)
	// After is the cut that ended an earlier fetch of the image (from the
	// previous remote, or at the previous poll): the fetch continues it,
	// and its first request is a resume. Nil: the fetch starts afresh.
	After error
}

// A Resume is an image fetch asking again, after a cut, for what is still
// missing: what arrived before the cut is kept.
type Resume struct {
	Image string
	// Segment is the first segment asked for again (from 1), of Segments.
	Segment, Segments int
	// Kept is the stored bytes of the image's chunks the store holds (what
	// arrived before the cut, and the chunks held before the fetch began);
	// Missing what is still to come.
	Kept, Missing int64
	// Cut is the network error that ended the try before.
	Cut error
}

// FetchImageWith is [FetchImage] with options.
func FetchImageWith(ctx context.Context, r *repo.Remote, st *repo.Store, idx *schema.ImageIndex, live *repo.LivePack, o FetchOptions) error {
	missing := false
	for _, c := range NewChunkSet(idx).List() {
		if !st.HasObject(plumbing.NewHash(c.Blob)) {
			missing = true
			break
		}
	}
	if !missing {
		return nil
	}
	segs, err := Segments(idx)
	if err != nil {
		return err
	}
	if o.After != nil && o.OnResume != nil {
		first := 0
		for k, s := range segs {
			if !segmentHeld(st, s) {
				first = k
				break
			}
		}
		kept, missing := heldBytes(st, idx)
		o.OnResume(Resume{Image: idx.Name, Segment: first + 1, Segments: len(segs), Kept: kept, Missing: missing, Cut: o.After})
	}
	tag := ImageTag(idx.Digest)
	conns := o.Connections
	if conns <= 0 {
		conns = DefaultConnections
	}
	if r.IsDir() {
		conns = 1
	}
	err = fetchSegments(ctx, r, st, idx, segs, live, conns, o.OnResume)
	if errors.Is(err, repo.ErrNoObjectWants) {
		err = fetchDeepening(ctx, r, st, idx, segs, live, o.OnResume)
		if errors.Is(err, repo.ErrNoDeepen) || errors.Is(err, repo.ErrRefMoved) {
			err = repo.ErrNoObjectWants // the whole tag, as the server has it
		}
	}
	if err == nil {
		return nil
	}
	if !errors.Is(err, repo.ErrNoObjectWants) && !errors.Is(err, repo.ErrNotFound) {
		return fmt.Errorf("fetch image %s: %w", idx.Name, err)
	}

	// The whole tag in one request.
	var haves []plumbing.Hash
	if refs, err := st.Refs(); err == nil {
		for name, id := range refs {
			if strings.HasPrefix(name, ImageTagPrefix) {
				haves = append(haves, id)
			}
		}
	}
	haves = append(haves, heldImageTrees(st)...)
	// The chunks an earlier try brought: git leaves out an object named as
	// "have", whatever its type.
	for _, c := range NewChunkSet(idx).List() {
		if id := plumbing.NewHash(c.Blob); len(haves) < maxHaves && st.HasObject(id) {
			haves = append(haves, id)
		}
	}
	limit := ImagePackLimit(idx)
	if _, err := r.Fetch(ctx, st, repo.FetchRequest{Refs: []string{tag + ":" + tag}, Haves: haves, MaxPackBytes: limit,
		MaxInflatedBytes: limit, MaxObjects: imageTagObjects(idx, segs), Live: live, Precompressed: EncodedChunks(idx)}); err != nil {
		return fmt.Errorf("fetch image %s: %w", idx.Name, err)
	}
	return nil
}

// imageTagObjects bounds the objects of the pack that brings a whole image
// tag: its distinct chunk blobs, a tree and a commit per segment, and a few
// more. Without it the bound came from the pack size (one object per 256
// bytes: 4 million for a 1 GiB image), so a server could make the agent
// index millions of junk objects.
func imageTagObjects(idx *schema.ImageIndex, segs []Segment) int {
	return NewChunkSet(idx).Len() + 2*len(segs) + 16
}

// maxCutsInARow is how many tries in a row may end in a cut without
// bringing a segment before fetchSegments gives up on the remote.
const maxCutsInARow = 3

// fetchSegments brings the chunks of every segment of segs that st lacks,
// one request a segment (the missing chunks' blobs wanted by id: the pack
// carries exactly those), over up to conns connections at once (each takes
// the next segment missing, in stream order). Then it writes the segments'
// trees and commits, which the index determines, into st and sets the
// image tag there: they cost no request. The store is used under one
// lock: each connection receives and checks its pack unlocked and
// installs it under the lock.
func fetchSegments(ctx context.Context, r *repo.Remote, st *repo.Store, idx *schema.ImageIndex, segs []Segment, live *repo.LivePack, conns int, onResume func(Resume)) error {
	encoded := EncodedChunks(idx)
	type job struct {
		k      int
		blobs  []plumbing.Hash
		stored int64
	}
	var queue []job
	for k, s := range segs {
		if st.HasObject(s.Tree) {
			continue // written with all its chunks in
		}
		j := job{k: k}
		for _, c := range s.Chunks {
			if id := plumbing.NewHash(c.Blob); !st.HasObject(id) {
				j.blobs = append(j.blobs, id)
				j.stored += c.StoredSize()
			}
		}
		if len(j.blobs) > 0 {
			queue = append(queue, j)
		}
	}
	var (
		storeMu sync.Mutex
		mu      sync.Mutex // guards queue, cuts, failed
		cuts    int
		failed  error
	)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conns = max(1, min(conns, len(queue)))
	// Consecutive cuts, with no segment arriving in between, before the
	// remote is given up on: each connection may be cut once more.
	maxCuts := maxCutsInARow + conns - 1
	worker := func() {
		f := r.Objects(wctx)
		defer f.Close()
		for {
			mu.Lock()
			if failed != nil || len(queue) == 0 {
				mu.Unlock()
				return
			}
			j := queue[0]
			queue = queue[1:]
			mu.Unlock()
			limit := blobsPackLimit(j.stored, len(j.blobs))
			err := f.Fetch(wctx, st, repo.ObjectsRequest{Wants: j.blobs, MaxPackBytes: limit, MaxInflatedBytes: limit,
				MaxObjects: len(j.blobs) + 16, Live: live, Precompressed: encoded, StoreLock: &storeMu})
			mu.Lock()
			switch {
			case err == nil:
				cuts = 0
			case failed != nil:
			case IsNetworkError(err) && wctx.Err() == nil && cuts < maxCuts:
				cuts++
				queue = append([]job{j}, queue...) // first again: the stream needs it first
				if onResume != nil {
					storeMu.Lock()
					kept, missing := heldBytes(st, idx)
					storeMu.Unlock()
					onResume(Resume{Image: idx.Name, Segment: j.k + 1, Segments: len(segs), Kept: kept, Missing: missing, Cut: err})
				}
			default:
				failed = fmt.Errorf("segment %d of %d: %w", j.k+1, len(segs), err)
				cancel()
			}
			mu.Unlock()
		}
	}
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker()
		}()
	}
	wg.Wait()
	if failed != nil {
		return failed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return writeChain(ctx, st, idx, segs)
}

// fetchDeepening brings the segments of the image tag from a server that
// speaks only protocol v0, which lets a client want ref tips alone: the
// tag's history is asked for a depth at a time, as "git fetch --deepen"
// does, each request bringing the next segment whose chunks st lacks (and
// the commits and trees of the held ones before it), its pack installed
// only when complete and holding exactly those segments' commits. A cut
// costs that request; the next one continues from the segments held,
// which are the shallow end of the history the server is told of. The
// tag must be at the commit the index determines on the server
// (otherwise repo.ErrRefMoved: an old-format tag). Segments after the last
// one with a missing chunk cost no request: writeChain writes their trees
// and commits.
func fetchDeepening(ctx context.Context, r *repo.Remote, st *repo.Store, idx *schema.ImageIndex, segs []Segment, live *repo.LivePack, onResume func(Resume)) error {
	tag := ImageTag(idx.Digest)
	// low: the segments from the tag's commit on that st holds (a commit
	// is installed only with its tree and chunks).
	low := 0
	for low < len(segs) && st.HasObject(segs[low].Commit) {
		low++
	}
	cuts := 0
	for {
		end := low
		for end < len(segs) && segmentHeld(st, segs[end]) {
			end++
		}
		if end == len(segs) {
			break
		}
		// Segments low to end: the held segments' commits (the deepest
		// first: git acknowledges again a have that is the parent of an
		// earlier one) and the chunks held named as haves, so the pack
		// brings the commits and trees of low to end and end's missing
		// chunks.
		var haves, shallow, bottom []plumbing.Hash
		for k := low - 1; k >= 0; k-- {
			haves = append(haves, segs[k].Commit)
		}
		if low > 0 {
			shallow = []plumbing.Hash{segs[low-1].Commit}
		}
		if end+1 < len(segs) {
			bottom = []plumbing.Hash{segs[end+1].Commit}
		}
		var stored, overhead int64
		n := 0
		for _, s := range segs[low : end+1] {
			overhead += int64(len(s.TreeData) + len(s.CommitData))
			n += 2
			for _, c := range s.Chunks {
				if id := plumbing.NewHash(c.Blob); len(haves) < maxHaves && st.HasObject(id) {
					haves = append(haves, id)
				} else {
					stored += c.StoredSize()
					n++
				}
			}
		}
		limit := blobsPackLimit(stored+overhead, n)
		err := r.FetchDeepen(ctx, st, repo.DeepenRequest{Ref: tag, Tip: TagCommit(segs), Depth: end + 1, Shallow: shallow,
			Top: segs[low].Commit, Bottom: bottom, Haves: haves, MaxPackBytes: limit, MaxInflatedBytes: limit,
			MaxObjects: n + 16, Live: live})
		switch {
		case err == nil:
			low, cuts = end+1, 0
			continue
		case IsNetworkError(err) && ctx.Err() == nil && cuts < maxCutsInARow:
			cuts++
			if onResume != nil {
				kept, missing := heldBytes(st, idx)
				onResume(Resume{Image: idx.Name, Segment: end + 1, Segments: len(segs), Kept: kept, Missing: missing, Cut: err})
			}
			continue
		case errors.Is(err, repo.ErrNoDeepen) || errors.Is(err, repo.ErrRefMoved):
			return err
		}
		return fmt.Errorf("segment %d of %d: %w", end+1, len(segs), err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return writeChain(ctx, st, idx, segs)
}

// segmentHeld reports whether st holds every chunk of s.
func segmentHeld(st *repo.Store, s Segment) bool {
	for _, c := range s.Chunks {
		if !st.HasObject(plumbing.NewHash(c.Blob)) {
			return false
		}
	}
	return true
}

// heldBytes sums the stored sizes of the distinct chunks of idx that st
// holds (kept) and lacks (missing).
func heldBytes(st *repo.Store, idx *schema.ImageIndex) (kept, missing int64) {
	for _, c := range NewChunkSet(idx).List() {
		if st.HasObject(plumbing.NewHash(c.Blob)) {
			kept += c.StoredSize()
		} else {
			missing += c.StoredSize()
		}
	}
	return kept, missing
}

// writeChain writes the trees and commits of segs that st lacks into st
// (every chunk must be in it) and points the image tag at the chain.
func writeChain(ctx context.Context, st *repo.Store, idx *schema.ImageIndex, segs []Segment) error {
	objs := repo.NewObjectStream(nil)
	for _, s := range segs {
		for _, c := range s.Chunks {
			if !st.HasObject(plumbing.NewHash(c.Blob)) {
				return &ChunkError{Image: idx.Name, Chunk: c, Err: repo.ErrNotFound}
			}
		}
		if !st.HasObject(s.Tree) {
			objs.AddBytes(plumbing.TreeObject, s.TreeData)
		}
		if !st.HasObject(s.Commit) {
			objs.AddBytes(plumbing.CommitObject, s.CommitData)
		}
	}
	if err := st.Write(ctx, objs); err != nil {
		return err
	}
	tag := ImageTag(idx.Digest)
	cur, err := st.Ref(tag)
	if err != nil && !errors.Is(err, repo.ErrNotFound) {
		return err
	}
	return st.SetRef(tag, cur, TagCommit(segs))
}

// blobsPackLimit bounds a pack of n chunk blobs of stored bytes in all:
// git's overhead is an entry header a chunk and the pack's header, trailer
// and sideband framing.
func blobsPackLimit(stored int64, n int) int64 { return stored + int64(n)*1024 + 64<<10 }

// maxHeldTrees bounds the trees of older image tags a fetch names as
// haves; maxHaves all of them.
const (
	maxHeldTrees = 4096
	maxHaves     = 16384
)

// heldImageTrees returns the trees of the image tags st holds (every
// segment's): named as haves, they make a server leave out the chunks an
// update shares with older images.
func heldImageTrees(st *repo.Store) []plumbing.Hash {
	refs, err := st.Refs()
	if err != nil {
		return nil
	}
	var names []string
	for name := range refs {
		if strings.HasPrefix(name, ImageTagPrefix) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var trees []plumbing.Hash
	for _, name := range names {
		commits, _ := st.Log(refs[name], maxHeldTrees-len(trees))
		for _, c := range commits {
			trees = append(trees, c.Tree)
		}
		if len(trees) >= maxHeldTrees {
			break
		}
	}
	return trees
}

// IsNetworkError reports whether err is the network failing (a cut
// connection, a reset, a timeout) rather than what a server sent being
// refused: what is worth another try.
func IsNetworkError(err error) bool {
	if err == nil || errors.Is(err, repo.ErrBadPack) || errors.Is(err, repo.ErrPackTooLarge) || errors.Is(err, schema.ErrRefused) {
		return false
	}
	var ne net.Error
	return errors.Is(err, repo.ErrConnectionCut) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNREFUSED)
}

// LiveChunks reads chunks from a fetch in progress: [chunks.Rebuild] gets
// each chunk as soon as it has arrived (and rebuilds the image while the
// rest is still coming), chunks the fetch did not bring from the store once
// it is over. Ctx bounds the waiting.
type LiveChunks struct {
	Ctx  context.Context
	Pack *repo.LivePack
	// Held, if set, is a Store of the reader's own on the directory of the
	// store the fetch writes to (a Store serves one goroutine at a time):
	// a chunk it held before the fetch, such as every unchanged chunk of
	// an update, is read from it at once instead of once the fetch is over.
	Held *repo.Store
}

// Open returns the chunk's bytes, waiting for them to arrive.
func (l LiveChunks) Open(c schema.Chunk) (io.ReadCloser, error) {
	id := plumbing.NewHash(c.Blob)
	if l.Held != nil && l.Held.HasObject(id) {
		if rc, err := l.Held.OpenBlob(id, c.StoredSize()); err == nil {
			return chunks.Decode(rc, c)
		}
	}
	rc, err := l.Pack.OpenBlob(l.Ctx, id, c.StoredSize())
	if err != nil {
		return nil, err
	}
	return chunks.Decode(rc, c)
}

// ChunkError names a chunk that is missing or differs from the index.
type ChunkError struct {
	Image string
	Chunk schema.Chunk
	Err   error
}

func (e *ChunkError) Error() string {
	return fmt.Sprintf("image %s: chunk %s (blob %s): %v", e.Image, shortHex(e.Chunk.SHA256), shortHex(e.Chunk.Blob), e.Err)
}

func (e *ChunkError) Unwrap() error { return e.Err }

// Is makes a ChunkError a refusal (schema.ErrRefused): the image tag does
// not hold what the signed index pins.
func (e *ChunkError) Is(target error) bool { return target == schema.ErrRefused }

// CheckChunks streams every chunk of idx from st and checks its sha256 and
// length.
func CheckChunks(ctx context.Context, st *repo.Store, idx *schema.ImageIndex) error {
	buf := make([]byte, 256<<10)
	for _, c := range NewChunkSet(idx).List() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := checkChunk(st, c, buf); err != nil {
			return &ChunkError{Image: idx.Name, Chunk: c, Err: err}
		}
	}
	return nil
}

func checkChunk(st *repo.Store, c schema.Chunk, buf []byte) error {
	rc, err := st.OpenBlob(plumbing.NewHash(c.Blob), c.StoredSize())
	if err != nil {
		return err
	}
	if rc, err = chunks.Decode(rc, c); err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, io.LimitReader(rc, c.Size+1), buf)
	if err != nil {
		return err
	}
	if n != c.Size {
		return fmt.Errorf("%d bytes, the index says %d", n, c.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != c.SHA256 {
		return fmt.Errorf("sha256 %s, the index says %s", shortHex(got), shortHex(c.SHA256))
	}
	return nil
}
