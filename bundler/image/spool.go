package image

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"

	"github.com/pullship/pullship/bundler/shared/chunks"
	"github.com/pullship/pullship/schema"
)

// blobSpool encodes the chunks a scan finds into their blobs, on every core
// while the scan goes on, and keeps the blobs in an unlinked temporary file
// until the Reader is closed: [Reader.OpenChunk] serves them from there, so
// a release encodes each chunk once. Memory: a copy of each chunk being
// encoded, at most GOMAXPROCS+1 of them.
type blobSpool struct {
	f    *os.File
	sem  chan struct{}
	mu   sync.Mutex
	off  int64
	locs map[string]spoolLoc // blob id → its bytes in f
}

type spoolLoc struct{ off, size int64 }

// spooledBlob is a chunk's blob being encoded; its fields are set when done
// is closed.
type spooledBlob struct {
	done chan struct{}
	id   string
	size int64
	err  error
}

func newBlobSpool() (*blobSpool, error) {
	f, err := os.CreateTemp("", "pullship-blobs-*")
	if err != nil {
		return nil, fmt.Errorf("chunk blob spool: %w", err)
	}
	os.Remove(f.Name()) // gone with the last descriptor, whatever happens
	return &blobSpool{f: f, sem: make(chan struct{}, runtime.GOMAXPROCS(0)), locs: map[string]spoolLoc{}}, nil
}

// add encodes data (copied: the caller may reuse it on return) into its blob
// in the background.
func (b *blobSpool) add(data []byte) *spooledBlob {
	sb := &spooledBlob{done: make(chan struct{})}
	b.sem <- struct{}{}
	in, out := spoolBufs.Get().(*[]byte), spoolBufs.Get().(*[]byte)
	data = append((*in)[:0], data...)
	go func() {
		defer close(sb.done)
		defer func() {
			*in, *out = data[:0], (*out)[:0]
			spoolBufs.Put(in)
			spoolBufs.Put(out)
			<-b.sem
		}()
		enc := chunks.Encode((*out)[:0], data)
		*out = enc
		h := sha1.New()
		fmt.Fprintf(h, "blob %d\x00", len(enc))
		h.Write(enc)
		sb.id, sb.size = hex.EncodeToString(h.Sum(nil)), int64(len(enc))
		b.mu.Lock()
		if _, ok := b.locs[sb.id]; ok {
			b.mu.Unlock()
			return
		}
		off := b.off
		b.off += sb.size
		b.locs[sb.id] = spoolLoc{off, sb.size}
		b.mu.Unlock()
		if _, err := b.f.WriteAt(enc, off); err != nil {
			sb.err = fmt.Errorf("chunk blob spool: %w", err)
		}
	}()
	return sb
}

// knownBlob is the blob of a chunk an earlier index lists.
func knownBlob(c schema.Chunk) *spooledBlob {
	sb := &spooledBlob{done: make(chan struct{}), id: c.Blob, size: c.BlobSize}
	close(sb.done)
	return sb
}

// spoolBufs holds the chunk copies and blobs of blobSpool.add.
var spoolBufs = sync.Pool{New: func() any { return new([]byte) }}

// open returns the content of blob id, if the spool has it.
func (b *blobSpool) open(id string) (io.ReadCloser, bool) {
	b.mu.Lock()
	loc, ok := b.locs[id]
	b.mu.Unlock()
	if !ok {
		return nil, false
	}
	return io.NopCloser(io.NewSectionReader(b.f, loc.off, loc.size)), true
}

func (b *blobSpool) close() { b.f.Close() }
