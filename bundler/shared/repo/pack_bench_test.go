package repo

import (
	"bytes"
	"context"
	"io"
	"math/rand"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
)

// benchChunks returns n chunks of size bytes shaped like binaries: runs of
// random bytes (incompressible) between runs of repeated text, so that the
// compressor sees both kinds of data.
func benchChunks(n, size int) [][]byte {
	rng := rand.New(rand.NewSource(1))
	text := []byte("listener.tcp.default = 0.0.0.0:1883 allow_anonymous = off ")
	out := make([][]byte, n)
	for i := range out {
		var b bytes.Buffer
		for b.Len() < size {
			run := make([]byte, 4096)
			rng.Read(run)
			b.Write(run)
			for range 64 {
				b.Write(text)
			}
		}
		out[i] = b.Bytes()[:size]
	}
	return out
}

// BenchmarkWritePack measures the streaming pack writer on 1 MiB chunks
// (pullship's average chunk size), parallel compression included.
func BenchmarkWritePack(b *testing.B) {
	chunks := benchChunks(32, 1<<20)
	byID := map[plumbing.Hash][]byte{}
	var total int64
	for _, c := range chunks {
		byID[HashObject(plumbing.BlobObject, c)] = c
		total += int64(len(c))
	}
	b.SetBytes(total)
	b.ReportAllocs()
	var packed int64
	for b.Loop() {
		st := NewObjectStream(func(o Object) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(byID[o.ID])), nil
		})
		for id, c := range byID {
			st.Add(Object{ID: id, Type: plumbing.BlobObject, Size: int64(len(c))})
		}
		cw := &benchCounter{}
		if _, _, err := WritePack(context.Background(), cw, st); err != nil {
			b.Fatal(err)
		}
		packed = cw.n
	}
	b.ReportMetric(float64(packed)/float64(total), "pack/input")
}

type benchCounter struct{ n int64 }

func (c *benchCounter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
