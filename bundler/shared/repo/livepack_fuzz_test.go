package repo

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
)

// FuzzLivePack receives a hostile pack with a LivePack attached while a
// reader waits for a blob of the fuzzer's choosing, as the agent's image
// load does: the reader gets that blob's exact bytes or an error, never
// other bytes, nothing hangs past the fetch's end, and the whole costs
// less than the 32 MiB allocation budget (a 1 MiB pack limit, the live
// cache's buffers rounded up to MiB).
func FuzzLivePack(f *testing.F) {
	blob := []byte("hello pullship\n")
	f.Add(rawPack(rawEntry{3, int64(len(blob)), blob}), blob)
	f.Add(rawPack(rawEntry{3, int64(len(blob)), blob}, rawEntry{1, 3, []byte("abc")}), []byte("abc"))
	pb := newPackBuilder()
	b := pb.object(plumbing.BlobObject, blob)
	pb.ofsDelta(b, delta(int64(len(blob)), 8, copyOp(0, 5), insertOp("pul")))
	f.Add(pb.bytes(), []byte("hellopul"))
	f.Fuzz(func(t *testing.T, data, want []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		st, err := Init(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		live := NewLivePack(st)
		defer live.Close()
		fetched := make(chan error, 1)
		go func() {
			err := st.receivePack(bytes.NewReader(data), testLimits(1<<20), live)
			live.Finish(err)
			fetched <- err
		}()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		id := HashObject(plumbing.BlobObject, want)
		rc, err := live.OpenBlob(ctx, id, int64(len(want)))
		if err == nil {
			got, rerr := io.ReadAll(io.LimitReader(rc, int64(len(want))+1))
			rc.Close()
			if rerr == nil && !bytes.Equal(got, want) {
				t.Fatalf("blob %s read as %q, want %q", id, got, want)
			}
		}
		if ctx.Err() != nil {
			t.Fatal("the reader waited past the fetch's end")
		}
		ferr := <-fetched
		live.StopReading()
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > 32<<20 {
			t.Fatalf("receiving %d bytes live allocated %d MiB (fetch: %v)", len(data), got>>20, ferr)
		}
	})
}
