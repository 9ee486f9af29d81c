package image

import (
	"fmt"
	"io"
	"sync"
)

// chunkLoc is where a chunk's bytes lie in the source.
type chunkLoc struct {
	entry int
	off   int64
	size  int64
}

// OpenChunk returns a reader of the chunk whose git blob id is blob,
// reading the source in place (nothing is buffered). It may be called
// concurrently and in any order, after a successful Scan. The caller checks
// the content (the pack writer verifies every object's id as it writes).
func (r *Reader) OpenChunk(blob string) (io.ReadCloser, error) {
	r.locOnce.Do(r.indexChunks)
	loc, ok := r.locs[blob]
	if !ok {
		return nil, fmt.Errorf("image %s: no chunk %s", r.src, blob)
	}
	ra, err := r.fs.entries[loc.entry].open()
	if err != nil {
		return nil, fmt.Errorf("image %s: %s: %w", r.src, r.idx.Entries[loc.entry].Path, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(ra, loc.off, loc.size), ra}, nil
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
				r.locs[c.Blob] = chunkLoc{entry: i, off: off, size: c.Size}
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
