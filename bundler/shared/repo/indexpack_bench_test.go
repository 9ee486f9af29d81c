package repo

import (
	"bufio"
	"bytes"
	"io"
	"math/rand"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
)

// BenchmarkIndexPack measures the single-pass indexer (what the agent runs
// on a fetched pack) on 64 MiB of 1 MiB blobs that pullship's pack writer
// compresses about 2:1: random digits (literals and short matches; BestSpeed
// stores 16 random letters almost as they are), and benchChunks' runs of
// random bytes and text (stored blocks and long matches).
func BenchmarkIndexPack(b *testing.B) {
	b.Run("digits", func(b *testing.B) {
		rng := rand.New(rand.NewSource(1))
		chunks := make([][]byte, 64)
		for i := range chunks {
			c := make([]byte, 1<<20)
			rng.Read(c)
			for j, x := range c {
				c[j] = '0' + x%10
			}
			chunks[i] = c
		}
		benchIndexPack(b, chunks)
	})
	b.Run("binary", func(b *testing.B) { benchIndexPack(b, benchChunks(64, 1<<20)) })
}

func benchIndexPack(b *testing.B, chunks [][]byte) {
	f := &fixture{stream: NewObjectStream(nil)}
	var inflated int64
	for _, c := range chunks {
		f.stream.AddBytes(plumbing.BlobObject, c)
		inflated += int64(len(c))
	}
	pack := fixturePack(b, f)
	bw := bufio.NewWriter(io.Discard)
	b.SetBytes(inflated)
	b.ReportAllocs()
	for b.Loop() {
		bw.Reset(io.Discard)
		if _, _, err := indexPack(bytes.NewReader(pack), bw, testLimits(1<<40), nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(pack))/float64(inflated), "pack/input")
}
