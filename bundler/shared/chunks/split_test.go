package chunks

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/pullship/pullship/schema"
)

// oneFileTar is a layer tar of one file; it returns the tar and the
// file's offset in it.
func oneFileTar(t testing.TB, content []byte) ([]byte, int) {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: "etc/app.conf", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(content)
	tw.Close()
	return b.Bytes(), 512
}

// splitIndex is an index of one split layer of size bytes and sha256 sum
// whose header stream is headers (cut in pieces of at most piece bytes)
// and whose contents are content; it returns the chunk blobs by sha256.
func splitIndex(t testing.TB, headers, content []byte, size int64, sum string, piece int) (*schema.ImageIndex, blobChunks) {
	t.Helper()
	e := schema.ImageEntry{Path: "layer.tar", Type: schema.EntryFile, Mode: 0o644, Size: size, SHA256: sum}
	blobs := blobChunks{}
	add := func(p []byte) schema.Chunk {
		s := sha256.Sum256(p)
		z := Encode(nil, p)
		c := schema.Chunk{SHA256: hex.EncodeToString(s[:]), Size: int64(len(p)), Blob: strings.Repeat("0", 40), BlobSize: int64(len(z))}
		blobs[c.SHA256] = z
		return c
	}
	for len(headers) > 0 {
		n := min(piece, len(headers))
		e.Headers = append(e.Headers, add(headers[:n]))
		headers = headers[n:]
	}
	for len(content) > 0 {
		n := min(piece, len(content))
		e.Chunks = append(e.Chunks, add(content[:n]))
		content = content[n:]
	}
	idx := &schema.ImageIndex{Name: "z", Digest: "sha256:" + strings.Repeat("ab", 32), Format: schema.ImageFormat,
		Version: schema.ImageIndexVersion, ChunkEncoding: schema.ChunkZstd, Entries: []schema.ImageEntry{e}}
	return idx, blobs
}

// TestSplitRebuild: a layer's header stream and contents rebuild it byte
// for byte, whatever the chunk boundaries; every way a header stream can
// disagree with its entry is refused before a byte past the entry's size
// is written.
func TestSplitRebuild(t *testing.T) {
	content := bytes.Repeat([]byte("listener.tcp.default = 0.0.0.0:1883\n"), 100)
	layer, off := oneFileTar(t, content)
	sum := sha256.Sum256(layer)
	sumHex := hex.EncodeToString(sum[:])
	good := AppendRecord(nil, layer[:off], int64(len(content)))
	good = AppendRecord(good, layer[off+len(content):], 0)
	for _, piece := range []int{1, 7, 512, 1 << 20} {
		idx, blobs := splitIndex(t, good, content, int64(len(layer)), sumHex, piece)
		if err := idx.Validate(); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := Rebuild(context.Background(), idx, blobs, &out, nil); err != nil {
			t.Fatalf("pieces of %d: %v", piece, err)
		}
		if got := tarFile(t, out.Bytes(), "layer.tar"); !bytes.Equal(got, layer) {
			t.Fatalf("pieces of %d: rebuilt layer differs", piece)
		}
	}

	other := sha256.Sum256([]byte("other"))
	cases := map[string]struct {
		headers, content []byte
		sum              string
		want             string
	}{
		"cut inside a record":  {good[:len(good)-1], content, sumHex, "ends inside a record"},
		"cut inside raw bytes": {good[:100], content, sumHex, "ends inside a record"},
		"contents beyond":      {AppendRecord(AppendRecord(nil, layer[:off], int64(len(content))+1), layer[off+len(content):], 0), content, sumHex, "left"},
		"contents left over":   {AppendRecord(AppendRecord(nil, layer[:off], int64(len(content))-1), layer[off+len(content)-1:], 0), content, sumHex, "left over"},
		"longer than the size": {AppendRecord(good, make([]byte, 512), 0), content, sumHex, "beyond the layer's"},
		"shorter than the size": {AppendRecord(AppendRecord(nil, layer[:off], int64(len(content))), layer[off+len(content)+1:], 0),
			content, sumHex, "bytes, the index says"},
		"huge length":     {append(AppendRecord(nil, nil, 0), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), content, sumHex, "beyond the layer's"},
		"varint overflow": {bytes.Repeat([]byte{0xff}, 11), content, sumHex, "overflow"},
		"other sha256":    {good, content, hex.EncodeToString(other[:]), "sha256 of the layer differs"},
	}
	for name, tc := range cases {
		size := int64(len(layer))
		// Some of these an index's validation refuses already; assemble
		// refuses them all on its own.
		idx, blobs := splitIndex(t, tc.headers, tc.content, size, tc.sum, 1<<20)
		var out countWriter
		err := assembleEntry(&idx.Entries[0], blobs, &out)
		if !errors.Is(err, ErrHeaders) || !errors.Is(err, schema.ErrRefused) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a refused header stream saying %q", name, err, tc.want)
		}
		if out.n > size {
			t.Errorf("%s: %d bytes written for a layer of %d", name, out.n, size)
		}
	}
	// A header chunk that does not hold what the index says is a chunk
	// error, as for content.
	idx, blobs := splitIndex(t, good, content, int64(len(layer)), sumHex, 1<<20)
	blobs[idx.Entries[0].Headers[0].SHA256] = Encode(nil, append([]byte{}, good[:len(good)-1]...))
	var ce *Error
	if err := Rebuild(context.Background(), idx, blobs, io.Discard, nil); !errors.As(err, &ce) || !errors.Is(err, ErrShort) {
		t.Fatalf("short header chunk: %v", err)
	}
}

// heapBudget bounds what assembling one split layer may allocate, whatever
// its header stream says: the two chunk buffers (at most the 1 MiB a
// reader starts with, for these small chunks) and small change.
const heapBudget = 4 << 20

// FuzzSplitHeaders assembles a split layer from a header stream and
// contents an attacker chose, declared with any size: it never panics,
// never writes more than the declared size, only ever succeeds with the
// declared sha256, and allocates within the heap budget however large a
// length the stream or the entry claims.
func FuzzSplitHeaders(f *testing.F) {
	content := []byte("greeting = hello\n")
	layer, off := oneFileTar(f, content)
	good := AppendRecord(AppendRecord(nil, layer[:off], int64(len(content))), layer[off+len(content):], 0)
	f.Add(good, content, int64(len(layer)), uint16(512))
	f.Add(good[:len(good)/2], content, int64(len(layer)), uint16(3))
	f.Add(bytes.Repeat([]byte{0x80}, 64), []byte{}, int64(1)<<40, uint16(1))
	f.Add(AppendRecord(nil, nil, 1<<39), content, int64(1)<<40, uint16(7))
	f.Fuzz(func(t *testing.T, headers, content []byte, size int64, piece uint16) {
		if len(headers) == 0 || size < 0 || size > schema.MaxImageSize || piece == 0 {
			return
		}
		sum := sha256.Sum256(headers)
		idx, blobs := splitIndex(t, headers, content, size, hex.EncodeToString(sum[:]), int(piece))
		e := &idx.Entries[0]
		var out countWriter
		var err error
		got := allocated(func() { err = assembleEntry(e, blobs, &out) })
		if out.n > size {
			t.Fatalf("wrote %d bytes of a layer of %d", out.n, size)
		}
		if err == nil && out.n != size {
			t.Fatalf("assembled %d bytes of %d without an error", out.n, size)
		}
		if err != nil && !errors.Is(err, schema.ErrRefused) {
			t.Fatalf("error %v is not a refusal", err)
		}
		if got > heapBudget {
			t.Fatalf("assembling allocated %d bytes, budget %d", got, heapBudget)
		}
	})
}

// assembleEntry runs assemble on e as Rebuild does, without validating
// the index first.
func assembleEntry(e *schema.ImageEntry, src Source, w io.Writer) error {
	c := &chunkReader{ctx: context.Background(), src: src, h: sha256.New(), path: e.Path, list: e.Chunks}
	h := &chunkReader{ctx: context.Background(), src: src, h: c.h, path: e.Path, list: e.Headers}
	return assemble(w, e, h, c, func(int64) {})
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// allocated runs fn and returns the bytes it allocated.
func allocated(fn func()) uint64 {
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	fn()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}
