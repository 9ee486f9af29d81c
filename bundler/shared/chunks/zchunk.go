package chunks

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/pullship/pullship/schema"
)

// Chunk blobs hold each chunk as one zstd frame (docs/format.md, "Chunk
// encoding"): zstd decodes about three times faster than the zlib git wraps
// every object in, and compresses layer data better. Git stores the frames
// without compressing them again (repo.Object.Precompressed).
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
		zstd.WithWindowSize(maxWindow),
		zstd.WithZeroFrames(true))
	decoders = sync.Pool{New: func() any {
		// The history a frame may ask for: a window up to the 1 MiB
		// pullship writes, or a single segment (whose window is its
		// content) up to the largest chunk, which the encoder before the
		// 1 MiB window wrote for every chunk. A frame asking for more is
		// refused before the history is allocated (an 8 MiB window cost
		// 8 MiB, whatever the chunk's size).
		d, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxWindow(maxWindow),
			zstd.WithDecoderMaxMemory(schema.MaxImageChunk))
		if err != nil {
			panic(err) // only bad options fail
		}
		return d
	}}
)

// maxWindow is the zstd window pullship writes, and the largest a
// decoder accepts (but for a single segment).
const maxWindow = 1 << 20

// Encode appends the zstd frame of the chunk data to dst: the content
// of its blob.
func Encode(dst, data []byte) []byte { return encoder.EncodeAll(data, dst) }

// ErrEncoding wraps a chunk blob that is not a zstd frame of its chunk.
var ErrEncoding = schema.Refused(errors.New("bad zstd chunk blob"))

// Decode returns a reader of the chunk c whose blob content rc
// streams: rc itself for a chunk stored as it is, a zstd decoder of it for an
// encoded one. The decoder yields at most c.Size+1 bytes, enough for a reader
// to see a chunk longer than declared; the chunk's length and sha256 are the
// reader's to check ([Rebuild] does). Closing it closes rc.
func Decode(rc io.ReadCloser, c schema.Chunk) (io.ReadCloser, error) {
	if !c.Encoded() {
		return rc, nil
	}
	d := decoders.Get().(*zstd.Decoder)
	if err := d.Reset(rc); err != nil {
		decoders.Put(d)
		rc.Close()
		return nil, fmt.Errorf("%w: %w", ErrEncoding, err)
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
		err = fmt.Errorf("%w: frame cut short", ErrEncoding) // not an EOF: the blob is bad
	default:
		err = fmt.Errorf("%w: %w", ErrEncoding, err)
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
