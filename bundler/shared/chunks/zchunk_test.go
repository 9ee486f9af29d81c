package chunks

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/schema"
)

// hostileFrame is a zstd frame header declaring contentSize bytes, with
// a window of 1<<windowLog bytes (windowLog 0: a single segment, whose
// window is its content size), then one raw block of 100 bytes.
func hostileFrame(windowLog uint, contentSize uint32) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd}
	if windowLog == 0 {
		b = append(b, 0x80|0x20) // 4-byte content size, single segment
	} else {
		b = append(b, 0x80, byte(windowLog-10)<<3)
	}
	b = binary.LittleEndian.AppendUint32(b, contentSize)
	const blk = 100<<3 | 1 // the last block, raw, of 100 bytes
	b = append(b, blk&0xff, blk>>8, 0)
	return append(b, bytes.Repeat([]byte{'x'}, 100)...)
}

// decodeAlloc decodes blob as a chunk of size bytes and returns what came
// out, the bytes the decoding allocated and the error.
func decodeAlloc(blob []byte, size int64) ([]byte, uint64, error) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rc, err := Decode(io.NopCloser(bytes.NewReader(blob)), schema.Chunk{Size: size, BlobSize: int64(len(blob))})
	var out []byte
	if err == nil {
		out, err = io.ReadAll(rc)
		rc.Close()
	}
	runtime.ReadMemStats(&after)
	return out, after.TotalAlloc - before.TotalAlloc, err
}

// TestZstdDecoderWindow: the decoder takes every frame pullship's encoder
// writes (a 1 MiB window; a chunk up to 1 MiB a single segment sized by
// its content), and refuses a frame whose header asks for more history,
// before allocating it: a larger window (8 MiB asked cost 8 MiB of
// history before, whatever the chunk's size), or a single segment beyond
// 1 MiB (an encoder with an 8 MiB window makes those of chunks up to
// 8 MiB).
func TestZstdDecoderWindow(t *testing.T) {
	random, _ := io.ReadAll(imagetest.Random(11, schema.MaxImageChunk))
	Decode(io.NopCloser(bytes.NewReader(Encode(nil, random[:1000]))), schema.Chunk{Size: 1000, BlobSize: 1})
	for _, size := range []int{0, 500, 1 << 20, 1<<20 + 1, 3 << 20, schema.MaxImageChunk} {
		out, alloc, err := decodeAlloc(Encode(nil, random[:size]), int64(size))
		if err != nil || !bytes.Equal(out, random[:size]) {
			t.Errorf("chunk of %d bytes: %v", size, err)
		}
		t.Logf("chunk of %d bytes: %d bytes allocated (the chunk read whole included)", size, alloc)
	}
	wide, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(schema.MaxImageChunk))
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		blob []byte
		size int64
	}{
		"8 MiB window":             {hostileFrame(23, 100), 100},
		"2 MiB window":             {hostileFrame(21, 100), 100},
		"single segment of 12 MiB": {hostileFrame(0, 12<<20), 100},
		"single segment of 2 MiB":  {wide.EncodeAll(random[:2<<20], nil), 2 << 20},
	} {
		_, alloc, err := decodeAlloc(c.blob, c.size)
		t.Logf("%s: %v; %d bytes allocated", name, err, alloc)
		if !errors.Is(err, ErrEncoding) {
			t.Errorf("%s: %v, want ErrEncoding", name, err)
		}
		if alloc > 1<<20 {
			t.Errorf("%s: decoding allocated %d bytes", name, alloc)
		}
	}
}
