package repo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
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

// chunkStore fills a store at dir as image updates leave it: an image of
// n chunk blobs of size random bytes under a tree and a commit, updates
// times updated with a quarter of its chunks replaced, new chunks
// arriving 8 to a pack (stored as they are, as zstd chunks are), the
// image tag moved and the packs nothing needs pruned after each.
func chunkStore(tb testing.TB, dir string, n, size, updates int) *Store {
	tb.Helper()
	ctx := context.Background()
	st, err := Init(dir)
	must(tb, err)
	rng := rand.New(rand.NewSource(3))
	chunks := make([][]byte, n)
	tag := plumbing.ZeroHash
	for u := range updates + 1 {
		var fresh []int
		for i := range chunks {
			if chunks[i] == nil || rng.Intn(4) == 0 {
				chunks[i] = make([]byte, size)
				rng.Read(chunks[i])
				fresh = append(fresh, i)
			}
		}
		for len(fresh) > 0 {
			k := min(8, len(fresh))
			s := NewObjectStream(nil)
			ids := map[plumbing.Hash]bool{}
			for _, i := range fresh[:k] {
				ids[s.AddBytes(plumbing.BlobObject, chunks[i])] = true
			}
			s.MarkPrecompressed(ids)
			must(tb, st.Write(ctx, s))
			fresh = fresh[k:]
		}
		var entries []TreeEntry
		for i, c := range chunks {
			entries = append(entries, TreeEntry{Name: fmt.Sprintf("%04d", i), Mode: filemode.Regular, ID: HashObject(plumbing.BlobObject, c)})
		}
		s := NewObjectStream(nil)
		data, tree, err := EncodeTree(entries)
		must(tb, err)
		s.AddBytes(plumbing.TreeObject, data)
		data, commit, err := EncodeCommit(Commit{Tree: tree, Author: sig, Committer: sig, Message: fmt.Sprintf("image %d\n", u)})
		must(tb, err)
		s.AddBytes(plumbing.CommitObject, data)
		must(tb, st.Write(ctx, s))
		must(tb, st.SetRef("refs/tags/pullship/images/a", tag, commit))
		tag = commit
		_, err = st.Prune([]plumbing.Hash{commit})
		must(tb, err)
	}
	return st
}

// BenchmarkRepack measures a collection that repacks: a store after three
// updates of an image of 512 chunks of 512 KiB (256 MiB), each replacing
// a quarter of them, goes from about 465 MB in 112 packs to the
// image's 256 MiB in one. The bytes per second are the live bytes.
func BenchmarkRepack(b *testing.B) {
	var before, after int64
	packs := 0
	for range b.N {
		b.StopTimer()
		st := chunkStore(b, b.TempDir(), 512, 512<<10, 3)
		var err error
		if before, err = st.Usage(); err != nil {
			b.Fatal(err)
		}
		refs, err := st.Refs()
		must(b, err)
		b.StartTimer()
		stats, err := st.Collect(context.Background(), []plumbing.Hash{refs["refs/tags/pullship/images/a"]})
		must(b, err)
		b.StopTimer()
		if !stats.Repacked {
			b.Fatalf("not repacked: %+v", stats)
		}
		b.SetBytes(stats.LiveBytes)
		packs = stats.Packs
		if after, err = st.Usage(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(before)/1e6, "MB-before")
	b.ReportMetric(float64(after)/1e6, "MB-after")
	b.ReportMetric(float64(packs), "packs-before")
}
