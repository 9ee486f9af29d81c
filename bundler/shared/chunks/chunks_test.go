package chunks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/schema"
)

// blobChunks serves chunk blobs by sha256 (what a repository holds), to be
// decoded as the agent does.
type blobChunks map[string][]byte

func (b blobChunks) Open(c schema.Chunk) (io.ReadCloser, error) {
	data, ok := b[c.SHA256]
	if !ok {
		return nil, errors.New("no such blob")
	}
	return Decode(io.NopCloser(bytes.NewReader(data)), c)
}

// zstdIndex is a one-file image index whose chunks are data's pieces,
// encoded; it returns the blobs by sha256.
func zstdIndex(t *testing.T, pieces ...[]byte) (*schema.ImageIndex, blobChunks) {
	t.Helper()
	idx := &schema.ImageIndex{Name: "z", Digest: "sha256:" + strings.Repeat("ab", 32), Format: schema.ImageFormat, ChunkEncoding: schema.ChunkZstd}
	e := schema.ImageEntry{Path: "layer.tar", Type: schema.EntryFile, Mode: 0o644}
	blobs := blobChunks{}
	for _, p := range pieces {
		sum := sha256.Sum256(p)
		z := Encode(nil, p)
		c := schema.Chunk{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(p)), Blob: strings.Repeat("0", 40), BlobSize: int64(len(z))}
		blobs[c.SHA256] = z
		e.Chunks = append(e.Chunks, c)
		e.Size += c.Size
	}
	idx.Entries = []schema.ImageEntry{e}
	if err := idx.Validate(); err != nil {
		t.Fatal(err)
	}
	return idx, blobs
}

// TestZstdChunks: encoded chunks rebuild to their bytes; the encoding is
// deterministic and compresses layer-like data; every way a blob can lie
// about its chunk stops the stream before the chunk's bytes pass.
func TestZstdChunks(t *testing.T) {
	random, _ := io.ReadAll(imagetest.Random(7, 3<<20))
	text := bytes.Repeat([]byte("listener.tcp.default = 0.0.0.0:1883\n"), 40000)
	idx, blobs := zstdIndex(t, random[:1<<20], text, random[1<<20:])
	var out bytes.Buffer
	if err := Rebuild(context.Background(), idx, blobs, &out, nil); err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	want := append(append(append([]byte{}, random[:1<<20]...), text...), random[1<<20:]...)
	if got := tarFile(t, out.Bytes(), "layer.tar"); !bytes.Equal(got, want) {
		t.Fatal("rebuilt file differs from the chunks")
	}
	if !bytes.Equal(Encode(nil, text), Encode(nil, text)) {
		t.Fatal("encoding is not deterministic")
	}
	if c := idx.Entries[0].Chunks[1]; c.BlobSize*10 > c.Size {
		t.Fatalf("text chunk of %d bytes encodes to %d", c.Size, c.BlobSize)
	}
	if c := idx.Entries[0].Chunks[0]; c.BlobSize > schema.MaxBlobSize(c.Size) {
		t.Fatalf("random chunk of %d bytes encodes to %d, beyond the format's bound", c.Size, c.BlobSize)
	}

	// A raw chunk passes through DecodeChunk as it is.
	rc, err := Decode(io.NopCloser(strings.NewReader("abc")), schema.Chunk{Size: 3})
	if b, _ := io.ReadAll(rc); err != nil || string(b) != "abc" {
		t.Fatalf("raw chunk: %q, %v", b, err)
	}

	c0 := idx.Entries[0].Chunks[0]
	frame := blobs[c0.SHA256]
	other := Encode(nil, text[:1000])
	for name, tc := range map[string]struct {
		blob []byte
		want error
	}{
		"not zstd":           {bytes.Repeat([]byte{0xaa}, 100), ErrEncoding},
		"empty":              {nil, ErrShort},
		"cut frame":          {frame[:len(frame)/2], ErrEncoding},
		"trailing garbage":   {append(append([]byte{}, frame...), 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0), ErrEncoding},
		"longer chunk":       {Encode(nil, append(append([]byte{}, random[:1<<20]...), 'x')), ErrLong},
		"shorter chunk":      {Encode(nil, random[:1<<20-1]), ErrShort},
		"two frames, short":  {append(Encode(nil, random[:1000]), other...), ErrShort},
		"same length, other": {Encode(nil, random[1:1<<20+1]), ErrDigest},
	} {
		bad := blobChunks{}
		for k, v := range blobs {
			bad[k] = v
		}
		bad[c0.SHA256] = tc.blob
		var out bytes.Buffer
		err := Rebuild(context.Background(), idx, bad, &out, nil)
		var ce *Error
		if !errors.As(err, &ce) || !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want a chunk error %v", name, err, tc.want)
		}
		if bytes.Contains(out.Bytes(), random[:4096]) {
			t.Errorf("%s: bytes of the bad chunk reached the stream", name)
		}
	}
}

// tarFile returns the content of the entry name of the tar stream data.
func tarFile(t *testing.T, data []byte, name string) []byte {
	t.Helper()
	b, err := imagetest.TarEntry(data, name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzDecodeChunk: whatever a blob holds, decoding yields at most the
// declared size plus one byte, or an error; it never panics.
func FuzzDecodeChunk(f *testing.F) {
	f.Add(Encode(nil, []byte("hello, pullship")), int64(15))
	f.Add(Encode(nil, bytes.Repeat([]byte("ab"), 5000)), int64(10000))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0x58, 0, 0, 0}, int64(1))
	f.Fuzz(func(t *testing.T, blob []byte, size int64) {
		if size < 1 || size > schema.MaxImageChunk {
			return
		}
		rc, err := Decode(io.NopCloser(bytes.NewReader(blob)), schema.Chunk{Size: size, BlobSize: int64(len(blob)) + 1})
		if err != nil {
			if !errors.Is(err, ErrEncoding) {
				t.Fatalf("error %v does not wrap ErrEncoding", err)
			}
			return
		}
		defer rc.Close()
		n, err := io.Copy(io.Discard, rc)
		if n > size+1 {
			t.Fatalf("decoded %d bytes of a chunk of %d", n, size)
		}
		if err != nil && !errors.Is(err, ErrEncoding) {
			t.Fatalf("error %v does not wrap ErrEncoding", err)
		}
	})
}

// TestRebuildSkipping: a file skip names gets no entry and none of its
// chunks is read (the source has none of them here); the others rebuild
// as ever.
func TestRebuildSkipping(t *testing.T) {
	held, _ := zstdIndex(t, []byte("held layer"))
	idx, blobs := zstdIndex(t, []byte("new layer"))
	h := held.Entries[0]
	h.Path = "held/layer.tar"
	idx.Entries = append([]schema.ImageEntry{h}, idx.Entries...)
	if err := idx.Validate(); err != nil {
		t.Fatal(err)
	}
	var asked []string
	var out bytes.Buffer
	err := RebuildSkipping(context.Background(), idx, blobs, &out, nil, func(path string) bool {
		asked = append(asked, path)
		return path == "held/layer.tar"
	})
	if err != nil {
		t.Fatalf("RebuildSkipping: %v", err)
	}
	if strings.Join(asked, " ") != "held/layer.tar layer.tar" {
		t.Fatalf("skip asked for %q, want each file once, in order", asked)
	}
	if got := tarFile(t, out.Bytes(), "layer.tar"); string(got) != "new layer" {
		t.Fatalf("rebuilt layer.tar: %q", got)
	}
	if _, err := imagetest.TarEntry(out.Bytes(), "held/layer.tar"); err == nil {
		t.Fatal("the skipped file has an entry")
	}
	if err := Rebuild(context.Background(), idx, blobs, io.Discard, nil); err == nil {
		t.Fatal("Rebuild without the held layer's chunks succeeded: the test proves nothing")
	}
}
