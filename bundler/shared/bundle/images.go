package bundle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

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
// all already. The server may send at most the image's own size plus git's
// overhead: every read is bounded by what the signed index declares. With
// live set, each chunk is readable through it as soon as it arrives (see
// [LiveChunks]); the caller calls live.Finish with FetchImage's result.
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
	var haves []plumbing.Hash
	if refs, err := st.Refs(); err == nil {
		for name, id := range refs {
			if strings.HasPrefix(name, ImageTagPrefix) {
				haves = append(haves, id)
			}
		}
	}
	tag := ImageTag(idx.Digest)
	limit := ImagePackLimit(idx)
	if _, err := r.Fetch(ctx, st, repo.FetchRequest{Refs: []string{tag + ":" + tag}, Haves: haves, MaxPackBytes: limit,
		MaxInflatedBytes: limit, Live: live, Precompressed: EncodedChunks(idx)}); err != nil {
		return fmt.Errorf("fetch image %s: %w", idx.Name, err)
	}
	return nil
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
