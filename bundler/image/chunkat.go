package image

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
)

// chunkLoc is where a chunk's bytes lie in the source.
type chunkLoc struct {
	entry int
	off   int64
	size  int64
	// encoded: the blob holds the chunk zstd-encoded; OpenChunk encodes
	// it (in memory: a chunk is at most 8 MiB).
	encoded bool
}

// OpenChunk returns a reader of the content of the chunk blob whose git id
// is blob: the chunk read from the source in place (nothing is buffered), or
// its zstd frame (from the blobs Scan encoded, or encoded in memory). It may
// be called concurrently and in any order, after a successful Scan. The
// caller checks the content (the pack writer verifies every object's id as
// it writes).
func (r *Reader) OpenChunk(blob string) (io.ReadCloser, error) {
	if r.blobs != nil {
		if rc, ok := r.blobs.open(blob); ok {
			return rc, nil
		}
	}
	r.locOnce.Do(r.indexChunks)
	loc, ok := r.locs[blob]
	if !ok {
		return nil, fmt.Errorf("image %s: no chunk %s", r.src, blob)
	}
	ra, err := r.fs.entries[loc.entry].open()
	if err != nil {
		return nil, fmt.Errorf("image %s: %s: %w", r.src, r.idx.Entries[loc.entry].Path, err)
	}
	if !loc.encoded {
		return struct {
			io.Reader
			io.Closer
		}{io.NewSectionReader(ra, loc.off, loc.size), ra}, nil
	}
	defer ra.Close()
	data := make([]byte, loc.size)
	if _, err := ra.ReadAt(data, loc.off); err != nil {
		return nil, fmt.Errorf("image %s: %s: %w", r.src, r.idx.Entries[loc.entry].Path, err)
	}
	return encodedChunk(data), nil
}

func (r *Reader) indexChunks() {
	r.locs = map[string]chunkLoc{}
	if r.idx == nil {
		return
	}
	for i, e := range r.idx.Entries {
		var off int64
		for _, c := range e.Chunks {
			if _, ok := r.locs[c.Blob]; !ok {
				r.locs[c.Blob] = chunkLoc{entry: i, off: off, size: c.Size, encoded: c.Encoded()}
			}
			off += c.Size
		}
	}
}

// chunkIndex is embedded in Reader for OpenChunk.
type chunkIndex struct {
	locOnce sync.Once
	locs    map[string]chunkLoc
}

// Digest returns the image ID (the sha256 of the config JSON) without
// scanning the layers, so that a release of an image the repository already
// holds can skip the scan. Scan checks it against everything else.
func (r *Reader) Digest() (string, error) {
	e := r.fs.find(r.layout.config)
	if e == nil {
		return "", fmt.Errorf("image %s: config %s missing", r.src, r.layout.config)
	}
	if e.Size > maxConfig {
		return "", fmt.Errorf("image %s: config %s is %d bytes", r.src, r.layout.config, e.Size)
	}
	ra, err := e.open()
	if err != nil {
		return "", fmt.Errorf("image %s: %w", r.src, err)
	}
	defer ra.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(ra, 0, e.Size)); err != nil {
		return "", fmt.Errorf("image %s: %w", r.src, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// maxConfig bounds an image config JSON.
const maxConfig = 16 << 20
