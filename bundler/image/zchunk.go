package image

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/pullship/pullship/schema"
)

// Chunk blobs hold each chunk as one zstd frame (docs/format.md, "Chunk
// encoding"): zstd decodes about three times faster than the zlib git wraps
// every object in, and compresses layer data better. Git stores the frames
// without compressing them again ([repo.Object.Precompressed]).
//
// The encoder's settings are fixed: the same chunk encodes to the same blob
// with one version of the encoder. A blob's id is recorded in the signed
// index, so readers never depend on that.
var (
	encoder, _ = zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderCRC(false), // the chunk's sha256 is checked
		zstd.WithEncoderConcurrency(1),
		// A 1 MiB window: a chunk of up to 8 MiB decodes with 1 MiB of
		// history (the agent's memory), for little loss on layer data.
		zstd.WithWindowSize(1<<20),
		zstd.WithZeroFrames(true))
	decoders = sync.Pool{New: func() any {
		d, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxWindow(schema.MaxImageChunk),
			zstd.WithDecoderMaxMemory(2*schema.MaxImageChunk))
		if err != nil {
			panic(err) // only bad options fail
		}
		return d
	}}
)

// EncodeChunk appends the zstd frame of the chunk data to dst: the content
// of its blob.
func EncodeChunk(dst, data []byte) []byte { return encoder.EncodeAll(data, dst) }

// ErrChunkEncoding wraps a chunk blob that is not a zstd frame of its chunk.
var ErrChunkEncoding = errors.New("bad zstd chunk blob")

// DecodeChunk returns a reader of the chunk c whose blob content rc
// streams: rc itself for a chunk stored as it is, a zstd decoder of it for an
// encoded one. The decoder yields at most c.Size+1 bytes, enough for a reader
// to see a chunk longer than declared; the chunk's length and sha256 are the
// reader's to check ([Rebuild] does). Closing it closes rc.
func DecodeChunk(rc io.ReadCloser, c schema.Chunk) (io.ReadCloser, error) {
	if !c.Encoded() {
		return rc, nil
	}
	d := decoders.Get().(*zstd.Decoder)
	if err := d.Reset(rc); err != nil {
		decoders.Put(d)
		rc.Close()
		return nil, fmt.Errorf("%w: %w", ErrChunkEncoding, err)
	}
	return &chunkDecoder{d: d, r: io.LimitReader(d, c.Size+1), rc: rc}, nil
}

type chunkDecoder struct {
	d  *zstd.Decoder
	r  io.Reader
	rc io.ReadCloser
}

func (z *chunkDecoder) Read(p []byte) (int, error) {
	if z.d == nil {
		return 0, errors.New("read of a closed chunk")
	}
	n, err := z.r.Read(p)
	switch {
	case err == nil || err == io.EOF:
	case errors.Is(err, io.ErrUnexpectedEOF):
		err = fmt.Errorf("%w: frame cut short", ErrChunkEncoding) // not an EOF: the blob is bad
	default:
		err = fmt.Errorf("%w: %w", ErrChunkEncoding, err)
	}
	return n, err
}

func (z *chunkDecoder) Close() error {
	if z.d != nil {
		z.d.Reset(nil)
		decoders.Put(z.d)
		z.d = nil
	}
	return z.rc.Close()
}

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
		enc := EncodeChunk((*out)[:0], data)
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
