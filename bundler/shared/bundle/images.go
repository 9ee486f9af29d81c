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
// The image tag is a chain of segments ([Segments]) whose trees FetchImage
// computes from the index: it asks for each segment it lacks in a request
// of its own (by tree id, protocol v2), so a segment that arrived is kept
// whatever happens next. After a cut it asks again, from the first
// segment still missing, as long as the last try brought at least one
// segment; a later call (the next poll, the next remote) starts there
// too. Then one small fetch brings the tag's commits, by id as well: what
// the tag says on the server does not matter while the server holds the
// objects the signed index makes. A tag of the
// single-commit format, a remote that serves only protocol v0 and an
// ssh:// remote get the tag in one request, as before segments existed
// (the segments already held named as haves).
func FetchImage(ctx context.Context, r *repo.Remote, st *repo.Store, idx *schema.ImageIndex, live *repo.LivePack) error {
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
	older := heldImageTrees(st)
	tag := ImageTag(idx.Digest)
	err = fetchSegments(ctx, r, st, idx, segs, older, live)
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
	haves = append(haves, older...)
	for _, s := range segs {
		if st.HasObject(s.Tree) {
			haves = append(haves, s.Tree)
		}
	}
	limit := ImagePackLimit(idx)
	if _, err := r.Fetch(ctx, st, repo.FetchRequest{Refs: []string{tag + ":" + tag}, Haves: haves, MaxPackBytes: limit,
		MaxInflatedBytes: limit, Live: live, Precompressed: EncodedChunks(idx)}); err != nil {
		return fmt.Errorf("fetch image %s: %w", idx.Name, err)
	}
	return nil
}

// maxCutsInARow is how many tries in a row may end in a cut without
// bringing a segment before fetchSegments gives up on the remote.
const maxCutsInARow = 3

// fetchSegments brings every segment of segs that st lacks, one request
// each, in order, then the chain's commits (by id too: the tag's value on
// the server is not needed) and sets the image tag in st.
func fetchSegments(ctx context.Context, r *repo.Remote, st *repo.Store, idx *schema.ImageIndex, segs []Segment, older []plumbing.Hash, live *repo.LivePack) error {
	f := r.Objects(ctx)
	defer f.Close()
	encoded := EncodedChunks(idx)
	cuts := 0
	var trees []plumbing.Hash
	var chainLimit int64 = 64 << 10
	for _, s := range segs {
		trees = append(trees, s.Tree)
		chainLimit += int64(len(s.CommitData)) + 1024
	}
	for k := 0; k <= len(segs); {
		req := repo.ObjectsRequest{Wants: []plumbing.Hash{TagCommit(segs)}, Haves: trees, MaxPackBytes: chainLimit,
			MaxInflatedBytes: chainLimit, MaxObjects: len(segs) + 16}
		if k < len(segs) {
			s := segs[k]
			if st.HasObject(s.Tree) {
				k++
				continue
			}
			limit := SegmentPackLimit(s)
			req = repo.ObjectsRequest{Wants: []plumbing.Hash{s.Tree}, Haves: older, MaxPackBytes: limit,
				MaxInflatedBytes: limit, MaxObjects: len(s.Chunks) + 16, Live: live, Precompressed: encoded}
		}
		err := f.Fetch(ctx, st, req)
		if err == nil {
			cuts = 0
			k++
			continue
		}
		if cuts++; !IsNetworkError(err) || ctx.Err() != nil || cuts >= maxCutsInARow {
			if k < len(segs) {
				return fmt.Errorf("segment %d of %d: %w", k+1, len(segs), err)
			}
			return fmt.Errorf("image tag commits: %w", err)
		}
	}
	tag := ImageTag(idx.Digest)
	cur, err := st.Ref(tag)
	if err != nil && !errors.Is(err, repo.ErrNotFound) {
		return err
	}
	return st.SetRef(tag, cur, TagCommit(segs))
}

// maxHeldTrees bounds the trees of older image tags a fetch names as
// haves.
const maxHeldTrees = 4096

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
