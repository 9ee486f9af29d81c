package chunks

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/pullship/pullship/schema"
)

// fuzzSource serves the fuzzer's bytes as the blobs of the index's chunks,
// decoded as the agent decodes them (Decode).
type fuzzSource map[string][]byte

func (s fuzzSource) Open(c schema.Chunk) (io.ReadCloser, error) {
	b, ok := s[c.SHA256]
	if !ok {
		return nil, errors.New("no such chunk")
	}
	return Decode(io.NopCloser(bytes.NewReader(b)), c)
}

// FuzzRebuild rebuilds an image from chunk blobs a server wrote, for an
// index it did not (the index is signed): the stream is the genuine one or
// the rebuild fails with a *Error, and what reached the writer before the
// failure is a prefix of the genuine stream (no unverified byte is
// written). Allocations stay under 8 MiB: the two 4 KiB chunks, and the
// history of the zstd decoder, which a frame's header sizes up to the
// decoders' window bound (1 MiB, the encoder's window; the decoder keeps
// twice that, 2.1 MB for each blob) however short the blob is. With an
// 8 MiB bound testdata/fuzz/FuzzRebuild/edd759ce6657e0d5 (47 bytes)
// allocated 8 MiB.
func FuzzRebuild(f *testing.F) {
	a := []byte(strings.Repeat("the first chunk of a layer\n", 150))
	b := []byte(strings.Repeat("and its second one, different\n", 120))
	chunk := func(data []byte, encoded bool) (schema.Chunk, []byte) {
		sum := sha256.Sum256(data)
		c := schema.Chunk{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data))}
		blob := data
		if encoded {
			blob = Encode(nil, data)
			c.BlobSize = int64(len(blob))
		}
		c.Blob = fmt.Sprintf("%x", sha1Blob(blob))
		return c, blob
	}
	index := func(encoded bool) (*schema.ImageIndex, fuzzSource) {
		ca, ba := chunk(a, encoded)
		cb, bb := chunk(b, encoded)
		idx := &schema.ImageIndex{Name: "app", Digest: "sha256:" + strings.Repeat("ab", 32), Format: schema.ImageFormat,
			Entries: []schema.ImageEntry{
				{Path: "layer", Type: schema.EntryDir, Mode: 0o755},
				{Path: "layer/layer.tar", Type: schema.EntryFile, Mode: 0o644, Size: int64(len(a) + len(b)), Chunks: []schema.Chunk{ca, cb}},
			}}
		if encoded {
			idx.ChunkEncoding = schema.ChunkZstd
		}
		return idx, fuzzSource{ca.SHA256: ba, cb.SHA256: bb}
	}
	genuine := map[bool][]byte{}
	for _, enc := range []bool{false, true} {
		idx, src := index(enc)
		var out bytes.Buffer
		if err := Rebuild(context.Background(), idx, src, &out, nil); err != nil {
			f.Fatal(err)
		}
		genuine[enc] = out.Bytes()
		f.Add(src[idx.Entries[1].Chunks[0].SHA256], src[idx.Entries[1].Chunks[1].SHA256], enc)
	}
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0x58, 0, 0, 0}, []byte("x"), true)
	f.Add(hostileFrame(20, 100), hostileFrame(20, 100), true)
	f.Fuzz(func(t *testing.T, blobA, blobB []byte, encoded bool) {
		idx, src := index(encoded)
		cs := idx.Entries[1].Chunks
		src[cs[0].SHA256], src[cs[1].SHA256] = blobA, blobB
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		var out bytes.Buffer
		err := Rebuild(context.Background(), idx, src, &out, nil)
		runtime.ReadMemStats(&after)
		want := genuine[encoded]
		if err == nil && !bytes.Equal(out.Bytes(), want) {
			t.Fatal("a rebuild from other blobs succeeded with another stream")
		}
		var ce *Error
		if err != nil && !errors.As(err, &ce) {
			t.Fatalf("error %v is no *Error", err)
		}
		if !bytes.HasPrefix(want, out.Bytes()) {
			t.Fatalf("%d bytes written before the failure (%v) are not the genuine stream's", out.Len(), err)
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 8<<20 {
			t.Fatalf("rebuilding from %d+%d bytes of blobs allocated %d MiB", len(blobA), len(blobB), got>>20)
		}
	})
}

// sha1Blob is the git id of a blob holding data.
func sha1Blob(data []byte) []byte {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(data))
	h.Write(data)
	return h.Sum(nil)
}
