package image

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/pullship/pullship/schema"
)

// Chunk blobs hold each chunk as one zstd frame (docs/format.md, "Chunk
// storage"): zstd decodes about three times faster than the zlib git wraps
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
		zstd.WithWindowSize(schema.MaxImageChunk),
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

// encodedChunk is the content of a chunk's blob read from its source bytes.
func encodedChunk(data []byte) io.ReadCloser {
	return io.NopCloser(bytes.NewReader(EncodeChunk(make([]byte, 0, len(data)/2), data)))
}
